import pytest
import torch

from charrnn import runtime
from charrnn.errors import CharrnnError
from charrnn.runtime import pick_precision, precision_label

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_the_cpu_takes_bf16_only_where_it_is_native(monkeypatch, native):
    monkeypatch.setattr(runtime, "cpu_multiplies_bf16", lambda: native)
    assert pick_precision("auto", CPU) == (torch.bfloat16 if native else None)
    assert pick_precision("fp32", CPU) is None
    assert pick_precision("bf16", CPU) == torch.bfloat16  # asked for: emulated if need be


@pytest.mark.parametrize("supported", [True, False])
def test_cuda_precision_follows_the_device(monkeypatch, supported):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: supported)
    assert pick_precision("auto", CUDA) == (torch.bfloat16 if supported else None)
    assert pick_precision("fp32", CUDA) is None
    if supported:
        assert pick_precision("bf16", CUDA) == torch.bfloat16
    else:
        with pytest.raises(CharrnnError, match="does not support bf16"):
            pick_precision("bf16", CUDA)


def test_mps_and_unknown_precisions():
    assert pick_precision("auto", MPS) is None and pick_precision("fp32", MPS) is None
    with pytest.raises(CharrnnError, match="not MPS"):
        pick_precision("bf16", MPS)
    with pytest.raises(CharrnnError, match="unknown precision"):
        pick_precision("fp16", CPU)


def test_precision_labels_and_the_cpu_probe():
    assert precision_label(None) == "fp32" and precision_label(torch.bfloat16) == "bf16"
    assert isinstance(runtime.cpu_multiplies_bf16(), bool)


@pytest.mark.parametrize("features, multiplies, amx", [
    ({"amx_bf16": True, "avx512_bf16": True}, True, True),  # Intel Sapphire Rapids
    ({"avx512_bf16": True}, True, False),  # AMD Zen 4: bf16 dot products, no tiles
    ({"avx512_f": True}, False, False),  # AVX-512 without bf16: emulated
    ({}, False, False),
])
def test_bf16_is_native_with_amx_or_avx512_bf16(monkeypatch, features, multiplies, amx):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: features)
    assert runtime.cpu_multiplies_bf16() == multiplies and runtime.cpu_has_amx_bf16() == amx
    assert pick_precision("auto", CPU) == (torch.bfloat16 if multiplies else None)


def test_autocast_runs_matrix_products_in_the_chosen_dtype():
    a = torch.randn(4, 4)
    with runtime.autocast(CPU, torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
    with runtime.autocast(CPU, None):
        assert (a @ a).dtype == torch.float32
