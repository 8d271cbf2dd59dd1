"""trace.py: every character's prediction and every layer's activations, and the cell search."""

from __future__ import annotations

import math
import random

import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.errors import CharrnnError
from charrnn.inspect.features import BUILTIN_FEATURES, builtin_features, rank_units, regex_feature
from charrnn.inspect.trace import trace
from charrnn.model import CharRNN
from charrnn.text.vocab import Vocabulary

VOCAB = Vocabulary('ab cd"()\n')


def tiny(cell: str, layers: int = 2, hidden: int = 12, vocab: Vocabulary = VOCAB, seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    return CharRNN(ModelConfig(vocab_size=len(vocab), cell=cell, layers=layers, hidden=hidden)).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_trace_is_the_models_forward_pass(cell):
    model = tiny(cell)
    text = 'ab "cd" (a b)\n  dab "c' * 4
    result = trace(model, VOCAB, text)
    with torch.no_grad():
        logits, state = model(VOCAB.encode(text)[None])
    assert result.probs.shape == (len(text), len(VOCAB)) and result.probs[0].isnan().all()
    assert torch.allclose(result.probs[1:], logits[0, :-1].softmax(-1), atol=1e-6)
    expected_loss = torch.nn.functional.cross_entropy(logits[0, :-1], VOCAB.encode(text)[1:])
    assert result.mean_loss == pytest.approx(float(expected_loss), rel=1e-5)
    assert result.loss[0].isnan() and result.predicted.tolist() == [False] + [True] * (len(text) - 1)
    for layer in range(2):  # the last step of each layer is the model's final state
        assert torch.allclose(result.activation(layer, "h")[-1], state[0][layer, 0], atol=1e-6)
        if cell == "lstm":
            assert torch.allclose(result.activation(layer, "c")[-1], state[1][layer, 0], atol=1e-6)
    kinds = {"lstm": {"c", "h", "i", "f", "g", "o"}, "gru": {"h", "r", "z", "n"}, "rnn": {"h"}}[cell]
    assert all(set(layer) == kinds for layer in result.layers)
    assert all(v.shape == (len(text), 12) for layer in result.layers for v in layer.values())


def test_lstm_gates_give_its_states():
    result = trace(tiny("lstm"), VOCAB, 'ab "cd" (a b)\n' * 3)
    for layer in result.layers:
        c, i, f, g, o = (layer[k] for k in "cifgo")
        assert torch.allclose(layer["h"], o * c.tanh(), atol=1e-6)
        assert torch.allclose(c[1:], f[1:] * c[:-1] + i[1:] * g[1:], atol=1e-6)
        assert torch.allclose(c[0], i[0] * g[0], atol=1e-6)


def test_top_guesses():
    result = trace(tiny("gru"), VOCAB, "abcd abcd")
    ids, probs = result.top(5)
    assert ids.shape == probs.shape == (9, 5)
    assert torch.allclose(probs[1:, 0], result.probs[1:].max(1).values)
    assert (probs[:, :-1] >= probs[:, 1:]).all() and (probs[0] == 0).all()  # nothing predicted the first
    assert result.label(int(ids[1, 0])) in VOCAB.chars


def test_a_record_model_reads_each_record_from_its_marker():
    vocab = Vocabulary("abcd", marker=True)
    model = tiny("lstm", vocab=vocab)
    marker = vocab.marker_id
    result = trace(model, vocab, "ab\ncda\n\nd")
    with torch.no_grad():
        def run(record):
            logits, _ = model(torch.tensor([[marker] + vocab.encode(record).tolist()]))
            return logits[0].softmax(-1)

        first, second, empty, last = run("ab"), run("cda"), run(""), run("d")
    expected = torch.cat([first, second, empty, last[:-1]])  # ab END cda END END d (no END after it)
    assert torch.allclose(result.probs, expected, atol=1e-6)
    assert result.targets.tolist() == [0, 1, marker, 2, 3, 0, marker, marker, 3]
    assert result.label(marker) == "END" and not result.loss.isnan().any()
    # After a separator the state is the next record's, having read MARKER from a zero state.
    assert torch.allclose(result.activation(0, "h")[2], result.activation(0, "h")[6], atol=1e-6)
    with torch.no_grad():
        _, after_marker = model(torch.tensor([[marker]]))
    assert torch.allclose(result.activation(1, "h")[2], after_marker[0][1, 0], atol=1e-6)


def test_unknown_characters_and_an_empty_text_are_errors():
    with pytest.raises(CharrnnError, match="outside the model's vocabulary: z"):
        trace(tiny("rnn"), VOCAB, "abz")
    with pytest.raises(CharrnnError, match="empty"):
        trace(tiny("rnn"), VOCAB, "")


def test_builtin_features():
    text = 'a "b" (c\n  d)\nE'
    f = builtin_features(text)
    assert list(f) == list(BUILTIN_FEATURES)
    assert f["inside quotes"].tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert f["inside brackets"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert f["position in line"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4, 0, 1]
    assert f["indentation depth"].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 0, 0]
    assert f["start of line"].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    assert f["capital letter"].tolist() == [0] * 14 + [1]
    assert regex_feature("abcabc", "bc").tolist() == [0, 1, 1, 0, 1, 1]


def quote_tracking_lstm(k: int, hidden: int = 8) -> tuple[CharRNN, Vocabulary]:
    """A one-layer LSTM whose unit k flips its cell state at every double quote, by hand:
    at a quote its forget gate closes and its input gate opens, and its candidate is the
    opposite sign of its own last h, so c is about +1 inside quotes and -1 outside; any other
    character leaves it as it is. The other units keep their random weights."""
    vocab = Vocabulary('ab c"')
    model = tiny("lstm", layers=1, hidden=hidden, vocab=vocab, seed=3)
    quote = vocab.index['"']
    H = hidden
    with torch.no_grad():
        embed = model.embed.weight
        embed[:, 0] = 0.0
        embed[quote, 0] = 1.0  # input dimension 0: "this is a quote"
        w_ih, w_hh = model.core.weight_ih_l0, model.core.weight_hh_l0
        b_ih, b_hh = model.core.bias_ih_l0, model.core.bias_hh_l0
        for gate in range(4):  # gates i, f, g, o: unit k reads nothing but what is set below
            row = gate * H + k
            w_ih[row] = 0.0
            w_hh[row] = 0.0
            b_ih[row] = b_hh[row] = 0.0
        w_ih[k, 0], b_ih[k] = 20.0, -10.0  # i: open at a quote only
        w_ih[H + k, 0], b_ih[H + k] = -20.0, 10.0  # f: keep, except at a quote
        w_hh[2 * H + k, k], b_ih[2 * H + k] = -10.0, 1.0  # g: against its own h (and inside from 0)
        b_ih[3 * H + k] = 10.0  # o: always open
    return model, vocab


def test_the_cell_search_ranks_a_quote_unit_first():
    k = 5
    model, vocab = quote_tracking_lstm(k)
    rng = random.Random(0)
    text = "".join(rng.choice("ab c") if rng.random() > 0.06 else '"' for _ in range(2000))
    result = trace(model, vocab, text)
    c = result.activation(0, "c")[:, k]
    inside = builtin_features(text)["inside quotes"].bool()
    assert (c[inside] > 0.5).all() and (c[~inside & (torch.arange(len(text)) > text.index('"'))] < -0.5).all()
    ranked = rank_units(result, builtin_features(text), top=3)
    best = ranked["inside quotes"][0]
    assert (best.layer, best.unit) == (0, k) and best.score > 0.9
    assert {(u.kind, u.unit) for u in ranked["inside quotes"][:2]} == {("c", k), ("h", k)}
    assert ranked["inside brackets"] == []  # no brackets in this text: nothing to track
    # A regex feature is ranked the same way, and a feature with the wrong length is refused.
    assert rank_units(result, {"quoted": regex_feature(text, r'"[^"]*"')})["quoted"][0].unit == k
    with pytest.raises(ValueError, match="values for a text"):
        rank_units(result, {"short": torch.zeros(3)})
    assert math.isfinite(best.score)


def test_the_python_api_traces(trained_dir):
    import charrnn
    from charrnn import checkpoint

    model = charrnn.load(trained_dir)
    result = model.trace("the cat sat on the mat.\n")
    ckpt = checkpoint.load(trained_dir)
    expected = trace(ckpt.model, ckpt.vocab, "the cat sat on the mat.\n")
    assert torch.equal(result.probs.nan_to_num(-1), expected.probs.nan_to_num(-1))
    scored = model.score("the cat sat on the mat.\n", streams=1, precision="fp32")
    assert result.mean_loss == pytest.approx(scored["loss"], rel=1e-5)
    ids, probs = result.top(5)
    assert ids.shape == (24, 5) and set(result.layers[0]) == {"c", "h", "i", "f", "g", "o"}


def test_charrnn_trace_is_the_public_name_the_api_docs_give():
    import charrnn.trace
    from charrnn.inspect import features, trace

    for name in charrnn.trace.__all__:
        assert getattr(charrnn.trace, name) is getattr(trace, name, getattr(features, name, None))
