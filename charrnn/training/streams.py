"""Batching for truncated backpropagation through time.

The training text is split into `batch_size` contiguous streams laid side by side; each
step reads the next `seq_len` characters of every stream, so row b of one batch continues
row b of the previous one and the recurrent state can be carried across steps (as in
char-rnn and torch-rnn).

char-rnn lays the streams out the same way in every epoch, so all of them reach their ends
together and the last one ends where the validation text begins: validation then scores
better at an epoch's end than in its middle, because the model has just read the text that
precedes it (see docs/experiments.md, "Epoch rotation"). Given a seed, each epoch instead
rotates the training text by an offset drawn from the seed and the epoch, so the stream
boundaries, and what is read last, move from one epoch to the next.

A corpus of several files is one text of several documents: each batch then also reports
where a document starts (`StreamBatcher.resets`), and the model zeroes those rows' state there,
so nothing carries from one file into the next, even in the middle of a window.
"""

from __future__ import annotations

import random

import torch

from ..config import EVAL_STREAMS
from ..errors import CharrnnError
from ..evaluate import evaluate
from ..model import CharRNN
from ..text.token_files import as_ids
from .batching import Position
from .distributed import World


def split(tokens: torch.Tensor, val_frac: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The last `val_frac` of the tokens is validation, the rest is training."""
    cut = int(len(tokens) * (1 - val_frac))  # nanoGPT's cut, so validation figures compare
    return tokens[:cut], tokens[cut:]


def min_train_length(batch_size: int, seq_len: int) -> int:
    """Fewest training characters that give every stream one full window plus its target."""
    return batch_size * (seq_len + 1)


def split_for_training(tokens: torch.Tensor, val_frac: float, eval_chars: int | None, batch_size: int,
                       seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training text and the validation text a run reads (at most `eval_chars` of the
    split, 0 or None for all of it); a CharrnnError when either is too short to use."""
    train, val = split(tokens, val_frac)
    if eval_chars:
        val = val[: eval_chars + 1]
    need = min_train_length(batch_size, seq_len)
    if len(train) < need or len(val) < 2:
        raise CharrnnError(
            f"the corpus is too short: {len(tokens):,} characters, but --batch-size {batch_size} "
            f"× (--seq-len {seq_len} + 1) needs {need:,} for training plus a validation split "
            f"of at least 2 (--val-frac {val_frac}); use a longer corpus or smaller sizes"
        )
    return train, val


class StreamBatcher:
    """Windows of `batch_size` streams; `rows` picks this process's share of them.

    Under DistributedDataParallel every rank lays out the same global streams and reads
    its own disjoint rows, so the windows, epochs and position are the same on every
    rank whatever the world size, and a run can resume with a different one.

    With `seed` None every epoch reads the same layout (offset 0); with a seed each epoch
    rotates the text by its own offset (see the module's docstring), the same on every rank.

    `doc_starts` (int64, ascending, from 0) are the first positions of the documents joined in
    `tokens` (starts past its end, in the validation split, are dropped). With two or more,
    `resets` after each `next()` is the batch's [rows, seq_len] bool mask of inputs that start
    a document, or None when the batch has none (and always with one document, whose run is
    today's: the text's end then runs on into its start as before). Positions are taken modulo
    the text's length, so with several documents the wrap back to position 0 resets too.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, seq_len: int, rows: slice = slice(None),
                 seed: int | None = None, doc_starts: torch.Tensor | None = None):
        if len(tokens) < min_train_length(batch_size, seq_len):
            raise ValueError("too few tokens for one window per stream")
        self.tokens = tokens
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        stream_len = len(tokens) // batch_size
        self.stream_starts = (torch.arange(batch_size) * stream_len)[rows]
        self.window_span = torch.arange(seq_len + 1)
        self.windows_per_epoch = (stream_len - 1) // seq_len
        self.position = Position()
        self.doc_starts = _starts_within(doc_starts, len(tokens))
        self.resets: torch.Tensor | None = None

    def epoch_offset(self, epoch: int) -> int:
        """The rotation of the training text for `epoch`: drawn from the seed and the epoch
        alone, so a resumed run and every rank agree without storing or sharing it."""
        if self.seed is None:
            return 0
        return random.Random(f"charrnn-epoch-offset:{self.seed}:{epoch}").randrange(len(self.tokens))

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Inputs and targets [batch, seq_len] (int64), and whether this starts an epoch."""
        pos = self.position
        if pos.window >= self.windows_per_epoch:
            pos.epoch += 1
            pos.window = 0
        starts_epoch = pos.window == 0
        if starts_epoch:
            pos.offset = self.epoch_offset(pos.epoch)
        first = self.stream_starts + (pos.offset + pos.window * self.seq_len)
        # Gathered, not sliced, because a rotated stream may wrap past the text's end; on a
        # memory-mapped corpus only the windows read are ever paged in.
        positions = (first[:, None] + self.window_span) % len(self.tokens)
        chunk = as_ids(self.tokens[positions])
        self.resets = self._resets(positions[:, :-1].contiguous())
        pos.window += 1
        return chunk[:, :-1], chunk[:, 1:], starts_epoch

    def _resets(self, positions: torch.Tensor) -> torch.Tensor | None:
        """Where `positions` [rows, seq_len] are documents' first characters; None if nowhere."""
        starts = self.doc_starts
        if starts is None:
            return None
        at = starts[torch.searchsorted(starts, positions, right=True) - 1]  # starts[0] is 0
        resets = at == positions
        return resets if bool(resets.any()) else None

    @property
    def epoch_fraction(self) -> float:
        """Epochs completed so far, fractional."""
        return self.position.epoch + self.position.window / self.windows_per_epoch


def _starts_within(doc_starts: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """The document starts that fall in the first `length` tokens; None for fewer than two."""
    if doc_starts is None:
        return None
    starts = torch.as_tensor(doc_starts, dtype=torch.int64)
    starts = starts[starts < length]
    if len(starts) < 2:
        return None
    if int(starts[0]) != 0 or not bool((starts[1:] > starts[:-1]).all()):
        raise ValueError("document starts must ascend from 0")
    return starts


class StreamData:
    """A stream run's data: the training text's batches and the validation text.

    Validation reads the joined validation text as one stream and ignores document starts:
    the few characters after a file boundary are scored with the previous file's state, which
    is slightly pessimistic and keeps `evaluate` (shared with `charrnn eval`) one function.
    """

    fresh_state = False  # the state carries from window to window

    def __init__(self, train_tokens: torch.Tensor, val_tokens: torch.Tensor, batch_size: int, seq_len: int,
                 seed: int, rows: slice = slice(None), doc_starts: torch.Tensor | None = None):
        self.batcher = StreamBatcher(train_tokens, batch_size, seq_len, rows, seed=seed, doc_starts=doc_starts)
        self.val_tokens = val_tokens
        self.validation_chars = len(val_tokens)

    def validation_loss(self, model: CharRNN, device: torch.device, world: World,
                        precision: torch.dtype | None) -> float:
        """The validation text's loss, its streams sharded across ranks and summed."""
        streams = max(EVAL_STREAMS, world.size)
        return evaluate(model, self.val_tokens, device, streams=streams, shard=(world.rank, world.size),
                        reduce=world.sum, precision=precision).loss

    def checkpoint_fields(self) -> dict:
        return {}
