"""`charrnn export`: a trained model as one offline web page, or as an ONNX step graph.

    from charrnn.export import export
    export("checkpoints", "model.html")   # the page: write, records, co-write, in any browser
    export("checkpoints", "model.onnx")   # the step for onnxruntime and other runtimes

The format follows the output's extension. Every failure a user can cause (an unknown
extension, a checkpoint that cannot be read, a missing optional package, an output that
cannot be written) is one `CharrnnError` line, and the output is written atomically, so
nothing half-written is ever left behind.
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import Checkpoint
from ..errors import CharrnnError

FORMATS = {".html": "html", ".htm": "html", ".onnx": "onnx"}
PAGE_OPTIONS = ("title",)


def export(source: str | Path | Checkpoint, output: str | Path, **options) -> dict:
    """Writes the model at `source` (a .pt file, a checkpoint folder, or a checkpoint already
    loaded) to `output`.

    The format is the output's extension: .html/.htm for the page, .onnx for the ONNX step.
    Options: `title` (the page's title; default "charrnn: <checkpoint folder>"), page only.
    Returns a summary: output, format, bytes, cell, layers, hidden, vocab_size, and for the
    page the weights' precision and the kernel it carries.
    """
    from .. import checkpoint
    from ..fileio import atomic_write_bytes, why_write_failed

    output = Path(output)
    kind = FORMATS.get(output.suffix.lower())
    if kind is None:
        known = ", ".join(FORMATS)
        raise CharrnnError(f"unknown export format {output.suffix or '(no extension)'!r} for {output}: "
                           f"use one of {known}")
    unknown = sorted(set(options) - (set(PAGE_OPTIONS) if kind == "html" else set()))
    if unknown:
        raise TypeError(f"export to {kind} takes no option {', '.join(unknown)}")
    if output.is_dir():
        raise CharrnnError(f"cannot write {output}: it is a folder")
    ckpt = source if isinstance(source, Checkpoint) else checkpoint.load(source)
    if kind == "onnx":
        from . import onnx

        data, extra = onnx.serialize(ckpt), {"opset": onnx.OPSET}
    else:
        from . import page

        data, extra = page.render(ckpt, **options)
    try:
        atomic_write_bytes(output, data)
    except OSError as e:
        raise CharrnnError(f"cannot write {output}: {why_write_failed(e)}") from None
    config = ckpt.model_config
    return {"output": str(output), "format": kind, "bytes": len(data), "cell": config.cell,
            "layers": config.layers, "hidden": config.hidden, "vocab_size": config.vocab_size, **extra}


__all__ = ["FORMATS", "export"]
