"""An exponential moving average of a model's weights, which is what gets evaluated and saved.

Late in a run, each optimiser step still moves the weights by its own noise; averaging the
last few hundred steps' weights removes much of it, and the averaged weights score lower than
the trained ones they trail (see docs/experiments.md, "Weight average").
"""

from __future__ import annotations

import copy

import torch

from ..model import CharRNN


class WeightAverage:
    def __init__(self, model: CharRNN, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError("decay must be in (0, 1)")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        # A fixed decay would keep much of the random initial weights for hundreds of steps
        # (0.995: 55 % after 120). Early on, the average spans about a tenth of the steps taken
        # so far (TensorFlow's ExponentialMovingAverage with num_updates), reaching `decay` at
        # step 1,790 for 0.995 and 8,990 for 0.999 (see docs/experiments.md, "Weight average").
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, trained: CharRNN, step: int) -> None:
        """Moves each averaged weight a (1 - decay) part of the way to the trained one."""
        averaged, weights = list(self.model.parameters()), [w.detach() for w in trained.parameters()]
        if len(averaged) != len(weights):
            raise ValueError("the trained model's parameters do not match the average's")
        # One fused call over all tensors: on a GPU a lerp per tensor is a launch per tensor.
        torch._foreach_lerp_(averaged, weights, 1.0 - self.decay_at(step))
