import pytest
import torch

from charrnn import checkpoint
from charrnn.generation.sampler import Chooser, Sampler, SamplingOptions, next_distribution


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


def draw(logits: torch.Tensor, options: SamplingOptions, n: int, seed: int = 0) -> torch.Tensor:
    """n draws for every row of logits -> [n, rows]."""
    choose = Chooser(options, logits.size(0), logits.size(1), seed)
    return torch.tensor([choose(logits.clone()) for _ in range(n)])


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_gumbel_draws_follow_the_tempered_distribution(temperature):
    """Enough draws to cross several noise blocks, for one stream and for a batch."""
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0], [2.0, 0.0, 0.5, 0.5]])
    for rows in (logits[:1], logits):
        draws = draw(rows, SamplingOptions(temperature), 6000)
        for row in range(rows.size(0)):
            freq = torch.bincount(draws[:, row], minlength=4).float() / len(draws)
            assert torch.allclose(freq, (rows[row] / temperature).softmax(-1), atol=0.025)


def test_filtered_draws_follow_the_filtered_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]])
    options = SamplingOptions(1.0, top_p=0.9)
    freq = torch.bincount(draw(logits, options, 6000)[:, 0], minlength=4).float() / 6000
    assert torch.allclose(freq, next_distribution(logits, options)[0], atol=0.025)


def test_choose_argmax_at_zero_and_top_k_one():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    assert Chooser(SamplingOptions(0.0), 1, 3, 0)(logits) == [2]
    batch = torch.tensor([[0.0, 9.0, -9.0], [9.0, 0.0, -9.0]])
    assert Chooser(SamplingOptions(1.0, top_k=1), 2, 3, 1)(batch) == [1, 0]


def test_tiny_and_huge_temperatures_stay_finite():
    logits = torch.tensor([[0.5, 3.0, 1.0]])
    assert set(draw(logits, SamplingOptions(1e-45), 50).flatten().tolist()) == {1}
    for hot in (1e6, 1e300):
        freq = torch.bincount(draw(logits, SamplingOptions(hot), 3000)[:, 0], minlength=3).float() / 3000
        assert torch.allclose(freq, torch.full((3,), 1 / 3), atol=0.04)


def test_invalid_options_rejected():
    for kwargs in ({"temperature": -1}, {"temperature": float("nan")}, {"top_k": 0}, {"top_p": 0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            SamplingOptions(**kwargs)


@pytest.mark.parametrize("options", [SamplingOptions(0.9), SamplingOptions(0.9, top_p=0.95)])
def test_same_seed_same_text(trained_dir, options):
    ckpt = checkpoint.load(trained_dir)
    sampler = Sampler(ckpt.move_model_to("cpu"), ckpt.vocab)
    a = list(sampler.generate("the ", 200, options, seed=5))
    b = list(sampler.generate("the ", 200, options, seed=5))
    c = list(sampler.generate("the ", 200, options, seed=6))
    assert a == b and a != c
    batch = list(sampler.generate("the ", 50, options, num_samples=4, seed=5))
    assert len(batch) == 50 and all(len(ids) == 4 for ids in batch)


def test_tiny_temperature_approaches_argmax():
    logits = torch.tensor([[0.5, 3.0, 1.0]])
    probs = next_distribution(logits, SamplingOptions(1e-45))
    assert torch.equal(probs, torch.tensor([[0.0, 1.0, 0.0]]))
