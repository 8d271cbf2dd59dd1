"""Device choice, precision and seeding."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import torch

from .errors import CharrnnError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")


def pick_device(name: str) -> torch.device:
    """'auto' takes CUDA, then MPS, then the CPU; a named device must be present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharrnnError("--device cuda: no CUDA device is available")
    if name == "mps" and not _mps_available():
        raise CharrnnError("--device mps: no MPS device is available")
    if name not in DEVICES:
        raise CharrnnError(f"unknown device {name!r}")
    return torch.device(name)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def use_threads(count: int) -> None:
    """Threads for torch's CPU operators and charrnn's C kernels, which read torch's setting.

    The threads wait for each other at every time step of the kernels and at every torch
    operator, so a thread that another program has pushed off its core stalls the rest (see
    docs/experiments.md, "Threads on a shared CPU"). Results differ in the last bits between
    thread counts (torch splits some sums by thread), so a run repeats exactly only with the
    same count.
    """
    torch.set_num_threads(count)


@contextlib.contextmanager
def threads_for_block(count: int) -> Iterator[None]:
    """`use_threads(count)` for the block, the previous count restored after it."""
    saved = torch.get_num_threads()
    use_threads(count)
    try:
        yield
    finally:
        use_threads(saved)


def pick_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `device` (None: full precision).

    'auto' takes bf16 where the hardware multiplies it natively: CUDA GPUs that support it,
    and CPUs with AMX-BF16 or AVX512-BF16, where it trains faster and reached a lower
    validation loss in the same time (see docs/experiments.md, "bf16 on the CPU"). Elsewhere
    bf16 is emulated, and slower.
    """
    if name not in PRECISIONS:
        raise CharrnnError(f"unknown precision {name!r}")
    if name == "fp32" or device.type == "mps":
        if name == "bf16":
            raise CharrnnError("--precision bf16: supported on CPUs and CUDA GPUs, not MPS")
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if name == "bf16" and not supported:
            raise CharrnnError("--precision bf16: this CUDA device does not support bf16")
        return torch.bfloat16 if supported else None
    return torch.bfloat16 if name == "bf16" or cpu_multiplies_bf16() else None


def cpu_multiplies_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively: AMX-BF16 tiles (Intel Sapphire Rapids and
    later) or AVX512-BF16's dot products (AMD Zen 4 and later, Intel Cooper Lake)."""
    return cpu_has("amx_bf16") or cpu_has("avx512_bf16")


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX-BF16 tiles, which charrnn/native/lstm_amx.c needs."""
    return cpu_has("amx_bf16")


def cpu_has_avx2_fma() -> bool:
    """Whether this CPU has AVX2 and FMA, which charrnn/native/lstm_vector.c's fp32 build needs."""
    return cpu_has("avx2") and cpu_has("fma3")


def cpu_has(feature: str) -> bool:
    """Whether torch reports this CPU feature (e.g. "avx512_bf16"); False where it cannot tell."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # absent from older torch: assume not
    return bool(capabilities is not None and capabilities().get(feature))


def precision_label(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.").replace("bfloat16", "bf16")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` (from pick_precision); full precision when it is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    # random.setstate wants tuples all the way down; a round trip through a file may give lists.
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
