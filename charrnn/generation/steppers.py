"""Generation one character at a time over a trained CharRNN's weights.

Calling `nn.LSTM` once per character costs milliseconds of per-call set-up on a CPU, so
generation steps the cells by hand. One LSTM stream steps through the C function of
`native` when it can be built (one call per character); otherwise, and for several
streams, through eager tensor operations. A step of one stream is bound by reading the
weights (about 3 MB for the default 2x256 LSTM), so the eager step keeps that read as lean
as it can be, measured on a 2-core CPU (bench/speed.py):

- layer 0's input projection is a per-character table (lookup, projection and both biases);
- every other layer is one product of [input, hidden] with stacked weights, not two;
- for one stream that product is split column-wise into two halves of one batched product,
  which ATen runs on two threads (one thread cannot stream the weights fast enough);
- all buffers are allocated once and the hidden states of all layers sit side by side in
  one row, so layer l reads its input and its own previous state as one slice.

GRU and tanh-RNN models step through ATen's fused cells (`torch.gru_cell`, ...).
"""

from __future__ import annotations

import ctypes

import torch

from ..model import CharRNN, State
from ..native import abi
from ..native import build as native
from ..native.layouts import lstm_sampling_weights, sampling_table, step_blocks, step_head

_ATEN_CELLS = {"gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}


def step_cell(model: CharRNN, batch: int) -> NativeLSTMStep | LSTMStep | ATenStep:
    """The fastest stepper for this model's cell, for `batch` streams."""
    if model.config.cell != "lstm":
        return ATenStep(model, batch)
    library = native.library()
    if library is not None and batch == 1 and model.config.hidden % abi.STEP_BLOCK == 0:
        return NativeLSTMStep(model, library)
    return LSTMStep(model, batch, library)


class LSTMStep:
    """An LSTM stepped one character at a time; holds the state of `batch` streams."""

    def __init__(self, model: CharRNN, batch: int, library: ctypes.CDLL | None = None):
        """With `library` (native's), each layer's gates are one C call instead of six
        tensor operations."""
        cfg = model.config
        hidden, layers, width = cfg.hidden, cfg.layers, 4 * cfg.hidden
        # Splitting pays only when one thread cannot saturate memory: a single stream.
        self.split = 2 if batch == 1 and torch.get_num_threads() > 1 else 1
        self.batch, self.layers, self.hidden = batch, layers, hidden

        def stacked(weight: torch.Tensor) -> torch.Tensor:  # [gates, in] -> [split, in, gates/split]
            w = weight.t()
            return w.reshape(w.size(0), self.split, width // self.split).permute(1, 0, 2).contiguous()

        with torch.no_grad():
            self.table, weights, biases = lstm_sampling_weights(model)
            # One view per character, indexed in Python: no tensor operation per character.
            self.table_rows = list(self.table.view(-1, self.split, 1, width // self.split).unbind(0))
            self.weights = [stacked(w) for w in weights]
            self.biases = [b if b is None else b.view(self.split, 1, width // self.split) for b in biases]
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
        self.gates_call = None if library is None else library.charrnn_lstm_gates
        if self.gates_call is not None:
            # The gates buffer is contiguous [batch, 4H] when viewed flat; c and h rows as laid out above.
            self.gates_args = [(batch, hidden, native.threads(batch), self.gates.data_ptr(),
                                self.cells[layer].data_ptr(), self.outputs[layer].data_ptr(), layers * hidden)
                               for layer in range(layers)]

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
            if self.gates_call is not None:
                self.gates_call(*self.gates_args[layer])
                continue
            self.sigmoid_block.sigmoid_()
            self.cell_in.tanh_()
            c = self.cells[layer]
            c.mul_(self.forget_gate).addcmul_(self.in_gate, self.cell_in)
            torch.mul(self.out_gate, torch.tanh(c, out=self.scratch), out=self.outputs[layer])
        return torch.addmm(self.head_b, self.outputs[-1], self.head_w, out=self.logits)


class NativeLSTMStep:
    """One LSTM stream stepped by one call into lstm_step.c per character.

    The weights are packed once into the blocked layout that the C step reads (see its
    header); h is double-buffered and the buffers swap roles after every step.
    """

    def __init__(self, model: CharRNN, library: ctypes.CDLL):
        cfg = model.config
        hidden, layers, vocab = cfg.hidden, cfg.layers, cfg.vocab_size
        if hidden % abi.STEP_BLOCK:
            raise ValueError(f"the C step needs hidden to be a multiple of {abi.STEP_BLOCK}")
        self.layers, self.hidden = layers, hidden
        padded_vocab = -(-vocab // abi.STEP_BLOCK) * abi.STEP_BLOCK

        with torch.no_grad():
            self.table, weights, biases = lstm_sampling_weights(model)
            self.weights = [step_blocks(w, hidden) for w in weights]
            self.biases = [torch.zeros(0) if b is None else b for b in biases]  # the C step never reads entry 0
            self.head_w, self.head_b = step_head(model.head.weight, model.head.bias, padded_vocab)

        self.h = [torch.zeros(layers * hidden), torch.zeros(layers * hidden)]  # roles swap every step
        self.c = torch.zeros(layers * hidden)
        self.padded_logits = torch.zeros(padded_vocab)
        self.logits = self.padded_logits[:vocab].view(1, vocab)
        pointers = ctypes.c_void_p * layers
        self.weight_ptrs = pointers(*(w.data_ptr() for w in self.weights))  # kept alive with the tensors
        self.bias_ptrs = pointers(*(b.data_ptr() for b in self.biases))
        self.native_model = abi.LstmStepStruct(
            layers=layers, hidden=hidden, vocab=vocab, padded_vocab=padded_vocab,
            threads=native.threads(hidden // abi.STEP_BLOCK),
            table=self.table.data_ptr(), weights=self.weight_ptrs, biases=self.bias_ptrs,
            head_w=self.head_w.data_ptr(), head_b=self.head_b.data_ptr(),
            h=(ctypes.c_void_p * 2)(self.h[0].data_ptr(), self.h[1].data_ptr()),
            c=self.c.data_ptr(), logits=self.padded_logits.data_ptr())
        self.native_ref = ctypes.byref(self.native_model)
        self.call = library.charrnn_lstm_step
        self.vocab = vocab
        self.current = 0  # which h buffer holds the current h

    def load(self, state: State) -> None:
        """Takes the model's state ([layers, 1, hidden] h and c)."""
        self.h[self.current].copy_(state[0].reshape(-1))
        self.c.copy_(state[1].reshape(-1))

    def state(self) -> State:
        shape = (self.layers, 1, self.hidden)
        return self.h[self.current].view(shape).clone(), self.c.view(shape).clone()

    def step(self, ids: list[int]) -> torch.Tensor:
        """The current character -> logits [1, vocab], a buffer that the next step overwrites."""
        self._call(ids[0], None, 0.0)
        return self.logits

    def step_and_draw(self, char_id: int, noise: torch.Tensor, scale: float) -> int:
        """Steps, then draws argmax(logits + scale * noise) as `Chooser` would; noise is a
        contiguous float32 row of vocab values."""
        return self._call(char_id, noise.data_ptr(), scale)

    def _call(self, char_id: int, noise: int | None, scale: float) -> int:
        if not 0 <= char_id < self.vocab:  # the C step indexes its table with it
            raise IndexError(f"character id {char_id} outside the vocabulary of {self.vocab}")
        drawn = self.call(self.native_ref, char_id, self.current, noise, scale)
        self.current ^= 1
        return drawn


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
            self.table = sampling_table(model, self.fold_b_hh0).contiguous()
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
