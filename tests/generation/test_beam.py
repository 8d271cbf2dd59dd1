"""Beam search against brute force: every sequence of a tiny model scored in one pass."""

import itertools
from collections import defaultdict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from charrnn.config import CELLS, ModelConfig
from charrnn.generation.beam import Beam, beam_search
from charrnn.model import CharRNN


def tiny_model(cell: str, layers: int = 1, vocab: int = 3, seed: int = 0, end_bias: float = 0.0,
               dtype: torch.dtype = torch.float64) -> CharRNN:
    """Random weights of unit scale, so the next-id distributions are far from uniform and
    distinct sequences have distinct scores; `end_bias` raises the last id's logit. Float64
    unless asked, so that beam and brute force agree to 1e-9 (see `tolerance`)."""
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(vocab_size=vocab, cell=cell, layers=layers, hidden=8, dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0)
        model.head.bias[-1] += end_bias
    return model.to(dtype).eval()


def tolerance(model: CharRNN) -> float:
    """How closely a beam's score matches brute force's: the beam steps one time step per call
    and brute force runs whole sequences, the same arithmetic in another order, so they agree
    to the model's rounding (measured: about 1e-6 in fp32 over a few steps), not bit for bit."""
    return 1e-9 if model.head.weight.dtype == torch.float64 else 1e-5


@torch.no_grad()
def brute_scores(model: CharRNN, prefix: list[int], seqs: list[tuple[int, ...]],
                 temperature: float = 1.0) -> dict[tuple[int, ...], float]:
    """Each sequence's exact log-prob after `prefix`: one model pass per sequence length."""
    by_length = defaultdict(list)
    for seq in seqs:
        by_length[len(seq)].append(seq)
    scores = {}
    for n, group in by_length.items():
        if n == 0:
            scores[()] = 0.0
            continue
        ids = torch.tensor([prefix + list(seq) for seq in group])
        logits, _ = model(ids[:, :-1])
        log_probs = F.log_softmax(logits[:, len(prefix) - 1:] / temperature, -1).double()
        totals = log_probs.gather(-1, ids[:, len(prefix):, None]).squeeze(-1).sum(1)
        scores.update(zip(group, totals.tolist()))
    return scores


def all_streams(vocab: int, length: int) -> list[tuple[int, ...]]:
    return list(itertools.product(range(vocab), repeat=length))


def all_records(vocab: int, cap: int) -> list[tuple[int, ...]]:
    """Every complete record (body + END, END being the last id) with at most `cap` ids before END."""
    end = vocab - 1
    return [body + (end,) for n in range(cap + 1) for body in itertools.product(range(end), repeat=n)]


def record_scores(model: CharRNN, prefix: list[int], cap: int, temperature: float = 1.0) -> dict[tuple, float]:
    """Brute force over records, keyed by the body (the ids a Beam holds, without END)."""
    scores = brute_scores(model, prefix, all_records(model.config.vocab_size, cap), temperature)
    return {seq[:-1]: score for seq, score in scores.items()}


def assert_top(beams: list[Beam], brute: dict[tuple, float], k: int, tol: float = 1e-9) -> None:
    """The beams are brute force's top k: their scores rank by rank, each beam's score that
    of its own ids, sorted, and the ids themselves wherever no near-tie makes order arbitrary."""
    ranked = sorted(brute.items(), key=lambda item: -item[1])
    assert len(beams) == min(k, len(ranked))
    got = [beam.log_prob for beam in beams]
    assert got == sorted(got, reverse=True)
    for beam, (_, score) in zip(beams, ranked):
        assert beam.log_prob == pytest.approx(brute[tuple(beam.ids)], abs=tol)
        assert beam.log_prob == pytest.approx(score, abs=tol)
    assert len({tuple(beam.ids) for beam in beams}) == len(beams)
    gaps = [a[1] - b[1] for a, b in zip(ranked[: len(beams)], ranked[1 : len(beams) + 1])]
    if all(gap > 10 * tol for gap in gaps):
        assert [tuple(beam.ids) for beam in beams] == [ids for ids, _ in ranked[: len(beams)]]


