"""The CPU training fast paths: the recurrence kernels (charrnn/native/lstm_amx.c on AMX tiles,
charrnn/native/lstm_vector.c on AVX512-BF16 dot products and, built for fp32, on AVX2 or AVX-512
multiply-adds, through lstm_train.py) against nn.LSTM, and the cheap dropout mask
(charrnn/training/dropout.py). Each kernel test runs once per kernel, forced with CHARRNN_LSTM_KERNEL, in
that kernel's precision, and skips where that kernel's library cannot be had."""

import contextlib
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from charrnn.model import CharRNN, ModelConfig, loss_fn
from charrnn.native import abi
from charrnn.native import build as native
from charrnn.native import recurrence as lstm_train
from charrnn.training.dropout import dropout, keep_mask

from ..helpers import torch_threads

NO_LIBRARY = {"amx": "needs a CPU with AMX-BF16 and a C compiler to build charrnn/native/lstm_amx.c",
              "avx512": "needs a CPU with AVX512-BF16 and a C compiler that builds charrnn/native/lstm_vector.c",
              "fp32": "needs a CPU with AVX2 and FMA and a C compiler that builds charrnn/native/lstm_vector.c"}
LIBRARY = {"amx": native.amx_library, "avx512": native.avx512_library, "fp32": native.fp32_library}
SOURCE = {"amx": "lstm_amx.c", "avx512": "lstm_vector.c (bf16)", "fp32": "lstm_vector.c (fp32)"}


@dataclass(frozen=True)
class Forced:
    """A kernel forced with CHARRNN_LSTM_KERNEL, and how closely it must agree with fp32 nn.LSTM:
    to bf16's rounding, or (fp32, where only the order of the sums differs) to 1e-5."""

    name: str
    dtype: torch.dtype
    tolerance: float

    @property
    def chosen(self) -> lstm_train.Kernel:
        """The kernel itself, as the Trainer chooses it for a run in this precision."""
        return lstm_train.kernel(self.dtype)

    def give(self, model: CharRNN) -> CharRNN:
        """`model` with this kernel for its training steps, as the Trainer sets it up."""
        model.recurrence = self.chosen
        return model

    def precision(self, enabled: bool = True) -> contextlib.AbstractContextManager:
        """The autocast state this kernel's steps run in (fp32: none); with enabled False, the
        other precision, which the forced kernel does not take."""
        bf16 = (self.dtype == torch.bfloat16) == enabled
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@pytest.fixture(params=["amx", "avx512", "fp32"])
def kernel(request, monkeypatch) -> Forced:
    """Each kernel in turn, forced with CHARRNN_LSTM_KERNEL; or a skip where it cannot be had."""
    lib = LIBRARY[request.param]()
    if lib is None:
        pytest.skip(NO_LIBRARY[request.param])
    monkeypatch.setenv(lstm_train.KERNEL_ENV, request.param)
    dtype = torch.float32 if request.param == "fp32" else torch.bfloat16
    assert lstm_train.kernel(dtype).source == SOURCE[request.param]
    return Forced(request.param, dtype, 1e-5 if request.param == "fp32" else 0.02)


class FakeLibrary:
    """Stands in for a loaded training library: its entry points are named after it."""

    def __init__(self, prefix: str):
        setattr(self, f"{prefix}_lstm_forward", f"{prefix} forward")
        setattr(self, f"{prefix}_lstm_backward", f"{prefix} backward")


