"""LSTM arithmetic in C, compiled on first use: the sampler's step (lstm_step.c) and the
recurrence of a training step (see charrnn.lstm_train): in bf16 on CPUs with AMX (lstm_amx.c) or
with AVX512-BF16 (lstm_vector.c, the same design on vector dot products), and in fp32 on CPUs
with AVX2 and FMA (lstm_vector.c built with -DVALUE_FP32).

Stepping one stream through eager PyTorch costs about fifteen tensor operations per
character, each with its own set-up, on top of reading the weights; the C step does the
same arithmetic in one call, and is written out by hand because `torch.compile` of the
step was slower than eager (see docs/experiments.md, "The C sampling step"). The same
library computes the gates of several streams for the tensor step (one call a layer
instead of six tensor operations).

A library is built with the system C compiler (`$CC`, else `cc`) and OpenMP, and cached in
the user's cache folder under a name that hashes the source and lstm_math.h, the compiler,
its flags and the CPU, so a changed file or another machine sharing the folder gets its own
build. When it loads, the library reports its struct layout and block constants
(`charrnn_step_abi`, `charrnn_amx_abi`, `charrnn_vector_abi`) and they are compared with the ones this
module and lstm_train.py use. Anything that goes wrong (no compiler, no OpenMP, an unwritable cache, a
mismatched constant) leaves `library()` returning None and the sampler on the eager step,
which gives the same distribution; and `amx_library()`, `avx512_library()` or `fp32_library()`
None and training on `nn.LSTM`, which computes the same function. `CHARRNN_NATIVE=0` turns them
all off; `CHARRNN_NATIVE=verbose` says on stderr why a library could not be had (silent otherwise).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..fileio import atomic_path
from ..runtime import cpu_has, cpu_has_amx_bf16, cpu_has_avx2_fma
from . import abi

SOURCE = Path(__file__).with_name("lstm_step.c")
AMX_SOURCE = Path(__file__).with_name("lstm_amx.c")
VECTOR_SOURCE = Path(__file__).with_name("lstm_vector.c")
FP32_BUILD = ("-DVALUE_FP32",)  # lstm_vector.c's fp32 build; without it, bf16
# included by the sources: lstm_math.h by every one, lstm_recurrence.h by the training kernels
HEADERS = (Path(__file__).with_name("lstm_math.h"), Path(__file__).with_name("lstm_recurrence.h"))
# -fno-trapping-math lets the compiler vectorize floorf (and so the gates); nothing here
# reads floating-point exception flags.
FLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-fopenmp", "-shared", "-fPIC")
ENABLE_ENV = "CHARRNN_NATIVE"  # 0/false/no/off: never build; verbose: report failures on stderr
COMPILE_TIMEOUT_S = 120
REPORTED_LINES = 20  # of a failed compiler's stderr


def enabled() -> bool:
    return _setting() not in ("0", "false", "no", "off")


def verbose() -> bool:
    return _setting() == "verbose"


def _setting() -> str:
    return os.environ.get(ENABLE_ENV, "1").strip().lower()


class Unusable(Exception):
    """Why a library cannot be had; printed under CHARRNN_NATIVE=verbose."""


def threads(work_items: int) -> int:
    """OpenMP threads for a C call that splits `work_items` ways: torch's intra-op setting
    (the same libgomp pool when GCC built the library), never more than the items."""
    return max(1, min(torch.get_num_threads(), work_items))


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charrnn"


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled step, built if no cached build fits; None when it cannot be had."""
    return _load(SOURCE, _bind, "sampling takes the PyTorch step")


@functools.cache
def amx_library() -> ctypes.CDLL | None:
    """lstm_amx.c's recurrence, on CPUs with AMX-BF16 whose kernel grants the tiles; else None."""
    if not cpu_has_amx_bf16():
        if verbose():
            _report(AMX_SOURCE, "bf16 training takes nn.LSTM", "this CPU has no AMX-BF16")
        return None
    return _load(AMX_SOURCE, _bind_amx, "bf16 training takes nn.LSTM")


