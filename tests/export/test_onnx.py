"""`charrnn export -o model.onnx`: onnxruntime's step equals charrnn's model, cell by cell."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_the_readme_snippet_samples(tmp_path, capsys):
    """The README's lines, run as they are written there; with the draw made greedy, they give
    charrnn's own text at temperature 0."""
    ck = make_checkpoint(tmp_path / "m.pt", hidden=16)
    export(ck, tmp_path / "model.onnx")
    code = readme_snippet().replace("model.onnx", str(tmp_path / "model.onnx"))
    namespace: dict = {}
    exec(compile(code, "README", "exec"), namespace)
    text = namespace["text"]
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 200 and capsys.readouterr().out == text + "\n"
    assert checkpoint.load(ck).vocab.unknown(text) == []
    draw = "np.random.choice(len(p), p=p / p.sum())"
    assert draw in code
    exec(compile(code.replace(draw, "int(p.argmax())"), "README", "exec"), namespace)
    import charrnn

    assert charrnn.load(ck).generate(prime="ROMEO:", length=200, temperature=0) == namespace["text"]


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_snippet() -> str:
    """The README's onnxruntime example: the python block after "Sampling with onnxruntime"."""
    text = README.read_text(encoding="utf-8")
    start = text.index("```python", text.index("Sampling with onnxruntime")) + len("```python")
    return text[start:text.index("```", start)]


def test_errors_are_one_line_and_leave_nothing(tmp_path):
    ck = make_checkpoint(tmp_path / "m.pt", hidden=8)
    with pytest.raises(CharrnnError, match="unknown export format"):
        export(ck, tmp_path / "m.txt")
    with pytest.raises(CharrnnError, match="no such checkpoint"):
        export(tmp_path / "nope.pt", tmp_path / "m.onnx")
    with pytest.raises(CharrnnError, match="cannot write"):
        export(ck, tmp_path / "m.pt" / "m.onnx")  # a file as the folder
    assert not (tmp_path / "m.onnx").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
