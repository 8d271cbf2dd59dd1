"""`charrnn export -o model.html`: the file itself (no browser needed), and the kernel's build."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charrnn import checkpoint
from charrnn.errors import CharrnnError
from charrnn.export import export
from charrnn.export.wasm import build as wasm_build
from charrnn.export.weights import rounded_to_fp16

from .models import FIXTURE, NAMES, make_checkpoint

SCRIPT_OPEN = '<script id="data" type="application/json">'


def page_data(path: Path) -> dict:
    html = path.read_text(encoding="utf-8")
    start = html.index(SCRIPT_OPEN) + len(SCRIPT_OPEN)
    return json.loads(html[start:html.index("</script>", start)])


def test_the_page_is_self_contained_and_holds_the_rounded_weights(tmp_path):
    ck = make_checkpoint(tmp_path / "m.pt", cell="gru", layers=3, hidden=22)
    summary = export(ck, tmp_path / "m.html", title="My model")
    html = (tmp_path / "m.html").read_text(encoding="utf-8")
    assert summary["format"] == "html" and summary["bytes"] == len(html.encode("utf-8"))
    assert "http://" not in html and "https://" not in html and "src=" not in html and "<link" not in html
    assert "default-src 'none'" in html  # the page's own policy: nothing loads from anywhere
    data = page_data(tmp_path / "m.html")
    assert data["title"] == "My model" and data["cell"] == "gru" and data["layers"] == 3 and data["marker"] is None
    blob = gzip.decompress(base64.b64decode(data["weights"]))
    halves = torch.frombuffer(bytearray(blob), dtype=torch.float16).float()
    rounded = rounded_to_fp16(checkpoint.load(ck).model)
    expected = [rounded.embed.weight]
    for layer in range(3):
        expected += [getattr(rounded.core, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    expected += [rounded.head.weight, rounded.head.bias]
    assert [name for name, _ in data["manifest"]][:2] == ["embed", "weight_ih_l0"]
    assert torch.equal(halves, torch.cat([t.detach().flatten() for t in expected]))
    assert base64.b64decode(data["wasm"]) == wasm_build.BINARY.read_bytes()
    card = dict(data["card"])
    assert card["cell"] == "GRU" and "3 layers" in card["size"] and card["training steps"] == "1,234"
    assert card["validation loss"].startswith("1.5000") and card["made by"].startswith("charrnn ")


def test_text_from_the_checkpoint_cannot_end_the_script(tmp_path):
    chars = sorted(set("<>\"'&/script!- abc\n"))
    ck = make_checkpoint(tmp_path / "m.pt", chars=chars, hidden=8)
    ckpt = checkpoint.load(ck)
    data = {k: v for k, v in ckpt.data.items() if k not in ("format", "format_version")}
    data["corpus"] = {"source": "</script><script>alert(1)</script><!--"}
    checkpoint.save(ck, data)
    export(ck, tmp_path / "m.html", title="</title><script>alert(2)</script>")
    html = (tmp_path / "m.html").read_text(encoding="utf-8")
    assert html.lower().count("</script") == 2 and html.count("<script") == 2  # the page's own two
    assert "<!--" not in html.split(SCRIPT_OPEN)[1]
    loaded = page_data(tmp_path / "m.html")
    assert loaded["vocab"] == chars and dict(loaded["card"])["corpus"].startswith("</script>")


def test_a_record_model_carries_its_hashes(tmp_path):
    ck = make_checkpoint(tmp_path / "r.pt", chars=sorted(set("".join(NAMES))), records=NAMES)
    export(ck, tmp_path / "r.html")
    data = page_data(tmp_path / "r.html")
    hashes = gzip.decompress(base64.b64decode(data["record_hashes"]))
    stored = checkpoint.load(ck).data["record_hashes"].tolist()
    assert torch.frombuffer(bytearray(hashes), dtype=torch.int64).tolist() == sorted(stored)
    assert data["marker"] == len(data["vocab"]) and data["separator"] == "\n"
    assert export(FIXTURE, tmp_path / "old.html")["cell"] == "lstm"


def test_page_errors(tmp_path):
    ck = make_checkpoint(tmp_path / "m.pt", hidden=8, scale=1e5)  # weights past fp16's range
    with pytest.raises(CharrnnError, match="too large for 16 bits"):
        export(ck, tmp_path / "m.html")
    assert not (tmp_path / "m.html").exists()
    with pytest.raises(TypeError):
        export(ck, tmp_path / "m.onnx", title="x")  # the title is the page's
    with pytest.raises(CharrnnError, match="unknown export format"):
        export(ck, tmp_path)
    (tmp_path / "x.htm").mkdir()
    with pytest.raises(CharrnnError, match="folder"):
        export(ck, tmp_path / "x.htm")


def test_the_committed_kernel_is_built_from_its_source():
    if wasm_build.compiler() is None:
        pytest.skip("no clang on PATH (apt-get install clang lld)")
    try:
        fresh = wasm_build.fresh_build()
    except RuntimeError as e:
        pytest.skip(f"clang cannot build wasm32 here: {e}")
    assert fresh == wasm_build.BINARY.read_bytes(), "step.wasm is stale: run python charrnn/export/wasm/build.py"
    check = subprocess.run([sys.executable, str(wasm_build.HERE / "build.py"), "--check"], capture_output=True,
                           text=True)
    assert check.returncode == 0 and "matches" in check.stdout
