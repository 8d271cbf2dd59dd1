"""How `charrnn sample` prints what the Python API returns: one stream's text as it is made,
several samples, a record model's records, the likeliest samples. stdout carries the samples
alone; tallies and log-probabilities go to stderr."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from typing import TextIO

from .progress import log

FLUSH_EVERY_S = 0.05  # a reader sees text appear smoothly without a flush per character


def write_stream(pieces: Iterable[str], out: TextIO | None = None) -> None:
    """One sample's pieces as they are made, flushed every FLUSH_EVERY_S."""
    out = out or sys.stdout
    last_char, last_flush = "\n", time.monotonic()
    for piece in pieces:
        out.write(piece)
        last_char = piece[-1]
        if (now := time.monotonic()) - last_flush >= FLUSH_EVERY_S:
            out.flush()
            last_flush = now
    _end_line(last_char, out)


def write_samples(texts: list[str], separator: str, out: TextIO | None = None) -> None:
    """Several samples, in order, `separator` between them."""
    out = out or sys.stdout
    out.write(separator.join(texts))
    _end_line(texts[-1][-1] if texts[-1] else "\n", out)


def write_records(draws, as_json: bool, out: TextIO | None = None) -> None:
    """A record model's records (`Model.draw_records`), one a line as they are drawn, or one JSON
    list; then what --novel or --unique dropped, and any shortfall, on stderr."""
    out = out or sys.stdout
    kept: list[str] = []
    for record in draws:
        kept.append(record)
        if not as_json:
            out.write(draws.shown(record) + "\n")
            out.flush()
    if as_json:
        out.write(json.dumps([{"text": r} for r in kept], ensure_ascii=False) + "\n")
    out.flush()
    for line in (draws.dropped_summary(), draws.shortfall()):
        if line:
            log(line)


def write_beams(beams: list[tuple[str, float]], separator: str, as_json: bool, out: TextIO | None = None) -> None:
    """The likeliest samples, best first, with their log-probabilities in JSON or on stderr."""
    out = out or sys.stdout
    if as_json:
        out.write(json.dumps([{"text": t, "log_prob": p} for t, p in beams], ensure_ascii=False) + "\n")
        out.flush()
        return
    out.write(separator.join(t for t, _ in beams) + "\n")
    out.flush()
    for rank, (_, log_prob) in enumerate(beams, 1):
        log(f"beam {rank}: log-probability {log_prob:.4f}")


def _end_line(last_char: str, out: TextIO) -> None:
    if last_char != "\n":
        out.write("\n")  # so the shell prompt starts on its own line
    out.flush()
