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
    hidden: int = 512
    dropout: float = 0.0

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


class StepCell:
    """One-character-at-a-time inference over a trained CharRNN's weights.

    Layer 0's input projection is folded into a per-character table (lookup, then
    projection, then both biases), so each step of layer 0 is one matrix product with the
    recurrent weights. Upper LSTM/RNN layers concatenate [input, h] against stacked
    weights: again one product per layer. The GRU keeps its two products because its
    reset gate multiplies the recurrent half alone.
    """

    def __init__(self, model: CharRNN):
        cfg = model.config
        self.cell = cfg.cell
        self.layers = cfg.layers
        core = model.core
        with torch.no_grad():
            emb = model.embed.weight.float()
            self.w_hh_t: list[torch.Tensor] = []
            self.w_cat_t: list[torch.Tensor | None] = []
            self.w_ih_t: list[torch.Tensor | None] = []
            self.b: list[torch.Tensor] = []
            self.b_hh: list[torch.Tensor] = []
            for layer in range(cfg.layers):
                w_ih = getattr(core, f"weight_ih_l{layer}").float()
                w_hh = getattr(core, f"weight_hh_l{layer}").float()
                b_ih = getattr(core, f"bias_ih_l{layer}").float()
                b_hh = getattr(core, f"bias_hh_l{layer}").float()
                if layer == 0:
                    table = emb @ w_ih.t() + b_ih
                    if cfg.cell != "gru":
                        table = table + b_hh
                    self.table = table.contiguous()
                self.w_hh_t.append(w_hh.t().contiguous())
                self.w_ih_t.append(w_ih.t().contiguous() if layer > 0 else None)
                self.w_cat_t.append(torch.cat([w_ih, w_hh], 1).t().contiguous() if layer > 0 else None)
                self.b.append(b_ih + b_hh if cfg.cell != "gru" else b_ih)
                self.b_hh.append(b_hh)
            self.head_w_t = model.head.weight.float().t().contiguous()
            self.head_b = model.head.bias.float()

    def step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """ids [batch] (long) -> logits [batch, vocab], new state ([layers, batch, hidden] each)."""
        if self.cell == "lstm":
            h_all, c_all = state
            hs, cs = [], []
            x = None
            for layer in range(self.layers):
                h, c = h_all[layer], c_all[layer]
                if layer == 0:
                    gates = torch.addmm(self.table[ids], h, self.w_hh_t[0])
                else:
                    gates = torch.addmm(self.b[layer], torch.cat([x, h], 1), self.w_cat_t[layer])
                i, f, g, o = gates.chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                x = torch.sigmoid(o) * torch.tanh(c)
                hs.append(x)
                cs.append(c)
            new_state: State = (torch.stack(hs), torch.stack(cs))
        elif self.cell == "rnn":
            (h_all,) = state
            hs = []
            x = None
            for layer in range(self.layers):
                h = h_all[layer]
                if layer == 0:
                    pre = torch.addmm(self.table[ids], h, self.w_hh_t[0])
                else:
                    pre = torch.addmm(self.b[layer], torch.cat([x, h], 1), self.w_cat_t[layer])
                x = torch.tanh(pre)
                hs.append(x)
            new_state = (torch.stack(hs),)
        else:  # gru
            (h_all,) = state
            hs = []
            x = None
            for layer in range(self.layers):
                h = h_all[layer]
                gi = self.table[ids] if layer == 0 else torch.addmm(self.b[layer], x, self.w_ih_t[layer])
                gh = torch.addmm(self.b_hh[layer], h, self.w_hh_t[layer])
                i_r, i_z, i_n = gi.chunk(3, 1)
                h_r, h_z, h_n = gh.chunk(3, 1)
                r = torch.sigmoid(i_r + h_r)
                z = torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                x = n + z * (h - n)
                hs.append(x)
            new_state = (torch.stack(hs),)
        logits = torch.addmm(self.head_b, x, self.head_w_t)
        return logits, new_state
