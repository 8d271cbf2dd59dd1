"""The character model: an input lookup, a stacked recurrent core, a linear head.

The lookup table is the one-hot input encoding written cheaply: a one-hot vector times
a weight matrix selects one column, which is what `nn.Embedding` does. The core is the
fused `nn.LSTM`/`nn.GRU`/`nn.RNN` (cuDNN on a GPU) for training and evaluation.

For generation, `StepCell` runs the same weights one character at a time with a hand
written cell: calling `nn.LSTM` once per character costs milliseconds of per-call set-up
on a CPU, whereas one fused matrix product per layer costs microseconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

CELLS = ("lstm", "gru", "rnn")

# The recurrent state: (h, c) for an LSTM, h alone for a GRU or a tanh RNN,
# each shaped [layers, batch, hidden].
State = tuple[torch.Tensor, ...]


@dataclass
class ModelConfig:
    vocab_size: int
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 256
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        if self.vocab_size < 1 or self.layers < 1 or self.hidden < 1:
            raise ValueError("vocab_size, layers and hidden must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
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
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        c = self.config
        zeros = torch.zeros(c.layers, batch, c.hidden, device=device)
        return (zeros, zeros.clone()) if c.cell == "lstm" else (zeros,)

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids [batch, time] -> logits [batch, time, vocab], new state."""
        x = self.embed(ids)
        if state is None:
            out, new = self.core(x)
        elif self.config.cell == "lstm":
            out, new = self.core(x, (state[0], state[1]))
        else:
            out, new = self.core(x, state[0])
        new_state = tuple(new) if isinstance(new, tuple) else (new,)
        return self.head(self.drop(out)), new_state


def detach_state(state: State) -> State:
    return tuple(s.detach() for s in state)


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats per character."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1).long())


# Per-layer recurrent state for StepCell: (h, c) or (h,), each [batch, hidden].
LayerStates = list[tuple[torch.Tensor, ...]]

_ATEN_CELLS = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}


class StepCell:
    """One-character-at-a-time inference over a trained CharRNN's weights.

    Each layer is one call of ATen's fused cell (`torch.lstm_cell` and kin), so a step
    costs a handful of calls instead of `nn.LSTM`'s per-call set-up. Layer 0's input
    projection is folded into a per-character table (lookup, projection and biases at
    once); the table rows reach the cell as its input weights against an identity input,
    so the cell adds them without a projection of its own.
    """

    def __init__(self, model: CharRNN):
        cfg = model.config
        self.cell_fn = _ATEN_CELLS[cfg.cell]
        self.is_lstm = cfg.cell == "lstm"
        core = model.core
        with torch.no_grad():
            w_ih0 = core.weight_ih_l0.float()
            b_ih0, b_hh0 = core.bias_ih_l0.float(), core.bias_hh_l0.float()
            table = model.embed.weight.float() @ w_ih0.t() + b_ih0
            # The GRU applies its reset gate to the recurrent half alone, so b_hh stays there.
            self.fold_b_hh0 = cfg.cell != "gru"
            self.table = (table + b_hh0 if self.fold_b_hh0 else table).contiguous()
            self.table_columns = self.table.unsqueeze(2)  # [vocab, gates, 1]: one row as input weights
            self.weights = [
                tuple(getattr(core, f"{name}_l{layer}").float().contiguous()
                      for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                for layer in range(cfg.layers)
            ]
            self.head_w_t = model.head.weight.float().contiguous().t()
            self.head_b = model.head.bias.float().contiguous()
        self._eye: torch.Tensor | None = None

    def layer_states(self, state: State) -> LayerStates:
        """Model state ([layers, batch, hidden] each) to per-layer state."""
        return [tuple(s[layer].float().contiguous() for s in state) for layer in range(state[0].size(0))]

    def model_state(self, states: LayerStates) -> State:
        return tuple(torch.stack([s[k] for s in states]) for k in range(len(states[0])))

    def step(self, ids: list[int], states: LayerStates) -> tuple[torch.Tensor, LayerStates]:
        """The current character of each stream -> logits [batch, vocab], next per-layer state.

        Plain ints rather than a tensor: one stream then indexes its table column as a
        view, which saves building a tensor per character.
        """
        batch = len(ids)
        if self._eye is None or self._eye.size(0) != batch:
            self._eye = torch.eye(batch)
        # [gates, batch]: the "input weights" that the identity input selects.
        gates_in = self.table_columns[ids[0]] if batch == 1 else self.table[torch.tensor(ids)].t()
        new_states: LayerStates = []
        x = self._eye
        for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.weights):
            hx = states[layer] if self.is_lstm else states[layer][0]
            if layer == 0:
                out = self.cell_fn(x, hx, gates_in, w_hh, None, None if self.fold_b_hh0 else b_hh)
            else:
                out = self.cell_fn(x, hx, w_ih, w_hh, b_ih, b_hh)
            state = tuple(out) if self.is_lstm else (out,)
            new_states.append(state)
            x = state[0]
        return torch.addmm(self.head_b, x, self.head_w_t), new_states