@pytest.mark.parametrize("setting,has_amx,dtype,expected", [
    ("auto", True, torch.bfloat16, "lstm_amx.c"),
    ("auto", False, torch.bfloat16, "lstm_vector.c (bf16)"),  # AVX512-BF16 without AMX: AMD Zen 4
    ("auto", True, torch.float32, "lstm_vector.c (fp32)"),
    ("auto", True, torch.float16, None),
    ("nonsense", False, torch.bfloat16, "lstm_vector.c (bf16)"),  # read as auto
    ("amx", False, torch.bfloat16, None),
    ("amx", True, torch.float32, None),
    ("avx512", True, torch.bfloat16, "lstm_vector.c (bf16)"),
    ("fp32", True, torch.bfloat16, None),
    ("fp32", True, torch.float32, "lstm_vector.c (fp32)"),
    ("off", True, torch.float32, None),
    ("off", True, torch.bfloat16, None),
])
def test_which_library_a_step_takes(monkeypatch, setting, has_amx, dtype, expected):
    """lstm_train.kernel's choice for each CHARRNN_LSTM_KERNEL setting and step dtype, with the
    libraries stood in for, so that every CPU's choice is checked on any CPU."""
    monkeypatch.setattr(native, "amx_library", lambda: FakeLibrary("charrnn_amx") if has_amx else None)
    monkeypatch.setattr(native, "avx512_library", lambda: FakeLibrary("charrnn_vector"))
    monkeypatch.setattr(native, "fp32_library", lambda: FakeLibrary("charrnn_vector"))
    monkeypatch.setenv(lstm_train.KERNEL_ENV, setting)
    chosen = lstm_train.kernel(dtype)
    assert (chosen and chosen.source) == expected
    if chosen is not None:
        assert chosen.dtype == dtype
        assert chosen.forward.startswith("charrnn_amx" if expected == "lstm_amx.c" else "charrnn_vector")
    assert lstm_train.kernel_for(16, 32, "cpu", dtype) == chosen
    assert lstm_train.kernel_for(8, 32, "cpu", dtype) is None and lstm_train.kernel_for(16, 48, "cpu", dtype) is None
    assert lstm_train.kernel_for(16, 32, "cuda", dtype) is None


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def run_core(core: nn.LSTM, x: torch.Tensor, state, by_hand: Forced | None):
    """Output, final state and gradients of a loss on both, for x [time, batch, inputs], through
    the forced kernel `by_hand` in its precision, or through fp32 nn.LSTM."""
    core.zero_grad()
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    if by_hand is not None:
        with by_hand.precision():
            out, (h, c) = lstm_train.stacked_lstm(by_hand.chosen, core, dict(core.named_parameters()), x, state, 0.0,
                                                  True)
    else:
        out, (h, c) = core(x, state)
    weights = torch.linspace(-1, 1, out.size(-1))
    loss = (out.float() * weights).sum() + (h * c).sum() + h.sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in core.named_parameters()}
    grads.update(x=x.grad, h0=state[0].grad, c0=state[1].grad)
    return out.float().detach(), h.detach(), c.detach(), grads


# Shapes: one tile of rows and one of K; several row tiles with a partial group of four
# (80 rows = 4 + 1 tiles); hidden blocks that split unevenly between threads.
@pytest.mark.parametrize("layers,batch,hidden,inputs,thread_count", [
    (1, 16, 32, 32, 1), (2, 80, 64, 48, 2), (2, 32, 96, 96, 3), (3, 16, 64, 64, 2)])
def test_the_kernels_compute_what_nn_lstm_computes(kernel, layers, batch, hidden, inputs, thread_count):
    """Outputs, final states and every gradient agree with fp32 nn.LSTM, over a window long
    enough to compound rounding: to bf16's rounding for the bf16 kernels (the products are bf16,
    as under autocast), to 1e-5 for the fp32 one."""
    torch.manual_seed(0)
    core = nn.LSTM(inputs, hidden, layers)
    x = torch.randn(40, batch, inputs)
    state = (torch.randn(layers, batch, hidden) * 0.5, torch.randn(layers, batch, hidden) * 0.5)
    with torch_threads(thread_count):
        got = run_core(core, x, state, by_hand=kernel)
    assert got[0].dtype == torch.float32
    want = run_core(core, x, state, by_hand=None)
    for a, b in zip(got[:3], want[:3]):
        assert (a - b).abs().max().item() < kernel.tolerance
    for name, grad in want[3].items():
        assert relative_error(got[3][name], grad) < kernel.tolerance, name


def test_kernel_results_do_not_depend_on_the_thread_count(kernel):
    """Threads split the hidden units, never a sum: any count gives the same bits for what the
    kernel computes (outputs, states, the gradients of h0 and c0). The gradients of x and of the
    weights come from whole-window torch.mm products, whose sums a BLAS may split by thread
    (MKL's fp32 products on AVX2 do): those agree to rounding."""
    torch.manual_seed(1)
    core = nn.LSTM(64, 64, 2)
    x, state = torch.randn(12, 32, 64), (torch.zeros(2, 32, 64), torch.zeros(2, 32, 64))
    results = []
    for count in (1, 2, 3):
        with torch_threads(count):
            results.append(run_core(core, x, state, by_hand=kernel))
    for other in results[1:]:
        for a, b in zip(results[0][:3], other[:3]):
            assert torch.equal(a, b)
        for name in ("h0", "c0"):
            assert torch.equal(results[0][3][name], other[3][name]), name
        for name in ("x", "weight_hh_l0", "weight_hh_l1", "weight_ih_l1"):
            assert relative_error(other[3][name], results[0][3][name]) < 1e-6, name


# Shapes the tiles cannot run: no steps, batch not a positive multiple of 16, hidden not a
# positive multiple of 32 (or so large that 4 * hidden overflows an int), no threads.
@pytest.mark.parametrize("steps,batch,hidden,threads", [
    (0, 16, 32, 1), (-1, 16, 32, 1), (4, 8, 32, 1), (4, 24, 32, 1), (4, 0, 32, 1), (4, -16, 32, 1),
    (4, 16, 48, 1), (4, 16, 16, 1), (4, 16, 0, 1), (4, 16, -32, 1), (4, 16, 2 ** 30, 1), (4, 16, 32, 0)])
