"""The character model: an input lookup, a stacked recurrent core, a linear head.

The lookup table is the one-hot input encoding written cheaply: a one-hot vector times
a weight matrix selects one column, which is what `nn.Embedding` does. The core is the
fused `nn.LSTM`/`nn.GRU`/`nn.RNN` (cuDNN on a GPU) for training and evaluation, except that
an LSTM trains on a CPU through a C recurrence (native/recurrence.py) where the Trainer found
one (faster, the same function); generation steps the same weights one character at a time
(generation/steppers.py).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from .config import ModelConfig
from .training.dropout import dropout

if TYPE_CHECKING:
    from .native.recurrence import Kernel

# The recurrent state: (h, c) for an LSTM, h alone for a GRU or a tanh RNN,
# each shaped [layers, batch, hidden].
State = tuple[torch.Tensor, ...]


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.vocab_size < 1:
            raise ValueError("a model needs a vocabulary of at least one character")
        self.config = config
        core = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[config.cell]
        self.embed = nn.Embedding(config.vocab_size, config.hidden)
        self.core = core(
            input_size=config.hidden,
            hidden_size=config.hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Linear(config.hidden, config.vocab_size)
        self.recurrent_weight_names = [f"weight_hh_l{k}" for k in range(config.layers)]
        # A C recurrence (native/recurrence.py) that training steps take instead of nn.LSTM, chosen
        # once by the Trainer for its device, precision and batch; None: the fused core always.
        self.recurrence: Kernel | None = None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        c = self.config
        zeros = torch.zeros(c.layers, batch, c.hidden, device=device)
        return (zeros, zeros.clone()) if c.cell == "lstm" else (zeros,)

    def forward(self, ids: torch.Tensor, state: State | None = None,
                resets: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """ids [batch, time] -> logits [batch, time, vocab], new state.

        `resets` [batch, time] bool marks the inputs that start a document (several corpus
        files joined): those rows' state is zeroed before the input is read, so neither values
        nor gradients cross into the next document. The core then runs once per segment
        between reset columns; a window without any (most, when documents are long) runs as
        one call. A CPU mask spares a GPU a sync to find its columns.
        """
        native_core = self.uses_recurrence_kernel(ids)
        # Drawn once per window, so every segment of it reads the same dropped weights.
        dropped = self.training and self.config.weight_drop > 0
        weights = self._core_weights() if native_core or dropped else None
        columns = [] if resets is None else resets.any(0).nonzero().flatten().tolist()
        if columns:
            out, new_state = self._recur_segments(ids, state, resets, columns, native_core, weights)
        else:
            out, new_state = self._recur(ids, state, native_core, weights)
        logits = self.head(dropout(out, self.config.dropout, self.training))
        return (logits.transpose(0, 1) if native_core else logits), new_state

    def _recur(self, ids: torch.Tensor, state: State | None, native_core: bool,
               weights: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, State]:
        """The core over ids [batch, time]: its outputs (time-major on the C path, else
        batch-first) and the new state."""
        if native_core:
            # Time-major inside: each time step's rows are then one contiguous block. The first
            # layer looks its inputs' projections up by id rather than embed and project them.
            return self.recurrence.run(self.core, weights, self.embed.weight, state, self.config.dropout,
                                       self.training, ids=ids.t())
        x = self.embed(ids)
        if state is None:
            args: tuple = (x,)
        elif self.config.cell == "lstm":
            args = (x, (state[0], state[1]))
        else:
            args = (x, state[0])
        if weights is not None:
            out, new = self._core_with_dropped_weights(args, weights)
        else:
            out, new = self.core(*args)
        return out, tuple(new) if isinstance(new, tuple) else (new,)

    def _recur_segments(self, ids: torch.Tensor, state: State | None, resets: torch.Tensor, columns: list[int],
                        native_core: bool, weights: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, State]:
        """`_recur` over the segments between reset columns, zeroing the rows that reset at each
        segment's start (masked_fill: no gradient flows back through a zeroed row)."""
        if state is None:
            state = self.initial_state(ids.size(0), ids.device)
        bounds = sorted({0, *columns}) + [ids.size(1)]
        outs = []
        for start, end in zip(bounds, bounds[1:]):
            if start in columns:
                zero = resets[:, start].to(ids.device, non_blocking=True)[None, :, None]
                state = tuple(s.masked_fill(zero, 0.0) for s in state)
            out, state = self._recur(ids[:, start:end], state, native_core, weights)
            outs.append(out)
        return torch.cat(outs, dim=0 if native_core else 1), state

    def uses_recurrence_kernel(self, ids: torch.Tensor) -> bool:
        """Whether a forward pass on `ids` runs the C recurrence (`self.recurrence`) instead of
        `nn.LSTM`: in training, with gradients, on a batch whose rows it fits."""
        return (self.recurrence is not None and self.training and torch.is_grad_enabled()
                and self.recurrence.fits(ids.size(0)))

    def _core_weights(self) -> dict[str, torch.Tensor]:
        """The core's weights by name; in training with weight drop, the hidden-to-hidden ones
        masked (inverted dropout keeps their expectation, so evaluation uses them as they are)."""
        weights = dict(self.core.named_parameters())
        if self.training and self.config.weight_drop > 0:
            for name in self.recurrent_weight_names:
                weights[name] = F.dropout(weights[name], self.config.weight_drop)
        return weights

    def _core_with_dropped_weights(self, args: tuple, weights: dict[str, torch.Tensor]) -> tuple:
        # The masked matrices (`_core_weights`) stand in for the parameters for this one
        # call; gradients flow through the mask to the parameters.
        with warnings.catch_warnings():
            # cuDNN copies weights that are not in its flat buffer, which is the point here.
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
            return functional_call(self.core, weights, args)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block (dropout off), the caller's mode back after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def input_table(embedding: torch.Tensor, w_ih: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The first layer's input projection of every symbol, [vocab, gates] in `dtype` (no bias):
    an input is a row of the embedding, so its projection is a row of this table. Sampling looks
    each character's gate inputs up in it, and so does training through the C recurrence, which
    spares it the first layer's three largest products (see docs/experiments.md, "First-layer
    lookup")."""
    return torch.mm(embedding.to(dtype), w_ih.to(dtype).t())


def detach_state(state: State) -> State:
    return tuple(s.detach() for s in state)


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats per character."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1).long())