@functools.cache
def avx512_library() -> ctypes.CDLL | None:
    """lstm_vector.c's bf16 recurrence (lstm_amx.c's, on AVX512-BF16 dot products), on CPUs with
    AVX512-BF16; else None. lstm_train.py prefers amx_library() where both can be had."""
    if not cpu_has("avx512_bf16"):
        if verbose():
            _report(VECTOR_SOURCE, "bf16 training takes nn.LSTM", "this CPU has no AVX512-BF16")
        return None
    return _load(VECTOR_SOURCE, functools.partial(_bind_vector, value_bytes=2), "bf16 training takes nn.LSTM")


@functools.cache
def fp32_library() -> ctypes.CDLL | None:
    """lstm_vector.c's fp32 recurrence (fused multiply-adds), on x86 CPUs with AVX2 and FMA; else
    None."""
    if not cpu_has_avx2_fma():
        if verbose():
            _report(VECTOR_SOURCE, "fp32 training takes nn.LSTM", "this CPU has no AVX2 and FMA")
        return None
    return _load(VECTOR_SOURCE, functools.partial(_bind_vector, value_bytes=4), "fp32 training takes nn.LSTM",
                 FP32_BUILD)


def _load(source: Path, bind: Callable[[ctypes.CDLL], ctypes.CDLL], fallback: str,
          defines: tuple[str, ...] = ()) -> ctypes.CDLL | None:
    if not enabled():
        return None
    try:
        return _build_and_bind(source, bind, defines)
    except Unusable as why:
        if verbose():
            _report(source, fallback, str(why))
        return None


def _report(source: Path, fallback: str, why: str) -> None:
    print(f"charrnn: cannot use {source.name} ({fallback}): {why}", file=sys.stderr, flush=True)


def _build_and_bind(source: Path, bind: Callable[[ctypes.CDLL], ctypes.CDLL],
                    defines: tuple[str, ...] = ()) -> ctypes.CDLL:
    """The library from the cache, else built into it, else built privately; Unusable if none.
    `defines` (compiler flags such as FP32_BUILD) choose a build of the source."""
    name = os.environ.get("CC") or "cc"
    compiler = shutil.which(name)
    if compiler is None:
        raise Unusable(f"no C compiler: {name!r} is not on PATH (set CC to one)")
    missing = [path.name for path in (source, *HEADERS) if not path.is_file()]
    if missing:
        raise Unusable(f"missing from the installed package: {', '.join(missing)}")
    path = cache_folder() / f"{source.stem}-{_build_key(compiler, source, defines)}.so"
    try:
        if path.is_file():
            try:
                return bind(ctypes.CDLL(str(path)))
            except OSError:
                pass  # damaged: built again below
        try:
            with atomic_path(path) as tmp:
                _compile(compiler, source, tmp, defines)
            return bind(ctypes.CDLL(str(path)))
        except OSError:  # no writable cache: a private build for this process
            with tempfile.TemporaryDirectory() as folder:
                tmp = Path(folder) / path.name
                _compile(compiler, source, tmp, defines)
                return bind(ctypes.CDLL(str(tmp)))  # stays mapped once loaded
    except subprocess.CalledProcessError as failed:
        raise Unusable(f"{compiler} exited with status {failed.returncode}:\n{_trimmed(failed.stderr)}") from None
    except subprocess.TimeoutExpired:
        raise Unusable(f"{compiler} took more than {COMPILE_TIMEOUT_S} s") from None
    except (OSError, AttributeError) as error:  # AttributeError: a function the library lacks
        raise Unusable(f"{type(error).__name__}: {error}") from None


def _trimmed(stderr: bytes | None) -> str:
    lines = (stderr or b"").decode(errors="replace").rstrip().splitlines() or ["(no output)"]
    if len(lines) > REPORTED_LINES:
        lines = lines[:REPORTED_LINES] + [f"... ({len(lines) - REPORTED_LINES} more lines)"]
    return "\n".join("    " + line for line in lines)


