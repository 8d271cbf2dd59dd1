"""Loss of a text under a model: a stream model's, read as continuous streams with the state
carried; a record model's, per token over whole records."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .config import EVAL_STREAMS
from .model import CharRNN, evaluating
from .runtime import autocast
from .text.records import PAD_TARGET, Records, make_batch, plan_batches
from .text.token_files import as_ids

DEFAULT_BURN_IN = 256  # the context that warms each stream: see config.EVAL_STREAMS


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


def eval_streams(tokens: torch.Tensor, streams: int, burn_in: int) -> list[tuple[int, int, int]]:
    """Cuts the (input, target) pairs of `tokens` into up to `streams` contiguous spans.

    Returns (context_start, score_start, end) per span: the model reads tokens
    [context_start, end - 1) and is scored on predicting tokens [score_start, end),
    where the first `score_start - context_start` inputs are unscored burn-in so that
    each span starts warm. Every target from token 1 on is scored exactly once.
    """
    n_targets = len(tokens) - 1
    streams = max(1, min(streams, n_targets))
    bounds = [1 + (n_targets * i) // streams for i in range(streams + 1)]
    return [(max(0, bounds[i] - 1 - burn_in), bounds[i], bounds[i + 1]) for i in range(streams)]


def loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The summed cross-entropy in nats of logits [..., vocab] against targets [...], in fp64;
    targets of PAD_TARGET are not scored (padding, burn-in)."""
    losses = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                             ignore_index=PAD_TARGET, reduction="none")
    return losses.sum(dtype=torch.float64)


@torch.no_grad()
def evaluate(
    model: CharRNN,
    tokens: torch.Tensor,
    device: torch.device,
    streams: int = EVAL_STREAMS,
    burn_in: int = DEFAULT_BURN_IN,
    chunk: int = 512,
    on_progress: Callable[[int], None] | None = None,
    shard: tuple[int, int] = (0, 1),
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    precision: torch.dtype | None = None,
) -> EvalResult:
    """Mean loss over every target of `tokens` (token 1 to the end), in nats per char.

    `tokens` may be memory-mapped: each chunk of the streams is gathered as it is needed,
    so memory does not grow with the text. With `shard=(rank, world)` this process runs
    every world-th stream and `reduce` (a sum across processes) combines the totals.
    `precision` is the autocast dtype (runtime.pick_precision); None runs in full precision.
    """
    if len(tokens) < 2:
        raise ValueError("need at least two characters to evaluate")
    rank, world = shard
    spans = eval_streams(tokens, streams, burn_in)[rank::world]
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, characters scored
    if spans:
        with evaluating(model):
            _run_spans(model, tokens, spans, device, chunk, totals, on_progress, precision)
    if reduce is not None:
        totals = reduce(totals)
    loss_sum, chars = totals.tolist()
    return EvalResult(loss=loss_sum / chars if chars else math.nan, chars=int(chars))


def _run_spans(model: CharRNN, tokens: torch.Tensor, spans: list[tuple[int, int, int]], device: torch.device,
               chunk: int, totals: torch.Tensor, on_progress: Callable[[int], None] | None,
               precision: torch.dtype | None) -> None:
    length = max(end - 1 - ctx for ctx, _, end in spans)
    state = model.initial_state(len(spans), device)
    for offset in range(0, length, chunk):
        width = min(chunk, length - offset)
        x = torch.zeros(len(spans), width, dtype=torch.long)
        y = torch.zeros(len(spans), width, dtype=torch.long)
        scored = torch.zeros(len(spans), width, dtype=torch.bool)
        for row, (ctx, score, end) in enumerate(spans):
            # Row reads inputs [ctx, end - 1); input i predicts token i + 1, scored from `score`.
            a, b = ctx + offset, min(ctx + offset + width, end - 1)
            if b > a:
                x[row, : b - a] = as_ids(tokens[a:b])
                y[row, : b - a] = as_ids(tokens[a + 1 : b + 1])
                scored[row, max(0, score - 1 - a) : b - a] = True
        with autocast(device, precision):
            logits, state = model(x.to(device), state)
        totals[0] += loss_sum(logits, y.to(device).masked_fill(~scored.to(device), PAD_TARGET))
        totals[1] += scored.sum(dtype=torch.float64).to(device)
        if on_progress is not None:
            on_progress(int(scored.sum()))


@torch.no_grad()
def evaluate_records(model: CharRNN, records: Records, device: torch.device, tokens_per_batch: int = 4096,
                     precision: torch.dtype | None = None,
                     on_progress: Callable[[int], None] | None = None) -> EvalResult:
    """Mean loss per token over every record's characters and its END (makemore's convention),
    in nats; START is read, never scored."""
    total, count = 0.0, 0
    lengths = records.lengths.tolist()
    order = sorted(range(len(records)), key=lengths.__getitem__)
    with evaluating(model):
        for batch in plan_batches(lengths, tokens_per_batch, order):
            x, y = make_batch(records, batch)
            with autocast(device, precision):
                logits, _ = model(x.to(device))
            scored = int((y != PAD_TARGET).sum())
            total += float(loss_sum(logits, y.to(device)))
            count += scored
            if on_progress is not None:
                on_progress(scored)
    return EvalResult(loss=total / count if count else math.nan, chars=count)
