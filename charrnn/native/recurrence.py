"""Training a stacked LSTM on a CPU with the recurrence in C, everything else as whole-window
products: in bf16 on the matrix tiles of AMX (lstm_amx.c) or on AVX512-BF16 dot products
(lstm_vector.c), and in fp32 on AVX2 or AVX-512 fused multiply-adds (lstm_vector.c's fp32 build).

`nn.LSTM` on a CPU runs oneDNN's fused LSTM, which in bf16 reaches a small part of the rate
that AMX tiles give to large products, and whose backward pass is slower than its forward
(see docs/experiments.md, "The AMX recurrence"). Only the hidden-to-hidden product has to
wait for the previous time step, so each layer here:

- computes the input projection of the whole window as one product (oneDNN, `torch.mm`)
  before the recurrence, and the input gradient and both weight gradients as one product each
  after it; the first layer, whose inputs are rows of the embedding, instead looks each
  character's projection up in a [vocab, 4 * hidden] table and sums its gradient by
  character in the kernel, which spares it three of those products (see docs/experiments.md,
  "First-layer lookup");
- runs the recurrence itself, forward or backward, in one call to lstm_amx.c: per time step
  a few tile instructions per block of 16 units and the gate arithmetic beside them. Without
  AMX, lstm_vector.c does the same with `vdpbf16ps` in place of the tiles (same arguments,
  same packed weights), and its fp32 build with fused multiply-adds on fp32 weights;
  `choose` picks the library once for a run.

Under bf16 autocast the products are bf16 with fp32 accumulation, as `nn.LSTM`'s are; the
cell and the carried state stay fp32 (the gates kept for the backward pass are fp16). Without
autocast everything is fp32, and only the order of the sums differs from `nn.LSTM`'s (see
docs/experiments.md, "fp32 recurrence"). The Trainer chooses a kernel when it is set up, for
training on a CPU when a library can be had and the shapes fit (batch a multiple of 16, hidden
of 32), and gives it to the model (`CharRNN.recurrence`); everything else runs `nn.LSTM`, and
the tests hold them together.

CHARRNN_LSTM_KERNEL chooses the library: `auto` (the default) takes, for bf16 steps,
lstm_amx.c where it can be had, else lstm_vector.c's bf16 build if AUTO_TAKES_AVX512, and for
fp32 steps lstm_vector.c's fp32 build if AUTO_TAKES_FP32; `amx`, `avx512` and `fp32` only that
one (nn.LSTM for the other precision, and where it cannot be had); `off`, nn.LSTM. Any other
value reads as `auto`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..model import input_table
from ..training.dropout import dropout
from . import abi
from . import build as native
from .layouts import training_columns

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each [layers, batch, hidden]
KERNEL_ENV = "CHARRNN_LSTM_KERNEL"  # auto, amx, avx512, fp32 or off; see the module docstring
AUTO_TAKES_AVX512 = True  # whether `auto` takes lstm_vector.c's bf16 build where AMX cannot be had
AUTO_TAKES_FP32 = True  # whether `auto` takes lstm_vector.c's fp32 build for fp32 steps


@dataclass(frozen=True)
class Kernel:
    """A training library's two entry points (lstm_amx.c's arguments, in every library) and the
    dtype of the values they take and give: chosen once when training is set up (`choose`) and
    kept on the model (`CharRNN.recurrence`), which runs its training steps through `run`."""

    source: str
    forward: Callable[..., int]
    backward: Callable[..., int]
    dtype: torch.dtype

    def fits(self, rows: int) -> bool:
        """Whether a batch of `rows` can run through it (rows of a tile; record batches vary)."""
        return rows % abi.BATCH_MULTIPLE == 0

    def run(self, core: nn.LSTM, weights: dict[str, torch.Tensor], table: torch.Tensor, state: LSTMState | None,
            p_dropout: float, training: bool, ids: torch.Tensor) -> tuple[torch.Tensor, LSTMState]:
        """`stacked_lstm` through this kernel, the first layer looking its inputs up by id."""
        return stacked_lstm(self, core, weights, table, state, p_dropout, training, ids=ids)

    def __deepcopy__(self, memo: dict) -> Kernel:
        return self  # a handle on a loaded library: every copy of a model (the average) shares it


def kernel(dtype: torch.dtype | None) -> Kernel | None:
    """The recurrence a training step whose values are `dtype` takes now (CHARRNN_LSTM_KERNEL),
    or None for nn.LSTM."""
    choice = os.environ.get(KERNEL_ENV, "auto").strip().lower()
    if choice not in ("amx", "avx512", "fp32", "off"):
        choice = "auto"
    if dtype == torch.float32 and (choice == "fp32" or choice == "auto" and AUTO_TAKES_FP32):
        if (lib := native.fp32_library()) is not None:
            return Kernel("lstm_vector.c (fp32)", lib.charrnn_vector_lstm_forward, lib.charrnn_vector_lstm_backward,
                          torch.float32)
    if dtype != torch.bfloat16:
        return None
    if choice in ("auto", "amx") and (lib := native.amx_library()) is not None:
        return Kernel("lstm_amx.c", lib.charrnn_amx_lstm_forward, lib.charrnn_amx_lstm_backward, torch.bfloat16)
    if choice == "avx512" or choice == "auto" and AUTO_TAKES_AVX512:
        if (lib := native.avx512_library()) is not None:
            return Kernel("lstm_vector.c (bf16)", lib.charrnn_vector_lstm_forward, lib.charrnn_vector_lstm_backward,
                          torch.bfloat16)
    return None


def kernel_for(batch: int, hidden: int, device_type: str, dtype: torch.dtype | None) -> Kernel | None:
    """The library a training step of this shape with values in `dtype` takes, or None for nn.LSTM."""
    if device_type != "cpu" or batch % abi.BATCH_MULTIPLE or hidden % abi.HIDDEN_MULTIPLE:
        return None
    return kernel(dtype)


def choose(cell: str, hidden: int, rows: int | None, device_type: str, dtype: torch.dtype) -> Kernel | None:
    """The kernel a training run takes, chosen once when it is set up: an LSTM's on a CPU with a
    library for its step dtype (`dtype`: bf16 under bf16 autocast, else fp32) and shapes that fit.
    `rows` is each step's batch rows, or None where they vary (records: only batches whose rows
    the kernel `fits` take it)."""
    if cell != "lstm":
        return None
    return kernel_for(abi.BATCH_MULTIPLE if rows is None else rows, hidden, device_type, dtype)


def stacked_lstm(chosen: Kernel, core: nn.LSTM, weights: dict[str, torch.Tensor], x: torch.Tensor,
                 state: LSTMState | None, p_dropout: float, training: bool,
                 ids: torch.Tensor | None = None) -> tuple[torch.Tensor, LSTMState]:
    """x [time, batch, inputs] -> output [time, batch, hidden] in the step's dtype (bf16 under
    bf16 autocast, else fp32) and the new (h, c), each [layers, batch, hidden] fp32. With ids
    [time, batch], x is instead the table the inputs are rows of ([vocab, inputs]: the
    embedding), and the first layer looks up the projections of its rows rather than projecting
    every input (see `input_table`). `weights` holds the core's weights by name (the recurrent
    ones may be masked copies); dropout between layers as nn.LSTM applies it. Values are in
    `chosen.dtype`, whatever the autocast state."""
    layers, hidden = core.num_layers, core.hidden_size
    batch = (ids if ids is not None else x).size(1)
    if state is None:
        zeros = torch.zeros(layers, batch, hidden, device=x.device)
        state = (zeros, zeros)
    h_last, c_last = [], []
    out = x
    for layer in range(layers):
        w_ih = weights[f"weight_ih_l{layer}"]
        if layer == 0 and ids is not None:
            gates, rows = input_table(x, w_ih, chosen.dtype), _checked_ids(ids, x.size(0))
        else:
            gates, rows = project(dropout(out, p_dropout, training) if layer > 0 else out, w_ih, chosen.dtype), None
        out, h, c = _LSTMLayer.apply(gates, rows, weights[f"weight_hh_l{layer}"], weights[f"bias_ih_l{layer}"],
                                     weights[f"bias_hh_l{layer}"], state[0][layer], state[1][layer], chosen)
        h_last.append(h)
        c_last.append(c)
    return out, (torch.stack(h_last), torch.stack(c_last))


def project(x: torch.Tensor, w_ih: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x [time, batch, inputs] -> x @ w_ih^T [time, batch, 4 * hidden] in `dtype`, one product
    over the window."""
    steps, batch, _ = x.shape
    flat = x.to(dtype).reshape(steps * batch, -1)
    return torch.mm(flat, w_ih.to(dtype).t()).view(steps, batch, -1)