def _build_key(compiler: str, source: Path, defines: tuple[str, ...] = ()) -> str:
    digest = hashlib.sha256(source.read_bytes())
    for header in HEADERS:
        digest.update(b"\0" + header.read_bytes())
    for part in (compiler, *FLAGS, *defines, platform.system(), platform.machine(), _cpu_signature()):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:16]


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and instruction-set flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def _compile(compiler: str, source: Path, output: Path, defines: tuple[str, ...] = ()) -> None:
    subprocess.run([compiler, *FLAGS, *defines, "-o", str(output), str(source)], check=True, capture_output=True,
                   timeout=COMPILE_TIMEOUT_S, stdin=subprocess.DEVNULL)


def _check_abi(lib: ctypes.CDLL, function: str, expected: dict[str, int]) -> None:
    """Unusable unless the library's `function` (name -> value, -1 if unknown) gives each value."""
    abi = getattr(lib, function)
    abi.argtypes = [ctypes.c_char_p]
    abi.restype = ctypes.c_long
    reported = {name: abi(name.encode()) for name in expected}
    wrong = [f"{name} {reported[name]} (expected {value})" for name, value in expected.items()
             if reported[name] != value]
    if wrong:
        raise Unusable(f"the library disagrees with charrnn's Python code: {', '.join(wrong)}")


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    struct = abi.LstmStepStruct
    fields = {name: getattr(struct, name).offset for name, _ in struct._fields_}
    _check_abi(lib, "charrnn_step_abi", {"version": abi.STEP_ABI_VERSION, "block": abi.STEP_BLOCK,
                                         "size": ctypes.sizeof(struct), **fields})
    step = lib.charrnn_lstm_step  # (model, char_id, current, noise or NULL, scale) -> drawn id or -1
    step.argtypes = [ctypes.POINTER(abi.LstmStepStruct), ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_float]
    step.restype = ctypes.c_int
    gates = lib.charrnn_lstm_gates  # (batch, hidden, threads, gates, c, h, h_stride)
    gates.argtypes = [ctypes.c_int] * 3 + [ctypes.c_void_p] * 3 + [ctypes.c_int]
    gates.restype = None
    return lib


def _bind_recurrence(lib: ctypes.CDLL, prefix: str, version: int, **more: int) -> None:
    """Checks and types a training library's ABI function and two kernels, named `prefix`_abi,
    `prefix`_lstm_forward and `prefix`_lstm_backward (lstm_amx.c and lstm_vector.c alike);
    `more` are further ABI values to check."""
    _check_abi(lib, f"{prefix}_abi", {"version": version, "block": abi.UNIT_BLOCK,
                                      "batch_multiple": abi.BATCH_MULTIPLE,
                                      "hidden_multiple": abi.HIDDEN_MULTIPLE, **more})
    # (steps, batch, hidden, threads, x_gates, ids, w_packed, bias, h0, c0, acts, c, h)
    forward = getattr(lib, f"{prefix}_lstm_forward")
    forward.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] * 9
    forward.restype = ctypes.c_int  # 0, or one of abi's error codes
    # (steps, batch, hidden, threads, acts, c, c0, grad_h, w_packed, dh_rec, dc, d_gates, d_bias, ids, d_table)
    backward = getattr(lib, f"{prefix}_lstm_backward")
    backward.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] * 11
    backward.restype = ctypes.c_int


def _bind_vector(lib: ctypes.CDLL, value_bytes: int) -> ctypes.CDLL:
    """lstm_vector.c's build whose values are `value_bytes` wide (2: bf16, 4: fp32)."""
    _bind_recurrence(lib, "charrnn_vector", abi.VECTOR_ABI_VERSION, value_bytes=value_bytes)
    return lib


def _bind_amx(lib: ctypes.CDLL) -> ctypes.CDLL:
    _bind_recurrence(lib, "charrnn_amx", abi.AMX_ABI_VERSION)
    lib.charrnn_amx_init.argtypes = []
    lib.charrnn_amx_init.restype = ctypes.c_int
    if lib.charrnn_amx_init() != 0:
        raise Unusable("the kernel did not grant this process the AMX tile state")
    return lib
