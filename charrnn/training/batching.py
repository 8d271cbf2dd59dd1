"""What the Trainer asks of a run's data, whether streams (training/streams.py) or records
(training/record_batches.py): a batcher with a position that checkpoints store, and the data
object that holds it beside the validation text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..model import CharRNN
from .distributed import World


@dataclass
class Position:
    """Where a batcher is: the epoch (from 0), the next window (batch) within it, and the
    epoch's rotation of the training text (streams; records are shuffled instead, and keep 0)."""

    epoch: int = 0
    window: int = 0
    offset: int = 0


class Batcher(Protocol):
    position: Position
    windows_per_epoch: int
    # After each next(): [rows, seq_len] bool, the inputs that start a document (the model zeroes
    # those rows' state there), or None when the batch has none.
    resets: torch.Tensor | None

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Inputs and targets [rows, width] (int64), and whether this batch starts an epoch."""
        ...

    @property
    def epoch_fraction(self) -> float:
        """Epochs completed so far, fractional."""
        ...


class TrainingData(Protocol):
    batcher: Batcher
    fresh_state: bool  # every batch starts from a zero state (records) or carries it (streams)
    validation_chars: int  # the tokens one validation scores

    def validation_loss(self, model: CharRNN, device: torch.device, world: World,
                        precision: torch.dtype | None) -> float:
        ...

    def checkpoint_fields(self) -> dict:
        """What the checkpoint holds for this kind of data beside the common fields."""
        ...
