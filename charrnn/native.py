"""LSTM arithmetic in C, compiled on first use: the sampler's step (lstm_step.c) and, on
CPUs with AMX, the recurrence of a training step (lstm_amx.c; see charrnn.lstm_train).

Stepping one stream through eager PyTorch costs about fifteen tensor operations per
character, each with microseconds of set-up, on top of reading the weights; on a 2-core
CPU that held sampling near 8,000 chars/s. The C step does the same arithmetic in one call,
close to the rate at which the weights can be read (bench/speed.py). `torch.compile` of
the same step was slower than eager here (bench/README.md), so the step is written out.
The same library computes the gates of several streams for the tensor step (one call a
layer instead of six tensor operations).

The library is built with the system C compiler (`$CC`, else `cc`) and OpenMP, and cached
in the user's cache folder under a name that hashes the source and lstm_math.h, the compiler, its flags
and the CPU, so a changed file or another machine sharing the folder gets its own build.
Anything that goes wrong (no compiler, no OpenMP, an unwritable cache) leaves `library()`
returning None and the sampler on the eager step, which gives the same distribution; and
`amx_library()` None and training on `nn.LSTM`, which computes the same function.
`CHARRNN_NATIVE=0` turns both off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from .fileio import atomic_path
from .runtime import cpu_multiplies_bf16

SOURCE = Path(__file__).with_name("lstm_step.c")
AMX_SOURCE = Path(__file__).with_name("lstm_amx.c")
HEADERS = (Path(__file__).with_name("lstm_math.h"),)  # included by both sources
BLOCK = 16  # hidden units per work item; lstm_step.c's BLOCK
# -fno-trapping-math lets the compiler vectorize floorf (and so the gates); nothing here
# reads floating-point exception flags.
FLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-fopenmp", "-shared", "-fPIC")
ENABLE_ENV = "CHARRNN_NATIVE"
COMPILE_TIMEOUT_S = 120


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


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
    return _load(SOURCE, _bind)


@functools.cache
def amx_library() -> ctypes.CDLL | None:
    """lstm_amx.c's recurrence, on CPUs with AMX-BF16 whose kernel grants the tiles; else None."""
    if not cpu_multiplies_bf16():
        return None
    lib = _load(AMX_SOURCE, _bind_amx)
    return lib if lib is not None and lib.charrnn_amx_init() == 0 else None


def _load(source: Path, bind: Callable[[ctypes.CDLL], ctypes.CDLL]) -> ctypes.CDLL | None:
    if not enabled():
        return None
    compiler = shutil.which(os.environ.get("CC") or "cc")
    if compiler is None or not all(path.is_file() for path in (source, *HEADERS)):
        return None
    path = cache_folder() / f"{source.stem}-{_build_key(compiler, source)}.so"
    try:
        if path.is_file():
            try:
                return bind(ctypes.CDLL(str(path)))
            except OSError:
                pass  # damaged: built again below
        try:
            with atomic_path(path) as tmp:
                _compile(compiler, source, tmp)
            return bind(ctypes.CDLL(str(path)))
        except OSError:  # no writable cache: a private build for this process
            with tempfile.TemporaryDirectory() as folder:
                tmp = Path(folder) / path.name
                _compile(compiler, source, tmp)
                return bind(ctypes.CDLL(str(tmp)))  # stays mapped once loaded
    except (OSError, subprocess.SubprocessError, AttributeError):
        return None


def _build_key(compiler: str, source: Path) -> str:
    digest = hashlib.sha256(source.read_bytes())
    for header in HEADERS:
        digest.update(b"\0" + header.read_bytes())
    for part in (compiler, *FLAGS, platform.system(), platform.machine(), _cpu_signature()):
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


def _compile(compiler: str, source: Path, output: Path) -> None:
    subprocess.run([compiler, *FLAGS, "-o", str(output), str(source)], check=True, capture_output=True,
                   timeout=COMPILE_TIMEOUT_S, stdin=subprocess.DEVNULL)


class Model(ctypes.Structure):
    """lstm_step.c's struct charrnn_lstm: the packed weights and the buffers of one stream."""

    _fields_ = [(name, ctypes.c_int) for name in ("layers", "hidden", "vocab", "padded_vocab", "threads")] + [
        ("table", ctypes.c_void_p),
        ("weights", ctypes.POINTER(ctypes.c_void_p)),
        ("biases", ctypes.POINTER(ctypes.c_void_p)),
        ("head_w", ctypes.c_void_p),
        ("head_b", ctypes.c_void_p),
        ("h", ctypes.c_void_p * 2),
        ("c", ctypes.c_void_p),
        ("logits", ctypes.c_void_p),
    ]


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    step = lib.charrnn_lstm_step  # (model, char_id, current, noise or NULL, scale) -> drawn id or -1
    step.argtypes = [ctypes.POINTER(Model), ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_float]
    step.restype = ctypes.c_int
    gates = lib.charrnn_lstm_gates  # (batch, hidden, threads, gates, c, h, h_stride)
    gates.argtypes = [ctypes.c_int] * 3 + [ctypes.c_void_p] * 3 + [ctypes.c_int]
    gates.restype = None
    return lib


def _bind_amx(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.charrnn_amx_init.argtypes = []
    lib.charrnn_amx_init.restype = ctypes.c_int
    # (steps, batch, hidden, threads, x_gates, ids, w_packed, bias, h0, c0, acts, c, h)
    lib.charrnn_amx_lstm_forward.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] * 9
    lib.charrnn_amx_lstm_forward.restype = ctypes.c_int  # -1: out of memory
    # (steps, batch, hidden, threads, acts, c, c0, grad_h, w_packed, dh_rec, dc, d_gates, d_bias, ids, d_table)
    lib.charrnn_amx_lstm_backward.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] * 11
    lib.charrnn_amx_lstm_backward.restype = ctypes.c_int  # -1: out of memory
    return lib
