"""Ctrl-C and SIGTERM during training: the first finishes the current step, saves and stops; a
second aborts at once (checkpoint writes are atomic, so the last one stays whole)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .trainer import Trainer


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT and SIGTERM finish the current step, save, and stop; a second one aborts.

    Checkpoint writes are atomic, so even the abort leaves the last checkpoint whole.
    """
    previous = {}

    def handler(signum, frame):
        if trainer.stop_signal is not None:
            raise KeyboardInterrupt
        trainer.request_stop(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
