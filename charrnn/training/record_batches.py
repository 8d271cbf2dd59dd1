"""Batches of records for training: whole records, like with like.

Each epoch shuffles the training records (from the seed and the epoch), sorts each run of a few
dozen batches by length and cuts it into batches of about `batch_size * seq_len` tokens, so
that padding stays small and no gradient crosses a record. Every record starts from a zero
state, so nothing is carried from one to the next.
"""

from __future__ import annotations

import random

import torch

from ..errors import CharrnnError
from ..evaluate import evaluate_records
from ..model import CharRNN
from ..text.records import Records, make_batch, plan_batches, record_hashes, seeded_split
from .batching import Position


class RecordBatcher:
    """Batches of whole records, a fresh order every epoch (from the seed and the epoch)."""

    def __init__(self, records: Records, tokens_per_batch: int, seed: int):
        if len(records) == 0:
            raise ValueError("no records to train on")
        self.records = records
        self.tokens_per_batch = tokens_per_batch
        self.seed = seed
        self.lengths = records.lengths.tolist()
        self.position = Position()
        self.resets: torch.Tensor | None = None  # records never start mid-batch: the state is fresh
        self._epoch_plan = (-1, [])
        self.windows_per_epoch = len(self._plan(0))

    def _plan(self, epoch: int) -> list[list[int]]:
        if self._epoch_plan[0] != epoch:
            order = list(range(len(self.records)))
            random.Random(f"charrnn-records:{self.seed}:{epoch}").shuffle(order)
            batches = plan_batches(self.lengths, self.tokens_per_batch, order)
            random.Random(f"charrnn-record-batches:{self.seed}:{epoch}").shuffle(batches)
            self._epoch_plan = (epoch, batches)
        return self._epoch_plan[1]

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """The next batch (make_batch's inputs and targets), and whether it starts an epoch."""
        pos = self.position
        if pos.window >= len(self._plan(pos.epoch)):
            pos.epoch += 1
            pos.window = 0
        batch = self._plan(pos.epoch)[pos.window]
        starts_epoch = pos.window == 0
        pos.window += 1
        x, y = make_batch(self.records, batch)
        return x, y, starts_epoch

    @property
    def epoch_fraction(self) -> float:
        return self.position.epoch + self.position.window / max(1, len(self._plan(self.position.epoch)))


class RecordData:
    """A record run's data: batches of its training records and its validation records."""

    fresh_state = True  # every record starts from a zero state

    def __init__(self, records: Records, val_frac: float, tokens_per_batch: int, seed: int, separator: str):
        train, val = seeded_split(len(records), val_frac, seed)
        if len(train) == 0 or len(val) == 0:
            raise CharrnnError(f"{len(records)} records are too few: training and validation each need one "
                               f"(--val-frac {val_frac})")
        self.train_records, self.val_records = records.subset(train), records.subset(val)
        self.validation_chars = int(self.val_records.lengths.sum()) + len(self.val_records)  # with each END
        self.batcher = RecordBatcher(self.train_records, tokens_per_batch, seed)
        self.separator = separator
        self.count = len(records)
        self.hashes = record_hashes(records.texts())  # of train and validation: every record the user gave

    def validation_loss(self, model: CharRNN, device: torch.device, world: object,
                        precision: torch.dtype | None) -> float:
        return evaluate_records(model, self.val_records, device, precision=precision).loss

    def checkpoint_fields(self) -> dict:
        """What a record model's checkpoint holds beside the stream format's fields."""
        return {"records": {"separator": self.separator, "count": self.count}, "record_hashes": self.hashes}
