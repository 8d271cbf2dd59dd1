"""Dropout whose mask is cheap to draw on a CPU.

`F.dropout` on a CPU draws one Bernoulli number per element from a serial generator, slow
enough to be a large part of a bf16 training step (see docs/experiments.md, "Dropout
masks"). One 64-bit draw (`random_` on int64) yields 63 uniform bits, so here it gives the
masks of four elements, 15 bits each; a unit is dropped when its 15 bits fall below
round(p * 2^15). The drop probability is then that over 2^15 (within 1.6e-5 of p) and the
kept units are scaled by its complement, so the expected output still equals the input.
The draws come from torch's generator, so `--seed` reproduces them. Other devices keep
`F.dropout`.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

_LEVELS = 1 << 15  # the draws are 15-bit integers


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    keep, scale = keep_mask(x.shape, p)
    # Scaled by a Python float, each product is rounded once: a bf16 mask holding the scale
    # would round the scale itself (1/0.9 to 1.109375) and shrink every output alike.
    return x * scale * keep


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> tuple[torch.Tensor, float]:
    """Which units to keep (bool) and their scale, 1 / (1 - p') where p' = round(p * 2^15) / 2^15
    is the probability of a drop."""
    threshold = min(round(p * _LEVELS), _LEVELS - 1)
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_()  # values in [0, 2^63)
    # As int16, the top word of each int64 has its sign bit clear; masking the other three
    # the same way leaves four uniform 15-bit integers per draw.
    draws = words.view(torch.int16)[:count].view(shape) & (_LEVELS - 1)
    return draws >= threshold, _LEVELS / (_LEVELS - threshold)
