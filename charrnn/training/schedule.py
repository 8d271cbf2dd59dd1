"""The learning-rate schedule and the run's budget, as pure functions of where the run is."""

from __future__ import annotations

import math

from ..config import TrainConfig


def total_steps(config: TrainConfig, windows_per_epoch: int) -> int | None:
    """Steps the run will take when bounded by steps or epochs (None for time alone)."""
    bounds = []
    if config.max_steps is not None:
        bounds.append(config.max_steps)
    if config.max_epochs is not None:
        bounds.append(math.ceil(config.max_epochs * windows_per_epoch))
    return min(bounds) if bounds else None


def budget_fraction(config: TrainConfig, step: int, elapsed: float, total: int | None) -> float:
    """How far through its budget the run is, 0..1: the larger of steps and time."""
    fractions = [0.0]
    if total:
        fractions.append(step / total)
    if config.max_time:
        fractions.append(elapsed / config.max_time)
    return min(1.0, max(fractions))


def learning_rate(config: TrainConfig, step: int, fraction: float, scale: float = 1.0) -> float:
    """The rate of step `step` (from 0): linear warm-up, then cosine decay to min_lr_frac of
    the peak at the budget's end (`fraction` = 1), times the plateau rule's `scale`."""
    warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
    floor = config.min_lr_frac
    decay = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * fraction))
    return config.lr * warm * decay * scale
