"""The C step of one LSTM sampling stream (charrnn/native/lstm_step.c), its build and its fallback."""

import ctypes
import importlib.util
import math
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from charrnn.generation.sampler import Sampler, SamplingOptions
from charrnn.generation.steppers import LSTMStep, NativeLSTMStep, step_cell
from charrnn.model import CharRNN, ModelConfig
from charrnn.native import abi
from charrnn.native import build as native
from charrnn.native import recurrence as lstm_train
from charrnn.runtime import cpu_has, cpu_has_amx_bf16, cpu_has_avx2_fma
from charrnn.text.vocab import Vocabulary

from ..helpers import assert_step_matches_fused, clear_libraries

NO_LIBRARY = "no C compiler with OpenMP here to build charrnn/native/lstm_step.c"


@pytest.fixture
def library():
    """The built C library, or a skip (checked when the test runs, so that the build goes
    to the session's own cache folder, not at collection time to the user's)."""
    built = native.library()
    if built is None:
        pytest.skip(NO_LIBRARY)
    return built


@pytest.fixture
def fresh_library(tmp_path, monkeypatch):
    """library() and the training libraries with their memos cleared and an empty
    cache folder; the memos are cleared again after."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    clear_libraries()
    yield tmp_path / "cache" / "charrnn"
    clear_libraries()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layers, hidden, vocab", [(1, 16, 16), (3, 48, 23), (2, 32, 70)])
def test_native_step_matches_fused_forward(library, layers, hidden, vocab, threads):
    """From a carried-in state, the C step gives the fused core's next-char distribution,
    logits and final state to 1e-5; vocabularies that are not a multiple of the block
    exercise the padded head."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=vocab, layers=layers, hidden=hidden)).eval()
    assert_step_matches_fused(model, lambda m, batch: NativeLSTMStep(m, library), 1, threads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 4])
def test_c_gates_of_the_tensor_step_match_fused_forward(library, batch, threads):
    """Several streams (and one stream whose hidden size the C step cannot block) take the
    tensor step with its gates computed in C."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=23, layers=3, hidden=40)).eval()
    assert_step_matches_fused(model, lambda m, b: LSTMStep(m, b, library), batch, threads)


def test_native_step_saturates_without_overflow(library):
    """Gate inputs far outside exp's float range give the limits of sigmoid and tanh, not NaN."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=16, layers=2, hidden=16)).eval()
    with torch.no_grad():
        for p in model.core.parameters():
            p.mul_(1e4)
        ids = torch.randint(0, 16, (1, 20))
        ref, _ = model(ids, model.initial_state(1))
        step = NativeLSTMStep(model, library)
        got = torch.stack([step.step([int(i)]).clone() for i in ids[0]], 1)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize("hidden", [32, 43])  # whole vectors only, and a remainder
