import random

import pytest
import torch

from charrnn import checkpoint
from charrnn.sample import Sampler, SamplingOptions, choose, next_distribution


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    base = next_distribution(logits, SamplingOptions(1.0))
    assert torch.allclose(base, logits.softmax(-1))
    cold = next_distribution(logits, SamplingOptions(0.5))
    hot = next_distribution(logits, SamplingOptions(2.0))
    assert torch.allclose(cold, (logits / 0.5).softmax(-1))
    assert cold[0, 0] > base[0, 0] > hot[0, 0]


def test_top_k_keeps_k_and_renormalises():
    probs = next_distribution(torch.tensor([[3.0, 1.0, 2.0, 0.0]]), SamplingOptions(1.0, top_k=2))
    assert probs[0, 1] == 0 and probs[0, 3] == 0
    expected = torch.tensor([3.0, 2.0]).softmax(-1)
    assert torch.allclose(probs[0, [0, 2]], expected)


def test_top_p_keeps_smallest_set_reaching_mass():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    probs = next_distribution(logits, SamplingOptions(1.0, top_p=0.7))
    assert torch.allclose(probs, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    only_top = next_distribution(logits, SamplingOptions(1.0, top_p=0.1))
    assert torch.allclose(only_top, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_choose_draws_from_the_distribution_and_argmax_at_zero():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    assert choose(logits, SamplingOptions(0.0), random.Random(0)) == [2]
    rng = random.Random(0)
    draws = [choose(logits, SamplingOptions(1.0), rng)[0] for _ in range(4000)]
    freq = torch.bincount(torch.tensor(draws), minlength=3).float() / len(draws)
    assert torch.allclose(freq, logits.softmax(-1)[0], atol=0.03)
    batch = torch.tensor([[0.0, 9.0, -9.0], [9.0, 0.0, -9.0]])
    assert choose(batch, SamplingOptions(1.0, top_k=1), random.Random(1)) == [1, 0]


def test_invalid_options_rejected():
    for kwargs in ({"temperature": -1}, {"temperature": float("nan")}, {"top_k": 0}, {"top_p": 0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            SamplingOptions(**kwargs)


def test_same_seed_same_text(trained_dir):
    ckpt = checkpoint.load(trained_dir)
    sampler = Sampler(ckpt.build_model(), ckpt.vocab)
    opts = SamplingOptions(0.9, top_p=0.95)
    a = list(sampler.generate("the ", 200, opts, seed=5))
    b = list(sampler.generate("the ", 200, opts, seed=5))
    c = list(sampler.generate("the ", 200, opts, seed=6))
    assert a == b and a != c
    batch = list(sampler.generate("the ", 50, opts, num_samples=4, seed=5))
    assert len(batch) == 50 and all(len(ids) == 4 for ids in batch)


def test_tiny_temperature_approaches_argmax():
    logits = torch.tensor([[0.5, 3.0, 1.0]])
    probs = next_distribution(logits, SamplingOptions(1e-45))
    assert torch.equal(probs, torch.tensor([[0.0, 1.0, 0.0]]))