def _checked_ids(ids: torch.Tensor, vocab: int) -> torch.Tensor:
    # The kernel reads table rows by these ids unchecked; nn.Embedding would raise here.
    if ids.numel() and not (0 <= int((bounds := torch.aminmax(ids)).min) and int(bounds.max) < vocab):
        raise IndexError(f"ids must lie in [0, {vocab}) to index the input table")
    return ids.to(torch.int64).contiguous()


def _check(code: int, steps: int, batch: int, hidden: int, source: str = "lstm_amx.c") -> None:
    """Raises for a return code other than 0 of `source`'s kernel."""
    if code == abi.UNSUPPORTED_SHAPE:
        raise ValueError(f"{source} cannot run {steps} steps of batch {batch}, hidden {hidden}: it needs at "
                         f"least one step, batch a multiple of {abi.BATCH_MULTIPLE} and hidden a multiple of "
                         f"{abi.HIDDEN_MULTIPLE}")
    if code == abi.OUT_OF_MEMORY:
        raise MemoryError(f"{source} could not allocate its buffers")
    if code != 0:
        raise RuntimeError(f"{source} returned {code}, which charrnn does not know")


def _ids_address(ids: torch.Tensor | None) -> int | None:
    return None if ids is None else _address(ids, torch.int64)


def _address(tensor: torch.Tensor, dtype: torch.dtype) -> int:
    if tensor.dtype != dtype or not tensor.is_contiguous():
        raise ValueError(f"the recurrence kernel needs a contiguous {dtype} tensor, not a {tensor.dtype} one")
    return tensor.data_ptr()