def assert_valid(beams: list[Beam], model: CharRNN, prefix: list[int], end_id: int | None = None,
                 temperature: float = 1.0) -> None:
    """Each beam scores as brute force scores its ids (with END for records); sorted; distinct."""
    seqs = [tuple(beam.ids) + (() if end_id is None else (end_id,)) for beam in beams]
    scores = brute_scores(model, prefix, seqs, temperature)
    for beam, seq in zip(beams, seqs):
        assert beam.log_prob == pytest.approx(scores[seq], abs=tolerance(model))
        assert end_id not in beam.ids
    got = [beam.log_prob for beam in beams]
    assert got == sorted(got, reverse=True)
    assert len(set(seqs)) == len(seqs)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
def test_stream_wide_beam_is_brute_force(cell, layers):
    model = tiny_model(cell, layers, vocab=3, seed=layers)
    prefix = [1]
    brute = brute_scores(model, prefix, all_streams(3, 5))
    beams = beam_search(model, prefix, width=3**5, length=5)
    assert_top(beams, brute, 3**5)
    assert all(len(beam.ids) == 5 for beam in beams)


@pytest.mark.parametrize("cell", CELLS)
def test_stream_top_k_is_brute_force_top_k(cell):
    # Width vocab^(L-1) already keeps every prefix alive until the last step.
    model = tiny_model(cell, vocab=4, seed=3)
    brute = brute_scores(model, [0, 3], all_streams(4, 4))
    assert_top(beam_search(model, [0, 3], width=4**3, length=4), brute, 4**3)


@pytest.mark.parametrize("cell", CELLS)
def test_narrow_stream_beam_scores_its_own_sequences(cell):
    model = tiny_model(cell, layers=2, vocab=4, seed=5)
    beams = beam_search(model, [2], width=3, length=12)
    assert len(beams) == 3 and all(len(beam.ids) == 12 for beam in beams)
    assert_valid(beams, model, [2])


@pytest.mark.parametrize("cell", CELLS)
def test_width_one_is_greedy_decoding(cell):
    model = tiny_model(cell, layers=2, vocab=4, seed=7)
    ids = [1]
    with torch.no_grad():
        for _ in range(15):
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    (beam,) = beam_search(model, [1], width=1, length=15)
    assert beam.ids == ids[1:]
    assert_valid([beam], model, [1])


def test_prefix_conditions_the_result():
    model = tiny_model("lstm", layers=2, vocab=3, seed=11)
    results = []
    for prefix in ([2], [0, 1, 2], [1, 1, 0, 2]):
        brute = brute_scores(model, prefix, all_streams(3, 4))
        beams = beam_search(model, prefix, width=27, length=4)
        assert_top(beams, brute, 27)
        results.append([beam.log_prob for beam in beams])
    assert results[0] != results[1] and results[1] != results[2]


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_scores_the_tempered_distribution(temperature):
    model = tiny_model("gru", vocab=3, seed=13)
    brute = brute_scores(model, [0], all_streams(3, 4), temperature)
    assert_top(beam_search(model, [0], width=27, length=4, temperature=temperature), brute, 27)


def test_zero_length_is_the_empty_continuation():
    assert beam_search(tiny_model("rnn"), [0], width=4, length=0) == [Beam([], 0.0)]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
def test_records_wide_beam_is_brute_force(cell, layers):
    # vocab 4: ids 0-2 and END; 3^0 + ... + 3^4 = 121 records with at most 4 ids before END.
    model = tiny_model(cell, layers, vocab=4, seed=17 + layers, end_bias=1.0)
    prefix = [3, 0]  # START, then a one-id prime
    brute = record_scores(model, prefix, cap=4)
    assert len(brute) == 121
    beams = beam_search(model, prefix, width=128, length=4, end_id=3)
    assert_top(beams, brute, 128)
    assert max(len(beam.ids) for beam in beams) == 4


@pytest.mark.parametrize("cell", CELLS)
def test_records_top_k_survives_early_stopping(cell):
    # Width 64 keeps all 2^6 live beams of the first steps; after that the 64 kept records
    # prune every live beam below the worst of them (it can only fall), the batch shrinks and
    # the search may stop before the cap. The top 64 of the 8191 records must survive that.
    model = tiny_model(cell, vocab=3, seed=19, end_bias=2.0)
    batches = []
    model.register_forward_hook(lambda module, args, out: batches.append(args[0].size(0)))
    beams = beam_search(model, [2], width=64, length=12, end_id=2)
    assert sum(batches) < (1 + 2 + 4 + 8 + 16 + 32 + 64 * 7) / 2  # without pruning: full beams to the cap
    assert_top(beams, record_scores(model, [2], cap=12), 64)


