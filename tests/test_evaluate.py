"""Evaluation (charrnn.evaluate, charrnn.evaluate.eval_streams): which targets are scored, and
that the figure is the loss of one continuous pass whatever the streams, chunks and shards."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.evaluate import EvalResult, eval_streams, evaluate
from charrnn.model import CharRNN, ModelConfig

from .helpers import make_corpus

CPU = torch.device("cpu")
VOCAB = 11


def random_tokens(n: int, vocab: int = VOCAB, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def model_of(cell: str = "lstm", hidden: int = 8, layers: int = 1, vocab: int = VOCAB, seed: int = 0,
             dropout: float = 0.0) -> CharRNN:
    torch.manual_seed(seed)
    return CharRNN(ModelConfig(vocab_size=vocab, cell=cell, layers=layers, hidden=hidden, dropout=dropout))


def rigged(logits: torch.Tensor) -> CharRNN:
    """A model whose every prediction is softmax(`logits`), whatever it has read: a zero head
    with `logits` as its bias."""
    model = model_of(vocab=len(logits))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(logits)
    return model


def fixed_distribution_loss(logits: torch.Tensor, tokens: torch.Tensor) -> float:
    """The mean loss of predicting tokens[1:] with softmax(`logits`), in float64."""
    nll = -torch.log_softmax(logits.double(), -1)
    return nll[tokens[1:].long()].mean().item()


# ---- eval_streams: every target once ---------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 3000), streams=st.integers(1, 80), burn_in=st.integers(0, 400))
def test_spans_score_every_target_exactly_once(n, streams, burn_in):
    spans = eval_streams(torch.zeros(n, dtype=torch.long), streams, burn_in)
    assert len(spans) == min(streams, n - 1)
    # Scored ranges [score, end) tile 1..n-1 in order: no gap, no overlap, none empty.
    assert spans[0][1] == 1 and spans[-1][2] == n
    for (_, _, end), (_, next_score, _) in zip(spans, spans[1:]):
        assert end == next_score
    for ctx, score, end in spans:
        assert score < end <= n
        # The burn-in is the `burn_in` inputs before the first scored one, cut at the text's start.
        assert ctx == max(0, score - 1 - burn_in)
    # Streams share the targets evenly (lengths differ by at most one).
    lengths = [end - score for _, score, end in spans]
    assert max(lengths) - min(lengths) <= 1


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 400), streams=st.integers(1, 24), burn_in=st.integers(0, 50), chunk=st.integers(1, 70),
       seed=st.integers(0, 2**16))
def test_evaluate_scores_every_target_exactly_once(n, streams, burn_in, chunk, seed):
    """Under a model with a fixed prediction, each target has its own loss: the mean is the
    mean over tokens[1:] only if every one of them was scored once."""
    logits = torch.randn(VOCAB, generator=torch.Generator().manual_seed(seed)) * 3
    tokens = random_tokens(n, seed=seed)
    progress = []
    result = evaluate(rigged(logits), tokens, CPU, streams=streams, burn_in=burn_in, chunk=chunk,
                      on_progress=progress.append)
    assert result.chars == n - 1 and sum(progress) == n - 1
    assert result.loss == pytest.approx(fixed_distribution_loss(logits, tokens), rel=1e-5)


# ---- the figure ------------------------------------------------------------------------------
def test_a_zero_head_predicts_uniformly_so_the_loss_is_ln_vocab():
    vocab = 29
    result = evaluate(rigged(torch.zeros(vocab)), random_tokens(500, vocab), CPU, streams=4)
    assert result.loss == pytest.approx(math.log(vocab), rel=1e-6)
    assert result.bpc == pytest.approx(math.log2(vocab), rel=1e-6)
    assert result.perplexity == pytest.approx(vocab, rel=1e-5)


def test_bits_per_char_and_perplexity_follow_from_the_loss():
    for loss in (0.0, 0.5, 1.2345, math.log(65)):
        result = EvalResult(loss=loss, chars=100)
        assert result.bpc == pytest.approx(loss / math.log(2), rel=1e-12, abs=0)
        assert result.perplexity == pytest.approx(math.exp(loss), rel=1e-12)


@pytest.fixture(scope="module")
def trained_model() -> tuple[CharRNN, torch.Tensor]:
    """A small LSTM trained for a few seconds on a learnable text, and held-out tokens of it."""
    text = make_corpus(6000, seed=3)
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text])
    train, held_out = ids[:5000], ids[5000:]
    model = model_of(hidden=32, vocab=len(chars), seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(80):
        starts = torch.randint(0, len(train) - 65, (8,), generator=generator)
        window = torch.stack([train[s : s + 65] for s in starts.tolist()])
        logits, _ = model(window[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), window[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 1.6, "the model should have learnt the text's words"
    return model, held_out


def test_streams_with_burn_in_score_close_to_one_continuous_stream(trained_model):
    model, tokens = trained_model
    one = evaluate(model, tokens, CPU, streams=1)
    many = evaluate(model, tokens, CPU, streams=16, burn_in=64)
    assert many.chars == one.chars == len(tokens) - 1
    assert abs(many.loss - one.loss) < 0.001
    # Without it each stream starts cold, and the figure is worse (by 0.04 nats here).
    cold = evaluate(model, tokens, CPU, streams=16, burn_in=0)
    assert cold.loss > one.loss + 0.01
    # With a burn-in reaching back to the start, each stream is in the continuous pass's state
    # when its scoring starts, so the figures agree to rounding.
    whole = evaluate(model, tokens, CPU, streams=7, burn_in=len(tokens))
    assert whole.loss == pytest.approx(one.loss, abs=1e-5)


@pytest.mark.parametrize("cell, layers", [("lstm", 2), ("gru", 1), ("rnn", 1)])
def test_chunks_carry_the_state(cell, layers):
    model, tokens = model_of(cell, layers=layers), random_tokens(300)
    whole = evaluate(model, tokens, CPU, streams=3, burn_in=20, chunk=512)
    assert evaluate(model, tokens, CPU, streams=3, burn_in=20, chunk=7).loss == pytest.approx(whole.loss, abs=1e-6)
    # And the figure is the cross-entropy of the model's own forward pass over the text.
    with torch.no_grad():
        logits, _ = model(tokens[None, :-1])
    direct = torch.nn.functional.cross_entropy(logits[0], tokens[1:]).item()
    assert evaluate(model, tokens, CPU, streams=1).loss == pytest.approx(direct, abs=1e-6)


@pytest.mark.parametrize("streams", [1, 2, 5, 16])
def test_two_shards_summed_equal_the_unsharded_figure(trained_model, streams):
    model, tokens = trained_model
    kwargs = dict(streams=streams, burn_in=32, chunk=100)
    whole = evaluate(model, tokens, CPU, **kwargs)
    # What each rank holds before the all-reduce ...
    local = []
    for rank in (0, 1):
        evaluate(model, tokens, CPU, shard=(rank, 2), reduce=lambda t: local.append(t.clone()) or t, **kwargs)
    assert local[0][1] + local[1][1] == len(tokens) - 1
    if streams == 1:
        assert local[1].tolist() == [0.0, 0.0]  # a rank with no stream contributes nothing
    # ... and what each rank reports after a summing reduce: the unsharded figure.
    for rank in (0, 1):
        result = evaluate(model, tokens, CPU, shard=(rank, 2), reduce=lambda t, other=local[1 - rank]: t + other,
                          **kwargs)
        assert result.chars == whole.chars
        # Equal to rounding: a shard runs its streams as a smaller batch.
        assert result.loss == pytest.approx(whole.loss, abs=1e-7)


# ---- the model afterwards, and bad input ------------------------------------------------------
def test_the_model_is_evaluated_without_dropout_and_its_mode_is_restored():
    model, tokens = model_of(layers=2, dropout=0.5), random_tokens(200)
    model.train()
    first = evaluate(model, tokens, CPU, streams=2)
    assert model.training
    assert evaluate(model, tokens, CPU, streams=2).loss == first.loss  # no dropout: the same figure
    model.eval()
    assert evaluate(model, tokens, CPU, streams=2).loss == first.loss
    assert not model.training


def test_the_mode_is_restored_when_evaluation_fails():
    model = model_of()
    model.train()

    def interrupt(_chars):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(model, random_tokens(100), CPU, on_progress=interrupt)
    assert model.training


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_tokens_is_a_value_error(n):
    with pytest.raises(ValueError):
        evaluate(model_of(), torch.zeros(n, dtype=torch.long), CPU)


def test_two_tokens_score_one_target():
    logits = torch.tensor([0.0, 1.0, 2.0])
    tokens = torch.tensor([0, 2])
    result = evaluate(rigged(logits), tokens, CPU, streams=16)
    assert result.chars == 1
    assert result.loss == pytest.approx(fixed_distribution_loss(logits, tokens), rel=1e-6)