class _LSTMLayer(torch.autograd.Function):
    """One layer over a window with `chosen`'s library, forward and backward; see the module
    docstring and lstm_amx.c. Values are in chosen.dtype."""

    @staticmethod
    def forward(ctx, x_gates: torch.Tensor, ids: torch.Tensor | None, w_hh: torch.Tensor, b_ih: torch.Tensor,
                b_hh: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, chosen: Kernel) -> tuple[torch.Tensor, ...]:
        """x_gates [time, batch, 4 * hidden], the input projection (no bias), or with ids
        [time, batch] int64 the table of projections they index; h0, c0 [batch, hidden] fp32.
        Returns h [time, batch, hidden], and the last h and c in fp32."""
        ctx.set_materialize_grads(False)
        ctx.kernel, dtype = chosen, chosen.dtype
        steps, batch = (ids if ids is not None else x_gates).shape[:2]
        hidden = w_hh.size(1)
        w_hh = w_hh.to(dtype)
        bias = (b_ih.float() + b_hh.float()).contiguous()
        x_gates = x_gates.contiguous()
        # The gates kept for backward: fp16 beside bf16 (see lstm_amx.c), else fp32.
        acts_dtype = torch.float16 if dtype == torch.bfloat16 else torch.float32
        acts = x_gates.new_empty((steps, batch, 4 * hidden), dtype=acts_dtype)
        c = x_gates.new_empty((steps, batch, hidden), dtype=torch.float32)
        h = x_gates.new_empty((steps, batch, hidden), dtype=dtype)
        h0_cast, c0 = h0.to(dtype).contiguous(), c0.float().contiguous()
        w_packed = training_columns(w_hh.t())
        code = chosen.forward(
            steps, batch, hidden, native.threads(hidden // abi.UNIT_BLOCK), _address(x_gates, dtype), _ids_address(ids),
            _address(w_packed, dtype), _address(bias, torch.float32), _address(h0_cast, dtype),
            _address(c0, torch.float32), acts.data_ptr(), c.data_ptr(), h.data_ptr())
        _check(code, steps, batch, hidden, chosen.source)
        ctx.table_shape = x_gates.shape if ids is not None else None
        ctx.save_for_backward(ids, w_hh, acts, c, h, h0_cast, c0)
        return h, h[-1].float(), c[-1].clone()

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor | None, grad_h_last: torch.Tensor | None,
                 grad_c_last: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        ids, w_hh, acts, c, h, h0, c0 = ctx.saved_tensors
        steps, batch, hidden = c.shape
        dtype = ctx.kernel.dtype
        grad_h = torch.zeros_like(h) if grad_h is None else grad_h.to(dtype).contiguous()
        # Leave as the gradients of h0 and c0.
        dh = torch.zeros_like(c[0]) if grad_h_last is None else grad_h_last.float().clone().contiguous()
        dc = torch.zeros_like(c[0]) if grad_c_last is None else grad_c_last.float().clone().contiguous()
        d_gates = h.new_empty((steps, batch, 4 * hidden))
        grad_b = c.new_zeros(4 * hidden)  # summed in C before the gate gradients are rounded
        grad_table = c.new_zeros(ctx.table_shape) if ids is not None else None  # likewise, by symbol
        w_packed = training_columns(w_hh)
        code = ctx.kernel.backward(
            steps, batch, hidden, native.threads(hidden // abi.UNIT_BLOCK), acts.data_ptr(), c.data_ptr(),
            _address(c0, torch.float32), _address(grad_h, dtype), _address(w_packed, dtype),
            _address(dh, torch.float32), _address(dc, torch.float32), d_gates.data_ptr(), grad_b.data_ptr(),
            _ids_address(ids), grad_table.data_ptr() if grad_table is not None else None)
        _check(code, steps, batch, hidden, ctx.kernel.source)
        grad_x = grad_table.to(dtype) if ids is not None else d_gates
        grad_w_hh = None
        if ctx.needs_input_grad[2]:
            h_prev = torch.cat([h0.unsqueeze(0), h[:-1]]).view(steps * batch, hidden)
            grad_w_hh = torch.mm(d_gates.view(steps * batch, 4 * hidden).t(), h_prev).float()
        return grad_x, None, grad_w_hh, grad_b, grad_b, dh, dc, None
