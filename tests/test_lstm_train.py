"""The CPU training fast paths: the recurrence kernels (charrnn/lstm_amx.c on AMX tiles and
charrnn/lstm_avx512.c on AVX512-BF16 dot products, through lstm_train.py) against nn.LSTM, and
the cheap dropout mask (charrnn/dropout.py). Each kernel test runs once per kernel, forced with
CHARRNN_LSTM_KERNEL, and skips where that kernel's library cannot be had."""

import pytest
import torch
from torch import nn

from charrnn import lstm_train, native
from charrnn.dropout import dropout, keep_mask
from charrnn.model import CharRNN, ModelConfig, loss_fn

from .conftest import torch_threads

NO_LIBRARY = {"amx": "needs a CPU with AMX-BF16 and a C compiler to build charrnn/lstm_amx.c",
              "avx512": "needs a CPU with AVX512-BF16 and a C compiler that builds charrnn/lstm_avx512.c"}
LIBRARY = {"amx": native.amx_library, "avx512": native.avx512_library}
SOURCE = {"amx": "lstm_amx.c", "avx512": "lstm_avx512.c"}


@pytest.fixture(params=["amx", "avx512"])
def kernel(request, monkeypatch):
    """Each kernel in turn, forced with CHARRNN_LSTM_KERNEL; its library, or a skip."""
    lib = LIBRARY[request.param]()
    if lib is None:
        pytest.skip(NO_LIBRARY[request.param])
    monkeypatch.setenv(lstm_train.KERNEL_ENV, request.param)
    assert lstm_train.kernel().source == SOURCE[request.param]
    return request.param


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def run_core(core: nn.LSTM, x: torch.Tensor, state, by_hand: bool):
    """Output, final state and gradients of a loss on both, for x [time, batch, inputs]."""
    core.zero_grad()
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    if by_hand:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, (h, c) = lstm_train.stacked_lstm(core, dict(core.named_parameters()), x, state, 0.0, True)
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
    """Outputs, final states and every gradient agree with fp32 nn.LSTM to bf16's rounding
    (the products are bf16, as under autocast), over a window long enough to compound it."""
    torch.manual_seed(0)
    core = nn.LSTM(inputs, hidden, layers)
    x = torch.randn(40, batch, inputs)
    state = (torch.randn(layers, batch, hidden) * 0.5, torch.randn(layers, batch, hidden) * 0.5)
    with torch_threads(thread_count):
        got = run_core(core, x, state, by_hand=True)
    want = run_core(core, x, state, by_hand=False)
    for a, b in zip(got[:3], want[:3]):
        assert (a - b).abs().max().item() < 0.02
    for name, grad in want[3].items():
        assert relative_error(got[3][name], grad) < 0.02, name


def test_kernel_results_do_not_depend_on_the_thread_count(kernel):
    """Threads split the hidden units, never a sum: any count gives the same bits."""
    torch.manual_seed(1)
    core = nn.LSTM(64, 64, 2)
    x, state = torch.randn(12, 32, 64), (torch.zeros(2, 32, 64), torch.zeros(2, 32, 64))
    results = []
    for count in (1, 2, 3):
        with torch_threads(count):
            results.append(run_core(core, x, state, by_hand=True))
    for other in results[1:]:
        for a, b in zip(results[0][:3], other[:3]):
            assert torch.equal(a, b)
        for name in ("x", "h0", "c0", "weight_hh_l0", "weight_hh_l1"):
            assert torch.equal(results[0][3][name], other[3][name]), name


# Shapes the tiles cannot run: no steps, batch not a positive multiple of 16, hidden not a
# positive multiple of 32 (or so large that 4 * hidden overflows an int), no threads.
@pytest.mark.parametrize("steps,batch,hidden,threads", [
    (0, 16, 32, 1), (-1, 16, 32, 1), (4, 8, 32, 1), (4, 24, 32, 1), (4, 0, 32, 1), (4, -16, 32, 1),
    (4, 16, 48, 1), (4, 16, 16, 1), (4, 16, 0, 1), (4, 16, -32, 1), (4, 16, 2 ** 30, 1), (4, 16, 32, 0)])
def test_the_kernels_refuse_shapes_they_cannot_run(kernel, steps, batch, hidden, threads):
    """Called through ctypes with such a shape, both kernels return their shape error before
    touching a buffer (all NULL here)."""
    chosen = lstm_train.kernel()
    assert chosen.forward(steps, batch, hidden, threads, *[None] * 9) == lstm_train.UNSUPPORTED_SHAPE
    assert chosen.backward(steps, batch, hidden, threads, *[None] * 11) == lstm_train.UNSUPPORTED_SHAPE


