"""`charrnn export -o model.html`: the model as one web page that writes in the browser.

The page (page.html, with page.js inlined) carries everything: the weights rounded to fp16
and gzipped (the browser's own DecompressionStream unpacks them), the WebAssembly kernel
(wasm/step.wasm, built from wasm/step.c), the vocabulary, the training records' hashes for
the novel filter, and the model card. All of it is one JSON object inside a non-executed
<script type="application/json">, in which every `<` is written \\u003c, so no text from
the checkpoint can end the script or open a tag; the page's script puts everything it
shows into the document as text.
"""

from __future__ import annotations

import array
import base64
import gzip
import math
import sys
from pathlib import Path

import torch

from .. import __version__
from ..checkpoint import Checkpoint
from ..errors import CharrnnError
from ..pages import embedded_json, escape_html
from .weights import named_parameters

HERE = Path(__file__).resolve().parent
TEMPLATE, SCRIPT, KERNEL = HERE / "page.html", HERE / "page.js", HERE / "wasm" / "step.wasm"


def fp16_bytes(tensor: torch.Tensor) -> bytes:
    """Little-endian fp16 bytes of a tensor (without numpy, which charrnn does not need)."""
    values = array.array("h", tensor.detach().cpu().half().view(torch.int16).flatten().tolist())
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


def packed_weights(ckpt: Checkpoint) -> tuple[list[list], bytes]:
    """The manifest [[name, shape], ...] and the gzipped fp16 weights in its order."""
    params = named_parameters(ckpt.model)
    if any(not torch.isfinite(t.half()).all() for _, t in params):
        raise CharrnnError(f"cannot export {ckpt.path}: a weight is too large for 16 bits (over 65,504)")
    blob = b"".join(fp16_bytes(t) for _, t in params)
    return [[name, list(t.shape)] for name, t in params], gzip.compress(blob, compresslevel=9, mtime=0)


def packed_hashes(ckpt: Checkpoint) -> str | None:
    """The training records' hashes (sorted int64, little-endian, gzipped, base64), or None."""
    hashes = ckpt.data.get("record_hashes")
    if ckpt.record_separator is None or not isinstance(hashes, torch.Tensor) or hashes.numel() == 0:
        return None
    values = array.array("q", sorted(int(h) for h in hashes.flatten().tolist()))
    if sys.byteorder == "big":
        values.byteswap()
    return base64.b64encode(gzip.compress(values.tobytes(), compresslevel=9, mtime=0)).decode("ascii")


def model_card(ckpt: Checkpoint) -> list[list[str]]:
    """Label and value of each line of the page's card."""
    config = ckpt.model_config
    vocab = ckpt.vocab
    step = ckpt.field("step", int)
    best = ckpt.field("best_val_loss", (int, float))
    corpus = ckpt.field("corpus", dict) or {}
    shown = "".join(vocab.chars).replace("\n", "\u21b5").replace("\t", "\u21e5")
    rows = [
        ("cell", config.cell.upper()),
        ("size", f"{config.layers} layers \u00d7 {config.hidden} units, {ckpt.model.num_parameters():,} parameters"),
        ("vocabulary", f"{len(vocab.chars)} characters" + (" and the record marker" if vocab.marker_id is not None
                                                           else "") + ": " + shown),
        ("records", "no: a stream model" if ckpt.record_separator is None
         else f"yes, separated by {ckpt.record_separator!r}"),
        ("corpus", str(corpus.get("source") or "unrecorded")),
        ("training steps", "unrecorded" if step is None else f"{step:,}"),
        ("validation loss", "none recorded" if best is None
         else f"{best:.4f} nats/char ({best / math.log(2):.4f} bits)"),
        ("weights", "fp16, gzip"),
        ("made by", f"charrnn {__version__} export"),
    ]
    return [list(row) for row in rows]


def page_data(ckpt: Checkpoint, title: str) -> dict:
    config = ckpt.model_config
    manifest, weights = packed_weights(ckpt)
    return {
        "title": title,
        "cell": config.cell,
        "layers": config.layers,
        "hidden": config.hidden,
        "vocab_size": config.vocab_size,
        "vocab": ckpt.vocab.chars,
        "marker": ckpt.vocab.marker_id,
        "separator": ckpt.record_separator,
        "card": model_card(ckpt),
        "manifest": manifest,
        "weights": base64.b64encode(weights).decode("ascii"),
        "wasm": base64.b64encode(KERNEL.read_bytes()).decode("ascii"),
        "record_hashes": packed_hashes(ckpt),
        "charrnn_version": __version__,
    }


def render(ckpt: Checkpoint, title: str | None = None) -> tuple[bytes, dict]:
    """The page's bytes and what export() adds to its summary."""
    title = title or f"charrnn: {ckpt.path.parent.name or ckpt.path.name}"
    data = page_data(ckpt, title)
    payload = embedded_json(data)
    script = SCRIPT.read_text(encoding="utf-8")
    if "</script" in script.lower() or "<!--" in script:
        raise AssertionError("page.js must not hold </script or <!--: it is inlined into a <script>")
    head, tail = TEMPLATE.read_text(encoding="utf-8").split("__DATA__")
    html = head.replace("__TITLE__", escape_html(title)) + payload + tail.replace("__SCRIPT__", script)
    return html.encode("utf-8"), {"weights": "fp16", "kernel": "wasm-simd128 + js"}