def test_the_kernels_refuse_shapes_they_cannot_run(kernel, steps, batch, hidden, threads):
    """Called through ctypes with such a shape, every kernel returns its shape error before
    touching a buffer (all NULL here)."""
    chosen = lstm_train.kernel(kernel.dtype)
    assert chosen.forward(steps, batch, hidden, threads, *[None] * 9) == abi.UNSUPPORTED_SHAPE
    assert chosen.backward(steps, batch, hidden, threads, *[None] * 11) == abi.UNSUPPORTED_SHAPE


@pytest.mark.parametrize("steps,batch,hidden,message", [
    (4, 8, 32, "cannot run 4 steps of batch 8, hidden 32: it needs at least one step, batch a multiple of 16 and "
               "hidden a multiple of 32"),
    (0, 16, 32, "cannot run 0 steps of batch 16"), (4, 16, 48, "cannot run 4 steps of batch 16, hidden 48")])
def test_a_shape_the_kernel_refuses_is_a_clear_error(kernel, steps, batch, hidden, message):
    x_gates = torch.zeros(steps, batch, 4 * hidden, dtype=kernel.dtype)
    w_hh, bias, state = torch.zeros(4 * hidden, hidden), torch.zeros(4 * hidden), torch.zeros(batch, hidden)
    with pytest.raises(ValueError, match=f"{SOURCE[kernel.name]} {message}".replace("(", r"\(").replace(")", r"\)")):
        lstm_train._LSTMLayer.apply(x_gates, None, w_hh, bias, bias, state, state, lstm_train.kernel(kernel.dtype))


def test_each_kernel_error_code_has_its_own_error():
    lstm_train._check(0, 4, 16, 32)
    with pytest.raises(ValueError, match="lstm_amx.c cannot run"):
        lstm_train._check(abi.UNSUPPORTED_SHAPE, 4, 8, 32)
    with pytest.raises(MemoryError, match="could not allocate"):
        lstm_train._check(abi.OUT_OF_MEMORY, 4, 16, 32)
    with pytest.raises(RuntimeError, match="returned -7"):
        lstm_train._check(-7, 4, 16, 32)
    with pytest.raises(MemoryError, match="lstm_vector.c could not allocate"):
        lstm_train._check(abi.OUT_OF_MEMORY, 4, 16, 32, "lstm_vector.c")


def test_the_kernels_pass_nan_and_infinity_on_as_nn_lstm_does(kernel):
    """A NaN input makes its row NaN from that step on, and an infinite one saturates the gates
    (finite results), on the kernel's path as in nn.LSTM."""
    torch.manual_seed(2)
    core = nn.LSTM(32, 32, 1)
    x = torch.randn(6, 16, 32)
    x[1, 3, 0], x[2, 5, 0] = float("nan"), float("inf")
    state = (torch.zeros(1, 16, 32), torch.zeros(1, 16, 32))
    with torch.no_grad():
        want, _ = core(x, state)
        with kernel.precision():
            got, _ = lstm_train.stacked_lstm(kernel.chosen, core, dict(core.named_parameters()), x, state, 0.0, True)
    got = got.float()
    assert want[1:, 3].isnan().all() and not want[:, 5].isnan().any()
    assert torch.equal(got.isnan(), want.isnan())
    finite = ~want.isnan()
    assert (got[finite] - want[finite]).abs().max().item() < kernel.tolerance


def test_the_model_trains_through_the_kernel_only_where_it_fits(kernel):
    """Training on the CPU in the kernel's precision takes the kernel's path when the shapes
    fit; other shapes, the other precision, evaluation and inference fall back to nn.LSTM; both
    give the same loss."""
    torch.manual_seed(0)
    model = kernel.give(CharRNN(ModelConfig(40, layers=2, hidden=64, dropout=0.0)))
    ids = torch.randint(0, 40, (16, 30))
    with kernel.precision():
        assert model.uses_recurrence_kernel(ids)
        assert not model.uses_recurrence_kernel(ids[:10])  # 10 rows: not a multiple of 16
        by_hand = loss_fn(model(ids)[0], ids)
    other = torch.bfloat16 if kernel.dtype == torch.float32 else torch.float32
    assert lstm_train.choose("lstm", 64, 16, "cpu", other) is None  # the forced kernel's precision only
    assert lstm_train.choose("lstm", 64, 8, "cpu", kernel.dtype) is None  # rows that never fit
    assert lstm_train.choose("gru", 64, 16, "cpu", kernel.dtype) is None
    assert lstm_train.choose("lstm", 64, None, "cpu", kernel.dtype) == kernel.chosen  # records: fits() per batch
    with torch.no_grad(), kernel.precision():
        assert not model.uses_recurrence_kernel(ids)
        fused = loss_fn(model(ids)[0], ids)
    model.eval()
    with kernel.precision():
        assert not model.uses_recurrence_kernel(ids)
    assert abs(by_hand.item() - fused.item()) < kernel.tolerance


