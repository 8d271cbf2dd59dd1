"""Loss of a text under a model, read as continuous streams with the state carried."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .data import eval_streams
from .model import CharRNN
from .runtime import autocast

# Parallel streams make a CPU pass about ten times faster than one stream; the burn-in
# gives each stream the preceding text as context, so the figure matches a single
# continuous pass closely (see bench/README.md for the measured difference).
DEFAULT_STREAMS = 16
DEFAULT_BURN_IN = 256


@dataclass
class EvalResult:
    loss: float  # nats per character
    chars: int

    @property
    def bpc(self) -> float:
        return self.loss / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


@torch.no_grad()
def evaluate(
    model: CharRNN,
    tokens: torch.Tensor,
    device: torch.device,
    streams: int = DEFAULT_STREAMS,
    burn_in: int = DEFAULT_BURN_IN,
    chunk: int = 512,
    on_progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Mean loss over every target of `tokens` (token 1 to the end), in nats per char."""
    if len(tokens) < 2:
        raise ValueError("need at least two characters to evaluate")
    spans = eval_streams(tokens, streams, burn_in)
    length = max(end - 1 - ctx for ctx, _, end in spans)
    inputs = torch.zeros(len(spans), length, dtype=torch.long)
    targets = torch.zeros(len(spans), length, dtype=torch.long)
    scored = torch.zeros(len(spans), length, dtype=torch.bool)
    for row, (ctx, score, end) in enumerate(spans):
        n = end - 1 - ctx
        inputs[row, :n] = tokens[ctx : end - 1]
        targets[row, :n] = tokens[ctx + 1 : end]
        scored[row, score - 1 - ctx : n] = True

    was_training = model.training
    model.eval()
    state = model.initial_state(len(spans), device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for start in range(0, length, chunk):
            x = inputs[:, start : start + chunk].to(device)
            y = targets[:, start : start + chunk].to(device)
            mask = scored[:, start : start + chunk].to(device)
            with autocast(device):
                logits, state = model(x, state)
            losses = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
            total += (losses * mask.reshape(-1)).sum(dtype=torch.float64)
            if on_progress is not None:
                on_progress(int(mask.sum()))
    finally:
        model.train(was_training)
    chars = int(scored.sum())
    return EvalResult(loss=total.item() / chars, chars=chars)