@pytest.mark.parametrize("cell", CELLS)
def test_narrow_record_beam_returns_valid_complete_records(cell):
    model = tiny_model(cell, layers=2, vocab=4, seed=23, end_bias=1.0)
    beams = beam_search(model, [3, 1, 2], width=4, length=10, end_id=3)
    assert 1 <= len(beams) <= 4 and all(len(beam.ids) <= 10 for beam in beams)
    assert_valid(beams, model, [3, 1, 2], end_id=3)


def test_records_stop_once_no_live_beam_can_win():
    model = tiny_model("lstm", vocab=4, seed=29, end_bias=6.0)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    beams = beam_search(model, [3], width=2, length=200, end_id=3)
    assert len(beams) == 2
    assert_valid(beams, model, [3], end_id=3)
    assert len(calls) < 20  # END is likely, so the kept records beat every live beam early


def test_fewer_records_than_width_within_the_cap():
    model = tiny_model("gru", vocab=3, seed=31)
    brute = record_scores(model, [2], cap=1)  # (), (0,), (1,)
    beams = beam_search(model, [2], width=10, length=1, end_id=2)
    assert len(beams) == 3
    assert_top(beams, brute, 10)


def test_record_prime_conditions_the_result():
    model = tiny_model("rnn", layers=2, vocab=4, seed=37, end_bias=1.0)
    for prefix in ([3], [3, 0], [3, 2, 1]):
        assert_top(beam_search(model, prefix, width=40, length=3, end_id=3), record_scores(model, prefix, 3), 40)


def test_model_mode_is_restored_and_dropout_is_off():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=3, cell="lstm", layers=2, hidden=8, dropout=0.5)).train()
    first = beam_search(model, [0], width=5, length=6)
    assert model.training
    assert beam_search(model, [0], width=5, length=6) == first  # no dropout draws: reproducible
    assert_valid(first, model.eval(), [0])


@pytest.mark.parametrize("arguments", [
    dict(prefix=[], width=2, length=3),
    dict(prefix=[3], width=2, length=3),
    dict(prefix=[0], width=0, length=3),
    dict(prefix=[0], width=2, length=-1),
    dict(prefix=[0], width=2, length=3, end_id=5),
    dict(prefix=[0], width=2, length=3, temperature=0.0),
    dict(prefix=[0], width=2, length=3, temperature=float("nan")),
])
def test_bad_arguments_are_value_errors(arguments):
    with pytest.raises(ValueError):
        beam_search(tiny_model("lstm"), **arguments)


@settings(max_examples=25, deadline=None)
@given(cell=st.sampled_from(CELLS), layers=st.integers(1, 2), vocab=st.integers(2, 5), seed=st.integers(0, 99),
       prefix=st.lists(st.integers(0, 4), min_size=1, max_size=4), width=st.integers(1, 6),
       length=st.integers(0, 8), records=st.booleans())
def test_any_beam_scores_its_own_sequences(cell, layers, vocab, seed, prefix, width, length, records):
    model = tiny_model(cell, layers, vocab, seed, end_bias=1.0 if records else 0.0)
    prefix = [i % vocab for i in prefix]
    end_id = vocab - 1 if records else None
    beams = beam_search(model, prefix, width, length, end_id)
    assert_valid(beams, model, prefix, end_id)
    if records:
        assert 1 <= len(beams) <= width and all(len(beam.ids) <= length for beam in beams)
    else:
        assert len(beams) == min(width, vocab**length) and all(len(beam.ids) == length for beam in beams)


@pytest.mark.parametrize("cell", CELLS)
def test_fp32_models_agree_with_brute_force_to_fp32_rounding(cell):
    stream = tiny_model(cell, layers=2, vocab=3, seed=41, dtype=torch.float32)
    assert_top(beam_search(stream, [1], width=3**5, length=5), brute_scores(stream, [1], all_streams(3, 5)), 3**5,
               tol=tolerance(stream))
    records = tiny_model(cell, layers=2, vocab=4, seed=43, end_bias=1.0, dtype=torch.float32)
    assert_top(beam_search(records, [3], width=128, length=4, end_id=3), record_scores(records, [3], 4), 128,
               tol=tolerance(records))
