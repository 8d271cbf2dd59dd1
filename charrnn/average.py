"""An exponential moving average of a model's weights, which is what gets evaluated and saved.

Late in a run, each optimiser step still moves the weights by its own noise; averaging the
last few hundred steps' weights removes much of it. On tiny-shakespeare (2-core CPU, 10
minutes) the average scored 0.005 nats below the trained weights it trailed with decay 0.995
and the default learning rate of the time, and 0.02-0.03 below them with decay 0.999 and a
peak rate of 1.2e-2 (bench/README.md).
"""

from __future__ import annotations

import copy

import torch

from .model import CharRNN


class WeightAverage:
    def __init__(self, model: CharRNN, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError("decay must be in (0, 1)")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        # A fixed decay of 0.995 would still hold 55 % of the random initial weights after
        # 120 steps. Early on, the average spans about a tenth of the steps taken so far
        # (TensorFlow's ExponentialMovingAverage with num_updates), reaching `decay` at step
        # 1,790 for 0.995 and 8,990 for 0.999.
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, trained: CharRNN, step: int) -> None:
        """Moves each averaged weight a (1 - decay) part of the way to the trained one."""
        averaged, weights = list(self.model.parameters()), [w.detach() for w in trained.parameters()]
        if len(averaged) != len(weights):
            raise ValueError("the trained model's parameters do not match the average's")
        # One fused call over all tensors: on a GPU a lerp per tensor is a launch per tensor.
        torch._foreach_lerp_(averaged, weights, 1.0 - self.decay_at(step))