@pytest.mark.parametrize("steps,batch,hidden,message", [
    (4, 8, 32, "cannot run 4 steps of batch 8, hidden 32: it needs at least one step, batch a multiple of 16 and "
               "hidden a multiple of 32"),
    (0, 16, 32, "cannot run 0 steps of batch 16"), (4, 16, 48, "cannot run 4 steps of batch 16, hidden 48")])
def test_a_shape_the_kernel_refuses_is_a_clear_error(kernel, steps, batch, hidden, message):
    x_gates = torch.zeros(steps, batch, 4 * hidden, dtype=torch.bfloat16)
    w_hh, bias, state = torch.zeros(4 * hidden, hidden), torch.zeros(4 * hidden), torch.zeros(batch, hidden)
    with pytest.raises(ValueError, match=f"{SOURCE[kernel]} {message}"):
        lstm_train._LSTMLayer.apply(x_gates, None, w_hh, bias, bias, state, state)


def test_each_kernel_error_code_has_its_own_error():
    lstm_train._check(0, 4, 16, 32)
    with pytest.raises(ValueError, match="lstm_amx.c cannot run"):
        lstm_train._check(lstm_train.UNSUPPORTED_SHAPE, 4, 8, 32)
    with pytest.raises(MemoryError, match="could not allocate"):
        lstm_train._check(lstm_train.OUT_OF_MEMORY, 4, 16, 32)
    with pytest.raises(RuntimeError, match="returned -7"):
        lstm_train._check(-7, 4, 16, 32)
    with pytest.raises(MemoryError, match="lstm_avx512.c could not allocate"):
        lstm_train._check(lstm_train.OUT_OF_MEMORY, 4, 16, 32, "lstm_avx512.c")


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
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, _ = lstm_train.stacked_lstm(core, dict(core.named_parameters()), x, state, 0.0, True)
    got = got.float()
    assert want[1:, 3].isnan().all() and not want[:, 5].isnan().any()
    assert torch.equal(got.isnan(), want.isnan())
    finite = ~want.isnan()
    assert (got[finite] - want[finite]).abs().max().item() < 0.02


def test_the_model_trains_through_the_kernel_only_where_it_fits(kernel):
    """bf16 training on the CPU takes the kernel's path when the shapes fit the tiles; other
    shapes, fp32, evaluation and inference fall back to nn.LSTM; both give the same loss."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(40, layers=2, hidden=64, dropout=0.0))
    ids = torch.randint(0, 40, (16, 30))
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
    with bf16:
        assert model.uses_amx_kernel(ids)
        assert not model.uses_amx_kernel(ids[:10])  # 10 rows: not a multiple of 16
        by_hand = loss_fn(model(ids)[0], ids)
    assert not model.uses_amx_kernel(ids)  # fp32
    with torch.no_grad(), bf16:
        assert not model.uses_amx_kernel(ids)
        fused = loss_fn(model(ids)[0], ids)
    model.eval()
    with bf16:
        assert not model.uses_amx_kernel(ids)
    assert abs(by_hand.item() - fused.item()) < 0.01


@pytest.mark.parametrize("layers,weight_drop", [(2, 0.0), (3, 0.5)])
def test_the_models_gradients_on_the_kernel_path_match_fp32(kernel, layers, weight_drop):
    """The first layer looks its inputs' projections up by id (lstm_train.input_table), and the
    kernel sums their gradient by symbol: every parameter's gradient, the embedding's and the
    first input weights' included, agrees with the fp32 model through nn.LSTM; with weight drop
    too (the same seed draws the same masks on both paths), through the mask to the parameters."""
    torch.manual_seed(2)
    model = CharRNN(ModelConfig(40, layers=layers, hidden=64, dropout=0.0, weight_drop=weight_drop))
    ids = torch.randint(0, 40, (32, 30))
    grads = {}
    for by_hand in (True, False):
        model.zero_grad()
        torch.manual_seed(3)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=by_hand):
            assert model.uses_amx_kernel(ids) == by_hand
            loss = loss_fn(model(ids[:, :-1])[0], ids[:, 1:])
        loss.backward()
        grads[by_hand] = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert {"embed.weight", "core.weight_ih_l0"} <= set(grads[True])
    for name, want in grads[False].items():
        assert relative_error(grads[True][name], want) < 0.02, name
    # The kernel reads the table unchecked, so ids outside it are refused first, as nn.Embedding does.
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(IndexError, match=r"\[0, 40\)"):
        model(ids % 40 + 40 * (ids == 0))


def test_weight_drop_reaches_the_recurrent_weights_on_the_kernel_path(kernel):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(40, layers=1, hidden=32, dropout=0.0, weight_drop=0.5))
    ids = torch.randint(0, 40, (16, 20))
    with torch.autocast("cpu", dtype=torch.bfloat16):
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
