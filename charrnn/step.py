"""Generation one character at a time over a trained CharRNN's weights.

Calling `nn.LSTM` once per character costs milliseconds of per-call set-up on a CPU, so
generation steps the cells by hand. A step of one stream is bound by reading the weights
(about 3 MB for the default 2x256 LSTM), so the LSTM step keeps that read as lean as it
can be, measured on a 2-core CPU (bench/speed.py):

- layer 0's input projection is a per-character table (lookup, projection and both biases);
- every other layer is one product of [input, hidden] with stacked weights, not two;
- for one stream that product is split column-wise into two halves of one batched product,
  which ATen runs on two threads (one thread cannot stream the weights fast enough);
- all buffers are allocated once and the hidden states of all layers sit side by side in
  one row, so layer l reads its input and its own previous state as one slice.

GRU and tanh-RNN models step through ATen's fused cells (`torch.gru_cell`, ...).
"""

from __future__ import annotations

import torch

from .model import CharRNN, State

_ATEN_CELLS = {"gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}


def step_cell(model: CharRNN, batch: int) -> LSTMStep | ATenStep:
    """The fastest stepper for this model's cell, for `batch` streams."""
    return LSTMStep(model, batch) if model.config.cell == "lstm" else ATenStep(model, batch)


def _input_table(model: CharRNN, fold_b_hh: bool = True) -> torch.Tensor:
    """Layer 0's gate inputs for every character, [vocab, gates]: the embedding lookup, the
    input projection and its bias at once, plus the recurrent bias where the cell allows."""
    core = model.core
    table = model.embed.weight.float() @ core.weight_ih_l0.float().t() + core.bias_ih_l0.float()
    return table + core.bias_hh_l0.float() if fold_b_hh else table


def _gates_ifog(weight: torch.Tensor, hidden: int) -> torch.Tensor:
    """PyTorch's gate order (i, f, g, o) along dim 0 -> (i, f, o, g): the three sigmoid
    gates become one contiguous block."""
    i, f, g, o = weight.split(hidden, 0)
    return torch.cat([i, f, o, g], 0)


class LSTMStep:
    """An LSTM stepped one character at a time; holds the state of `batch` streams."""

    def __init__(self, model: CharRNN, batch: int):
        cfg = model.config
        hidden, layers, width = cfg.hidden, cfg.layers, 4 * cfg.hidden
        # Splitting pays only when one thread cannot saturate memory: a single stream.
        self.split = 2 if batch == 1 and torch.get_num_threads() > 1 else 1
        self.batch, self.layers, self.hidden = batch, layers, hidden
        core = model.core

        def stacked(weight: torch.Tensor) -> torch.Tensor:  # [gates, in] -> [split, in, gates/split]
            w = _gates_ifog(weight.float(), hidden).t()
            return w.reshape(w.size(0), self.split, width // self.split).permute(1, 0, 2).contiguous()

        with torch.no_grad():
            self.table = _gates_ifog(_input_table(model).t(), hidden).t().contiguous()  # [vocab, gates]
            # One view per character, indexed in Python: no tensor operation per character.
            self.table_rows = list(self.table.view(-1, self.split, 1, width // self.split).unbind(0))
            self.weights = [stacked(core.weight_hh_l0)]
            self.biases: list[torch.Tensor | None] = [None]
            for layer in range(1, layers):
                both = torch.cat([getattr(core, f"weight_ih_l{layer}"), getattr(core, f"weight_hh_l{layer}")], 1)
                self.weights.append(stacked(both))
                bias = getattr(core, f"bias_ih_l{layer}") + getattr(core, f"bias_hh_l{layer}")
                self.biases.append(_gates_ifog(bias.float(), hidden).view(self.split, 1, width // self.split))
            self.head_w = model.head.weight.float().t().contiguous()
            self.head_b = model.head.bias.float().clone()

        self.hs = torch.zeros(batch, layers * hidden)  # h of layer 0, 1, ... side by side
        self.cs = torch.zeros(layers, batch, hidden)
        self.cells = list(self.cs.unbind(0))
        self.gates = torch.empty(self.split, batch, width // self.split)
        flat = self.gates.view(batch, width)  # split > 1 only for one row, so this is a view
        self.sigmoid_block, self.cell_in = flat[:, : 3 * hidden], flat[:, 3 * hidden :]
        self.in_gate, self.forget_gate, self.out_gate = flat[:, :hidden], flat[:, hidden : 2 * hidden], \
            flat[:, 2 * hidden : 3 * hidden]
        self.scratch = torch.empty(batch, hidden)
        self.logits = torch.empty(batch, cfg.vocab_size)

        def rows(lo: int, hi: int) -> torch.Tensor:  # a slice of hs, as the product's left operand
            return self.hs[:, lo:hi].unsqueeze(0).expand(self.split, batch, hi - lo)

        self.inputs = [rows(0, hidden)] + [rows((layer - 1) * hidden, (layer + 1) * hidden)
                                           for layer in range(1, layers)]
        self.gates_out = self.gates
        self.product = torch.baddbmm
        if self.split == 1:  # plain 2-D operands: addmm beats a one-batch baddbmm at 64 rows (measured)
            self.product = torch.addmm
            self.table_rows = [row[0] for row in self.table_rows]
            self.weights = [w[0] for w in self.weights]
            self.biases = [b if b is None else b[0] for b in self.biases]
            self.inputs = [x[0] for x in self.inputs]
            self.gates_out = self.gates[0]
        self.outputs = [self.hs[:, layer * hidden : (layer + 1) * hidden] for layer in range(layers)]

    def load(self, state: State) -> None:
        """Takes the model's state ([layers, batch, hidden] h and c)."""
        self.hs.view(self.batch, self.layers, self.hidden).copy_(state[0].transpose(0, 1))
        self.cs.copy_(state[1])

    def state(self) -> State:
        return self.hs.view(self.batch, self.layers, self.hidden).transpose(0, 1).clone(), self.cs.clone()

    def step(self, ids: list[int]) -> torch.Tensor:
        """The current character of each stream -> logits [batch, vocab].

        The logits are a buffer that the next step overwrites; callers may scribble on it.
        """
        if self.batch == 1:
            x_gates = self.table_rows[ids[0]]
        else:
            x_gates = self.table.index_select(0, torch.tensor(ids))  # batch > 1 never splits
        for layer in range(self.layers):
            self.product(x_gates if layer == 0 else self.biases[layer], self.inputs[layer], self.weights[layer],
                         out=self.gates_out)
            self.sigmoid_block.sigmoid_()
            self.cell_in.tanh_()
            c = self.cells[layer]
            c.mul_(self.forget_gate).addcmul_(self.in_gate, self.cell_in)
            torch.mul(self.out_gate, torch.tanh(c, out=self.scratch), out=self.outputs[layer])
        return torch.addmm(self.head_b, self.outputs[-1], self.head_w, out=self.logits)


class ATenStep:
    """A GRU or tanh RNN stepped through ATen's fused cells, one call per layer.

    Layer 0's input projection is folded into a per-character table; the table rows reach
    the cell as its input weights against an identity input, so the cell adds them without
    a projection of its own.
    """

    def __init__(self, model: CharRNN, batch: int):
        cfg = model.config
        self.cell_fn = _ATEN_CELLS[cfg.cell]
        self.batch = batch
        core = model.core
        with torch.no_grad():
            # The GRU applies its reset gate to the recurrent half alone, so b_hh stays there.
            self.fold_b_hh0 = cfg.cell != "gru"
            self.table = _input_table(model, self.fold_b_hh0).contiguous()
            self.table_columns = self.table.unsqueeze(2)  # [vocab, gates, 1]: one row as input weights
            self.weights = [
                tuple(getattr(core, f"{name}_l{layer}").float().contiguous()
                      for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                for layer in range(cfg.layers)
            ]
            self.head_w_t = model.head.weight.float().contiguous().t()
            self.head_b = model.head.bias.float().contiguous()
        self.eye = torch.eye(batch)
        self.hs = [torch.zeros(batch, cfg.hidden) for _ in range(cfg.layers)]

    def load(self, state: State) -> None:
        self.hs = [h.float().contiguous() for h in state[0]]

    def state(self) -> State:
        return (torch.stack(self.hs),)

    def step(self, ids: list[int]) -> torch.Tensor:
        # [gates, batch]: the "input weights" that the identity input selects.
        x_gates = self.table_columns[ids[0]] if self.batch == 1 else self.table[torch.tensor(ids)].t()
        x = self.eye
        for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.weights):
            if layer == 0:
                x = self.cell_fn(x, self.hs[0], x_gates, w_hh, None, None if self.fold_b_hh0 else b_hh)
            else:
                x = self.cell_fn(x, self.hs[layer], w_ih, w_hh, b_ih, b_hh)
            self.hs[layer] = x
        return torch.addmm(self.head_b, x, self.head_w_t)
