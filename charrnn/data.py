"""Batching for truncated backpropagation through time.

The training text is split into `batch_size` contiguous streams laid side by side; each
step reads the next `seq_len` characters of every stream, so row b of one batch continues
row b of the previous one and the recurrent state can be carried across steps (as in
char-rnn and torch-rnn).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tokens import as_ids


def split(tokens: torch.Tensor, val_frac: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The last `val_frac` of the tokens is validation, the rest is training."""
    cut = int(len(tokens) * (1 - val_frac))  # nanoGPT's cut, so validation figures compare
    return tokens[:cut], tokens[cut:]


def min_train_length(batch_size: int, seq_len: int) -> int:
    """Fewest training characters that give every stream one full window plus its target."""
    return batch_size * (seq_len + 1)


@dataclass
class Position:
    """Where the batcher is: the epoch (from 0) and the next window within it."""

    epoch: int = 0
    window: int = 0


class StreamBatcher:
    """Windows of `batch_size` streams; `rows` picks this process's share of them.

    Under DistributedDataParallel every rank lays out the same global streams and reads
    its own disjoint rows, so the windows, epochs and position are the same on every
    rank whatever the world size, and a run can resume with a different one.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, seq_len: int, rows: slice = slice(None)):
        if len(tokens) < min_train_length(batch_size, seq_len):
            raise ValueError("too few tokens for one window per stream")
        self.batch_size = batch_size
        self.seq_len = seq_len
        stream_len = len(tokens) // batch_size
        # A view: on a memory-mapped corpus only the windows read are ever paged in.
        self.streams = tokens[: stream_len * batch_size].view(batch_size, stream_len)[rows]
        self.windows_per_epoch = (stream_len - 1) // seq_len
        self.position = Position()

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Inputs and targets [batch, seq_len] (int64), and whether this starts an epoch."""
        pos = self.position
        if pos.window >= self.windows_per_epoch:
            pos.epoch += 1
            pos.window = 0
        starts_epoch = pos.window == 0
        start = pos.window * self.seq_len
        chunk = as_ids(self.streams[:, start : start + self.seq_len + 1])
        pos.window += 1
        return chunk[:, :-1], chunk[:, 1:], starts_epoch

    @property
    def epoch_fraction(self) -> float:
        """Epochs completed so far, fractional."""
        return self.position.epoch + self.position.window / self.windows_per_epoch


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