@pytest.mark.parametrize("layers,weight_drop", [(2, 0.0), (3, 0.5)])
def test_the_models_gradients_on_the_kernel_path_match_fp32(kernel, monkeypatch, layers, weight_drop):
    """The first layer looks its inputs' projections up by id (charrnn.model.input_table), and the
    kernel sums their gradient by symbol: every parameter's gradient, the embedding's and the
    first input weights' included, agrees with the fp32 model through nn.LSTM; with weight drop
    too (the same seed draws the same masks on both paths), through the mask to the parameters."""
    torch.manual_seed(2)
    model = CharRNN(ModelConfig(40, layers=layers, hidden=64, dropout=0.0, weight_drop=weight_drop))
    ids = torch.randint(0, 40, (32, 30))
    grads = {}
    for by_hand in (True, False):
        model.recurrence = kernel.chosen if by_hand else None
        model.zero_grad()
        torch.manual_seed(3)
        with kernel.precision() if by_hand else contextlib.nullcontext():
            assert model.uses_recurrence_kernel(ids) == by_hand
            loss = loss_fn(model(ids[:, :-1])[0], ids[:, 1:])
        loss.backward()
        grads[by_hand] = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert {"embed.weight", "core.weight_ih_l0"} <= set(grads[True])
    for name, want in grads[False].items():
        assert relative_error(grads[True][name], want) < kernel.tolerance, name
    # The kernel reads the table unchecked, so ids outside it are refused first, as nn.Embedding does.
    kernel.give(model)
    with kernel.precision(), pytest.raises(IndexError, match=r"\[0, 40\)"):
        model(ids % 40 + 40 * (ids == 0))


def test_weight_drop_reaches_the_recurrent_weights_on_the_kernel_path(kernel):
    torch.manual_seed(0)
    model = kernel.give(CharRNN(ModelConfig(40, layers=1, hidden=32, dropout=0.0, weight_drop=0.5)))
    ids = torch.randint(0, 40, (16, 20))
    with kernel.precision():
        assert model.uses_recurrence_kernel(ids)
        first = loss_fn(model(ids)[0], ids)
        second = loss_fn(model(ids)[0], ids)
    assert first.item() != second.item()  # a new mask each call
    first.backward()
    assert model.core.weight_hh_l0.grad.abs().sum() > 0


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_mask_drops_at_the_rate_asked_and_keeps_the_expectation(p):
    torch.manual_seed(0)
    kept, scale = keep_mask((1000, 1000), p)
    assert kept.dtype == torch.bool
    assert abs(1 - kept.float().mean().item() - p) < 0.002
    assert abs(scale - 1 / (1 - p)) < 1e-4
    assert abs(kept.float().mean().item() * scale - 1) < 0.005


def test_bf16_dropout_keeps_the_expectation():
    """The scale is applied in the product, not stored in a bf16 mask (1/0.9 would round to
    1.109375 and shrink every kept unit by 0.16 %)."""
    torch.manual_seed(0)
    x = (1 + torch.rand(2000, 1000)).to(torch.bfloat16)
    out = dropout(x, 0.1, training=True)
    kept = out != 0
    ratio = (out[kept].float() / x[kept].float()).mean().item()
    assert abs(ratio - 1 / (1 - round(0.1 * 2**15) / 2**15)) < 1e-4


def test_dropout_is_reproducible_identity_when_off_and_passes_gradient_through_the_mask():
    x = torch.randn(30, 50, requires_grad=True)
    torch.manual_seed(3)
    a = dropout(x, 0.3, training=True)
    torch.manual_seed(3)
    b = dropout(x, 0.3, training=True)
    assert torch.equal(a, b)
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0, training=True) is x
    a.sum().backward()
    assert torch.allclose(x.grad, (a != 0).float() / (1 - round(0.3 * 2**15) / 2**15))


def test_keep_mask_neighbours_are_independent():
    """Four masks come from each 64-bit draw: neighbours must not be correlated."""
    torch.manual_seed(0)
    kept = keep_mask((4_000_000,), 0.5)[0].float().view(-1, 4)
    for offset in (1, 2, 3):
        both = (kept[:, 0] * kept[:, offset]).mean().item()
        assert abs(both - 0.25) < 0.002