def test_c_gates_give_nan_for_nan_and_the_limits_for_infinity(library, hidden):
    """exp_approx (lstm_math.h) passes a NaN through, as a NaN, and saturates at +-inf, so the
    gates agree with torch's on inputs holding NaN and +-inf among ordinary values."""
    torch.manual_seed(0)
    batch = 4
    gates = torch.randn(batch, 4 * hidden) * 3
    specials = torch.tensor([float("nan"), float("inf"), float("-inf"), 1e30, -1e30])
    where = torch.randperm(gates.numel())[:gates.numel() // 4]
    gates.view(-1)[where] = specials[torch.arange(where.numel()) % specials.numel()]
    c = torch.randn(batch, hidden)
    i, f, o, g = gates.view(batch, 4, hidden).unbind(1)
    want_c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    want_h = torch.sigmoid(o) * torch.tanh(want_c)
    h = torch.full((batch, hidden), 7.0)
    library.charrnn_lstm_gates(batch, hidden, 1, gates.data_ptr(), c.data_ptr(), h.data_ptr(), hidden)
    assert want_h.isnan().any() and not want_h.isnan().all()
    torch.testing.assert_close(c, want_c, atol=1e-6, rtol=1e-5, equal_nan=True)
    torch.testing.assert_close(h, want_h, atol=1e-6, rtol=1e-5, equal_nan=True)


EXP_PROBE = r"""
#include <math.h>
#include <stdio.h>
#include "lstm_math.h"
int main(void) {
    volatile float x[] = {NAN, -NAN, INFINITY, -INFINITY, 1.0f};
    for (int k = 0; k < 5; k++)
        printf("%.9g %.9g %.9g\n", exp_approx(x[k]), sigmoid(x[k]), tanh_approx(x[k]));
    return 0;
}
"""


def test_exp_approx_is_defined_for_nan_and_infinity(tmp_path):
    """Under the undefined-behaviour sanitizer (which catches an (int32_t) cast of a NaN),
    exp_approx gives NaN for NaN and saturates at +-inf, as do sigmoid and tanh."""
    compiler = shutil.which(os.environ.get("CC") or "cc")
    if compiler is None:
        pytest.skip("no C compiler (cc or $CC) here")
    (tmp_path / "probe.c").write_text(EXP_PROBE)
    built = subprocess.run([compiler, "-O2", "-fsanitize=undefined,float-cast-overflow", "-fno-sanitize-recover=all",
                            "-I", str(native.HEADERS[0].parent), "-o", str(tmp_path / "probe"),
                            str(tmp_path / "probe.c"), "-lm"], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"{compiler} cannot build with the undefined-behaviour sanitizer here")
    ran = subprocess.run([str(tmp_path / "probe")], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    rows = [[float(v) for v in line.split()] for line in ran.stdout.splitlines()]
    assert all(math.isnan(v) for row in rows[:2] for v in row)
    [big, one, also_one], [tiny, zero, minus_one] = rows[2:4]
    assert big > 1e38 and math.isfinite(big) and one == also_one == 1.0
    assert 0 < tiny < 1e-37 and zero < 1e-38 and minus_one == -1.0
    assert rows[4] == pytest.approx([math.e, 1 / (1 + math.exp(-1)), math.tanh(1)], rel=1e-6)


def test_step_cell_takes_the_c_step_where_it_applies(library, monkeypatch):
    lstm = CharRNN(ModelConfig(vocab_size=5, hidden=32)).eval()
    assert isinstance(step_cell(lstm, 1), NativeLSTMStep)
    assert isinstance(step_cell(lstm, 4), LSTMStep)  # several streams: eager, batched
    assert isinstance(step_cell(CharRNN(ModelConfig(vocab_size=5, hidden=24)).eval(), 1), LSTMStep)
    monkeypatch.setenv(native.ENABLE_ENV, "0")
    native.library.cache_clear()
    try:
        assert isinstance(step_cell(lstm, 1), LSTMStep)
    finally:
        native.library.cache_clear()


@pytest.mark.parametrize("options", [SamplingOptions(temperature=0.8), SamplingOptions(temperature=1e-30),
                                     SamplingOptions(temperature=0), SamplingOptions(top_k=4),
                                     SamplingOptions(top_p=0.8)], ids=repr)
def test_c_and_eager_steps_write_the_same_text(library, monkeypatch, options):
    """Same seed, same text, with or without the C library: one stream (where the C step
    also draws at a plain temperature) and three (tensor step, gates in C or not); the draws
    see logits that agree to 1e-7, far inside the gaps between their noisy scores."""
    torch.manual_seed(1)
    vocab = Vocabulary.from_text("abcdefghij klmnop\n")
    model = CharRNN(ModelConfig(vocab_size=len(vocab), layers=2, hidden=32)).eval()
    sampler = Sampler(model, vocab)
    with_c = list(sampler.generate("ab", 300, options, seed=3))
    batch_with_c = list(sampler.generate("ab", 100, options, num_samples=3, seed=3))
    monkeypatch.setenv(native.ENABLE_ENV, "0")
    native.library.cache_clear()
    try:
        eager = list(sampler.generate("ab", 300, options, seed=3))
        batch_eager = list(sampler.generate("ab", 100, options, num_samples=3, seed=3))
    finally:
        native.library.cache_clear()
    assert with_c == eager
    assert batch_with_c == batch_eager
    if options.temperature >= 0.5:
        assert len(set(c for [c] in with_c)) > 2  # a real sample, not one repeated character


def test_build_is_cached_and_a_damaged_build_is_replaced(fresh_library, tmp_path, monkeypatch):
    """A cached build that fits is loaded without compiling; one that cannot be loaded is
    built again in its place. (Each case uses its own folder: a process never loads the
    same path twice, and a loaded library must not be overwritten under it.)"""
    if native.library() is None:
        pytest.skip(NO_LIBRARY)
    [built] = fresh_library.glob("lstm_step-*.so")

    def cached_copy(name: str, content: bytes) -> Path:
        folder = tmp_path / name / "charrnn"
        folder.mkdir(parents=True)
        (folder / built.name).write_bytes(content)
        monkeypatch.setenv("XDG_CACHE_HOME", str(folder.parent))
        native.library.cache_clear()
        return folder / built.name

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again although the cached build fits")

    with monkeypatch.context() as patch:
        patch.setattr(native, "_compile", no_compiling)
        cached_copy("reused", built.read_bytes())
        assert native.library() is not None

    damaged = cached_copy("damaged", b"not a shared library")
    assert native.library() is not None
    assert damaged.read_bytes() != b"not a shared library"
    assert [p.name for p in damaged.parent.iterdir()] == [built.name]  # no temp files left


def test_unwritable_cache_builds_privately(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    native.library.cache_clear()
    try:
        if native.library() is None:
            monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "writable"))
            native.library.cache_clear()
            assert native.library() is None, "builds into a writable cache but not privately"
            pytest.skip(NO_LIBRARY)
        assert blocker.read_text() == "a file where the cache folder would go"
    finally:
        native.library.cache_clear()


def test_the_step_builds_wherever_a_c_compiler_with_openmp_works(fresh_library, tmp_path):
    """A mistake in lstm_step.c (or lstm_amx.c on a CPU with AMX, lstm_vector.c's builds on one
    with AVX512-BF16 or AVX2) must fail here, not turn the C code's tests into skips: if the
    compiler builds a trivial OpenMP library with the same flags, it must build ours."""
    compiler = shutil.which(os.environ.get("CC") or "cc")
    if compiler is None:
        pytest.skip("no C compiler (cc or $CC) here")
    probe = tmp_path / "probe.c"
    probe.write_text("int probe(void) { int n = 0;\n#pragma omp parallel reduction(+:n)\nn += 1;\nreturn n; }\n")
    built = subprocess.run([compiler, *native.FLAGS, "-o", str(tmp_path / "probe.so"), str(probe)],
                           capture_output=True)
    if built.returncode != 0:
        pytest.skip(f"{compiler} cannot build OpenMP libraries here")
    has_fp32 = cpu_has_avx2_fma()
    builds = ([(native.SOURCE, ())] + ([(native.AMX_SOURCE, ())] if cpu_has_amx_bf16() else [])
              + ([(native.VECTOR_SOURCE, ())] if cpu_has("avx512_bf16") else [])
              + ([(native.VECTOR_SOURCE, native.FP32_BUILD)] if has_fp32 else []))
    for source, defines in builds:
        errors = subprocess.run([compiler, *native.FLAGS, *defines, "-Wall", "-Werror", "-o",
                                 str(tmp_path / "built.so"), str(source)], capture_output=True, text=True)
        assert errors.returncode == 0, errors.stderr
    assert native.library() is not None
    if cpu_has_amx_bf16():
        assert native.amx_library() is not None
    if cpu_has("avx512_bf16"):
        assert native.avx512_library() is not None
    if has_fp32:
        assert native.fp32_library() is not None


def test_every_file_the_package_reads_is_in_its_wheel(tmp_path):
    """A wheel built from the sources (not an editable install, which reads the checkout) holds
    the C sources and headers native/build.py compiles, viz's page template and export's page,
    script and WebAssembly: a file left out would not fail anywhere, it would leave installed
    copies on the slow paths or without a command."""
    if importlib.util.find_spec("setuptools.command.bdist_wheel") is None and importlib.util.find_spec("wheel") is None:
        pytest.skip("this setuptools builds no wheels offline (setuptools >= 70.1, or the wheel package, does)")
    root = Path(native.__file__).parents[2]
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "charrnn", tmp_path / "charrnn", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("charrnn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = root / "charrnn"
    needed = [native.SOURCE, native.AMX_SOURCE, native.VECTOR_SOURCE, *native.HEADERS,
              package / "inspect" / "viz_page.html", *(package / "export").glob("page.*"),
              package / "export" / "wasm" / "step.wasm", package / "export" / "wasm" / "step.c"]
    for path in needed:
        assert path.relative_to(root).as_posix() in names, path


@pytest.mark.parametrize("compiler", ["/nonexistent/cc", "false"])
def test_no_usable_compiler_falls_back_to_the_eager_step(fresh_library, monkeypatch, compiler):
    """A missing compiler, or one that fails, leaves sampling on the eager step (same API,
    same text) and training on nn.LSTM, with nothing left in the cache folder."""
    monkeypatch.setenv("CC", compiler)
    assert native.library() is None
    assert native.amx_library() is None
    assert native.avx512_library() is None
    assert native.fp32_library() is None
    for dtype in (torch.float32, torch.bfloat16):
        assert lstm_train.choose("lstm", 32, 16, "cpu", dtype) is None
    model = CharRNN(ModelConfig(vocab_size=5, hidden=32)).eval()
    assert isinstance(step_cell(model, 1), LSTMStep)
    vocab = Vocabulary.from_text("abcde")
    assert len(list(Sampler(model, vocab).generate("a", 20, SamplingOptions(), seed=0))) == 20
    assert not fresh_library.exists() or not any(fresh_library.iterdir())


@pytest.fixture
def rebound():
    """library() and the training libraries bound again (from the session's cache) in
    the test, and once more after it."""
    clear_libraries()
    yield
    clear_libraries()


def test_the_libraries_report_the_layout_and_constants_python_uses(library):
    reported = library.charrnn_step_abi
    assert reported(b"size") == ctypes.sizeof(abi.LstmStepStruct)
    assert reported(b"block") == abi.STEP_BLOCK
    assert reported(b"version") == abi.STEP_ABI_VERSION
    for name, _ in abi.LstmStepStruct._fields_:
        assert reported(name.encode()) == getattr(abi.LstmStepStruct, name).offset, name
    assert reported(b"no such field") == -1
    amx = native.amx_library()
    if amx is not None:
        assert [amx.charrnn_amx_abi(name) for name in (b"version", b"block", b"batch_multiple", b"hidden_multiple",
                                                       b"no such constant")] == [
            abi.AMX_ABI_VERSION, abi.UNIT_BLOCK, abi.BATCH_MULTIPLE, abi.HIDDEN_MULTIPLE, -1]
    for vector, value_bytes in ((native.avx512_library(), 2), (native.fp32_library(), 4)):
        if vector is not None:
            assert [vector.charrnn_vector_abi(name) for name in (b"version", b"block", b"batch_multiple",
                                                                 b"hidden_multiple", b"value_bytes",
                                                                 b"no such constant")] == [
                abi.VECTOR_ABI_VERSION, abi.UNIT_BLOCK, abi.BATCH_MULTIPLE,
                abi.HIDDEN_MULTIPLE, value_bytes, -1]


class ReorderedStruct(ctypes.Structure):
    """LstmStepStruct with two fields of the same size swapped: the size agrees, the offsets do not."""

    _fields_ = abi.LstmStepStruct._fields_[:-2] + abi.LstmStepStruct._fields_[:-3:-1]


class LongerStruct(ctypes.Structure):
    _fields_ = abi.LstmStepStruct._fields_ + [("extra", ctypes.c_int)]


@pytest.mark.parametrize("change", ["version", "block", "reordered", "longer"])
def test_a_step_library_that_disagrees_with_python_is_not_used(library, rebound, monkeypatch, capsys, change):
    """A library whose struct layout or constants differ from abi.py's is refused at load
    (and the reason given under CHARRNN_NATIVE=verbose): sampling takes the eager step."""
    real = abi.LstmStepStruct
    if change == "version":
        monkeypatch.setattr(abi, "STEP_ABI_VERSION", 2)
        reported = "version 1 (expected 2)"
    elif change == "block":
        monkeypatch.setattr(abi, "STEP_BLOCK", 8)
        reported = "block 16 (expected 8)"
    elif change == "reordered":
        monkeypatch.setattr(abi, "LstmStepStruct", ReorderedStruct)
        reported = (f"logits {real.logits.offset} (expected {real.c.offset}), "
                    f"c {real.c.offset} (expected {real.logits.offset})")
    else:
        monkeypatch.setattr(abi, "LstmStepStruct", LongerStruct)
        reported = f"size {ctypes.sizeof(real)} (expected {ctypes.sizeof(LongerStruct)}), extra -1"
    monkeypatch.setenv(native.ENABLE_ENV, "verbose")
    assert native.library() is None
    assert isinstance(step_cell(CharRNN(ModelConfig(vocab_size=5, hidden=32)).eval(), 1), LSTMStep)
    err = capsys.readouterr().err
    assert "cannot use lstm_step.c (sampling takes the PyTorch step)" in err
    assert reported in err


@pytest.mark.parametrize("kind", ["amx", "avx512", "fp32"])
def test_a_training_library_that_disagrees_with_lstm_train_is_not_used(rebound, monkeypatch, capsys, kind):
    load = {"amx": native.amx_library, "avx512": native.avx512_library, "fp32": native.fp32_library}[kind]
    source = {"amx": "lstm_amx.c", "avx512": "lstm_vector.c", "fp32": "lstm_vector.c"}[kind]
    precision = "fp32" if kind == "fp32" else "bf16"
    if load() is None:
        pytest.skip(f"needs a CPU and a C compiler that build charrnn/native/{source} for {precision} training")
    clear_libraries()
    monkeypatch.setattr(abi, "HIDDEN_MULTIPLE", 64)
    monkeypatch.setenv(native.ENABLE_ENV, "verbose")
    monkeypatch.setenv(lstm_train.KERNEL_ENV, kind)
    assert load() is None
    assert lstm_train.choose("lstm", 64, 16, "cpu", torch.float32 if precision == "fp32" else torch.bfloat16) is None
    err = capsys.readouterr().err
    assert f"cannot use {source} ({precision} training takes nn.LSTM)" in err
    assert "hidden_multiple 32 (expected 64)" in err


def broken_compiler(folder: Path, lines: int = 30) -> Path:
    """A C compiler that writes `lines` lines of errors and fails."""
    script = folder / "broken-cc"
    script.write_text(f"#!/bin/sh\nfor i in $(seq 1 {lines}); do echo \"error line $i\" >&2; done\nexit 4\n")
    script.chmod(0o755)
    return script


def test_verbose_says_why_a_build_failed(fresh_library, tmp_path, monkeypatch, capsys):
    """CHARRNN_NATIVE=verbose prints the compiler's status and the head of its stderr."""
    monkeypatch.setenv("CC", str(broken_compiler(tmp_path)))
    monkeypatch.setenv(native.ENABLE_ENV, "verbose")
    assert native.library() is None
    err = capsys.readouterr().err
    assert "cannot use lstm_step.c (sampling takes the PyTorch step)" in err
    assert "broken-cc exited with status 4" in err
    assert "    error line 1\n" in err and "    error line 20\n" in err and "error line 21" not in err
    assert "... (10 more lines)" in err
    assert native.amx_library() is None
    err = capsys.readouterr().err
    if cpu_has_amx_bf16():
        assert "cannot use lstm_amx.c (bf16 training takes nn.LSTM)" in err and "status 4" in err
    else:
        assert "cannot use lstm_amx.c (bf16 training takes nn.LSTM): this CPU has no AMX-BF16" in err
    assert native.avx512_library() is None
    err = capsys.readouterr().err
    if cpu_has("avx512_bf16"):
        assert "cannot use lstm_vector.c (bf16 training takes nn.LSTM)" in err and "status 4" in err
    else:
        assert "cannot use lstm_vector.c (bf16 training takes nn.LSTM): this CPU has no AVX512-BF16" in err
    assert native.fp32_library() is None
    err = capsys.readouterr().err
    if cpu_has_avx2_fma():
        assert "cannot use lstm_vector.c (fp32 training takes nn.LSTM)" in err and "status 4" in err
    else:
        assert "cannot use lstm_vector.c (fp32 training takes nn.LSTM): this CPU has no AVX2 and FMA" in err


def test_verbose_says_when_there_is_no_compiler(fresh_library, monkeypatch, capsys):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv(native.ENABLE_ENV, "Verbose ")
    assert native.library() is None
    assert "no C compiler: '/nonexistent/cc' is not on PATH (set CC to one)" in capsys.readouterr().err


@pytest.mark.parametrize("setting", [None, "1", "0"])
def test_a_failed_build_is_silent_unless_verbose(fresh_library, tmp_path, monkeypatch, capfd, setting):
    monkeypatch.setenv("CC", str(broken_compiler(tmp_path)))
    if setting is None:
        monkeypatch.delenv(native.ENABLE_ENV, raising=False)
    else:
        monkeypatch.setenv(native.ENABLE_ENV, setting)
    assert native.library() is None
    assert native.amx_library() is None
    assert native.avx512_library() is None
    assert native.fp32_library() is None
    assert capfd.readouterr() == ("", "")


def test_verbose_reports_once_per_process(tmp_path):
    """In a fresh process, as a command would run: the reason reaches stderr, once."""
    env = {**os.environ, "CC": str(broken_compiler(tmp_path, lines=2)), native.ENABLE_ENV: "verbose",
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    ran = subprocess.run([sys.executable, "-c", "from charrnn.native import build; build.library(); build.library()"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr.count("charrnn: cannot use lstm_step.c") == 1, ran.stderr
    assert "    error line 2" in ran.stderr
