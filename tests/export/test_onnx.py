"""`charrnn export -o model.onnx`: onnxruntime's step equals charrnn's model, cell by cell."""

from __future__ import annotations

import json

import pytest
import torch

from charrnn import checkpoint
from charrnn.errors import CharrnnError
from charrnn.export import export

from .models import FIXTURE, NAMES, make_checkpoint

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'charrnn[onnx]')")
pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'charrnn[onnx]')")
np = pytest.importorskip("numpy", reason="onnxruntime needs numpy")

PRIME = "ROMEO: a rose, by any other name."


def run_steps(session, ids: torch.Tensor, layers: int, hidden: int, lstm: bool):
    """Steps onnxruntime over ids [batch, time] from a zero state: logits [batch, time, vocab], state."""
    batch = ids.size(0)
    feed = {"h": np.zeros((layers, batch, hidden), np.float32)}
    if lstm:
        feed["c"] = np.zeros((layers, batch, hidden), np.float32)
    logits = []
    for t in range(ids.size(1)):
        outputs = session.run(None, {"ids": ids[:, t].numpy(), **feed})
        logits.append(torch.from_numpy(outputs[0]))
        feed = {"h": outputs[1], **({"c": outputs[2]} if lstm else {})}
    state = (torch.from_numpy(feed["h"]),) + ((torch.from_numpy(feed["c"]),) if lstm else ())
    return torch.stack(logits, 1), state


@pytest.mark.parametrize("cell,layers", [("lstm", 2), ("gru", 3), ("rnn", 1)])
def test_onnx_step_equals_the_model(tmp_path, cell, layers):
    ck = make_checkpoint(tmp_path / "m.pt", cell=cell, layers=layers, hidden=20)
    summary = export(ck, tmp_path / "m.onnx")
    assert summary["format"] == "onnx" and summary["bytes"] == (tmp_path / "m.onnx").stat().st_size
    ckpt = checkpoint.load(ck)
    vocab = ckpt.vocab
    ids = torch.stack([vocab.encode(PRIME), vocab.encode(PRIME[::-1])])  # batched: two different streams
    with torch.no_grad():
        want, want_state = ckpt.model.eval()(ids)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got, state = run_steps(session, ids, layers, 20, cell == "lstm")
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert len(state) == len(want_state)
    for a, b in zip(state, want_state):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["vocabulary"]) == vocab.chars and json.loads(meta["marker_id"]) is None
    assert meta["cell"] == cell and meta["layers"] == str(layers) and meta["charrnn_version"]


def test_onnx_of_a_record_model_and_the_fixture(tmp_path):
    ck = make_checkpoint(tmp_path / "r.pt", chars=sorted(set("".join(NAMES))), records=NAMES)
    export(ck, tmp_path / "r.onnx")
    meta = ort.InferenceSession(str(tmp_path / "r.onnx")).get_modelmeta().custom_metadata_map
    assert json.loads(meta["marker_id"]) == len(set("".join(NAMES)))
    assert json.loads(meta["record_separator"]) == "\n"
    summary = export(FIXTURE, tmp_path / "old.onnx")
    assert summary["cell"] == checkpoint.load(FIXTURE).model_config.cell


def test_the_readme_snippet_samples(tmp_path):
    """The README's ten lines, run as they are written there."""
    ck = make_checkpoint(tmp_path / "m.pt", hidden=16)
    export(ck, tmp_path / "model.onnx")
    namespace: dict = {}
    exec(compile(README_SNIPPET.replace("model.onnx", str(tmp_path / "model.onnx")), "README", "exec"), namespace)
    text = namespace["text"]
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 200
    greedy = checkpoint.load(ck)
    import charrnn

    assert charrnn.load(ck).generate(prime="ROMEO:", length=200, temperature=0) == namespace["greedy"]
    assert greedy.vocab.unknown(text) == []


README_SNIPPET = '''
import json, numpy as np, onnxruntime as ort
session = ort.InferenceSession("model.onnx")
meta = session.get_modelmeta().custom_metadata_map
chars, layers, hidden = json.loads(meta["vocabulary"]), int(meta["layers"]), int(meta["hidden"])
names = [i.name for i in session.get_inputs()][1:]  # "h", and "c" for an LSTM

def sample(prime, length, temperature=0.8, rng=np.random.default_rng()):
    state, text = {n: np.zeros((layers, 1, hidden), np.float32) for n in names}, prime
    for i in range(len(prime) - 1 + length):
        logits, *new = session.run(None, {"ids": np.array([chars.index(text[i])]), **state})
        state = dict(zip(names, new))
        if i >= len(prime) - 1:  # past the prime: draw the next character
            z = (logits[0] - logits[0].max()) / max(temperature, 1e-9)
            p = np.exp(z) / np.exp(z).sum()
            text += chars[p.argmax() if temperature == 0 else rng.choice(len(p), p=p)]
    return text

text = sample("ROMEO:", 200)
greedy = sample("ROMEO:", 200, temperature=0)
'''


def test_errors_are_one_line_and_leave_nothing(tmp_path):
    ck = make_checkpoint(tmp_path / "m.pt", hidden=8)
    with pytest.raises(CharrnnError, match="unknown export format"):
        export(ck, tmp_path / "m.txt")
    with pytest.raises(CharrnnError, match="no such checkpoint"):
        export(tmp_path / "nope.pt", tmp_path / "m.onnx")
    with pytest.raises(CharrnnError, match="cannot write"):
        export(ck, tmp_path / "m.pt" / "m.onnx")  # a file as the folder
    assert not (tmp_path / "m.onnx").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
