"""Progress on stderr: a tqdm bar on a terminal, plain periodic lines otherwise.

stdout is never touched here: it carries only the product (text, or --json).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


def log(message: str, quiet: bool = False, stream: TextIO | None = None) -> None:
    """One line to stderr (through tqdm, so an active bar is not garbled)."""
    if not quiet:
        tqdm.write(message, file=stream or sys.stderr)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def byte_bar(total: int | None, desc: str, quiet: bool, stream: TextIO | None = None) -> tqdm:
    """A bar in bytes (for hashing, spooling and encoding) on a terminal; silent otherwise."""
    return count_bar(total, desc, "B", quiet, stream, divisor=1024)


def count_bar(total: int | None, desc: str, unit: str, quiet: bool, stream: TextIO | None = None,
              divisor: int = 1000) -> tqdm:
    """A bar counting items (characters evaluated, bytes read) on a terminal; silent otherwise."""
    stream = stream or sys.stderr
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, unit_divisor=divisor, file=stream,
                leave=False, dynamic_ncols=True, disable=quiet or not _isatty(stream))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class TrainingProgress:
    """Shows step, losses and throughput. `total` is the step count when one is known;
    otherwise (a run bounded by --max-time alone) the bar's total is estimated from how far
    through its budget the run is."""

    def __init__(self, total: int | None, start_step: int, quiet: bool, line_every_s: float = 10.0,
                 stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.line_every_s = line_every_s
        self.last_line = 0.0
        self.bar: tqdm | None = None
        self.estimate_total = total is None
        if not quiet and self.stream.isatty():
            self.bar = tqdm(total=total, initial=start_step, file=self.stream, unit="step",
                            dynamic_ncols=True, leave=True)

    def update(self, step: int, stats: dict[str, float | None], force_line: bool = False,
               fraction: float | None = None) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            if self.estimate_total and fraction:
                self.bar.total = max(step, round(step / fraction))
            self.bar.set_postfix({k: _fmt(v) for k, v in stats.items() if v is not None}, refresh=False)
            self.bar.update(step - self.bar.n)
            return
        now = time.monotonic()
        if force_line or now - self.last_line >= self.line_every_s:
            self.last_line = now
            parts = [f"step {step}"] + [f"{k} {_fmt(v)}" for k, v in stats.items() if v is not None]
            print(" | ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(value: float | str) -> str:
    if isinstance(value, str):
        return value
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4f}"
