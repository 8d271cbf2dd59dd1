"""The helpers of the whole suite (fixtures live in conftest.py): tiny corpora and models, the CLI
in-process (`invoke`, click's CliRunner) and as a real process (`run_charrnn`, `spawn`), torch's
threads, the C libraries' caches, and checks on what is left in a checkpoint dir.

The reliability battery (tests/reliability/) really does the bad thing (kills, fills disks,
feeds hostile files) and checks what a user would see with these.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from click.testing import CliRunner, Result

from charrnn import checkpoint
from charrnn.cli import cli
from charrnn.native import build as native
from charrnn.runtime import threads_for_block
from charrnn.text import cache

# A model and batch small enough that a test trains it in a second or two.
TINY = ["--layers", "1", "--hidden", "32", "--batch-size", "8", "--seq-len", "32"]
SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
WORDS = ("the cat sat on a mat while rain fell over old stone walls and quiet rivers ran to "
         "the sea, so we found light in small things; she said: why not? Then 42 birds flew.").split()


def make_text(chars: int = 4000, seed: int = 0) -> str:
    """A small ASCII text (one byte per char) with a vocabulary of about 40 symbols."""
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS) + ("\n" if rng.random() < 0.1 else " ")
        out.append(word)
        size += len(word)
    return "".join(out)[:chars]


def make_corpus(chars: int = 20_000, seed: int = 0) -> str:
    """A small learnable text: sentences from a tiny grammar."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "my friend", "the old man", "she", "we"]
    verbs = ["sat on", "looked at", "ran to", "found", "liked"]
    objects = ["the mat", "a tree", "the house", "a red ball", "the river"]
    out = []
    size = 0
    while size < chars:
        line = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}.\n"
        out.append(line)
        size += len(line)
    return "".join(out)[:chars]


def write_corpus(path: Path, chars: int = 4000, seed: int = 0) -> Path:
    path.write_text(make_text(chars, seed), encoding="utf-8")
    return path


# ---- the CLI in-process -----------------------------------------------------------------
def invoke(*args: object, input: str | bytes | None = None) -> Result:
    """Runs `charrnn ARGS` in-process; fails the test if a Python exception escaped (a traceback)."""
    result = CliRunner().invoke(cli, [str(a) for a in args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"charrnn {' '.join(map(str, args))} raised {result.exception!r}; a user would see a traceback\n"
            f"{result.output}"
        ) from result.exception
    assert "Traceback" not in result.output
    return result


def succeeds(*args: object, input: str | bytes | None = None) -> Result:
    """`invoke`, and the command must exit 0."""
    result = invoke(*args, input=input)
    assert result.exit_code == 0, result.output
    return result


def one_line_error(text: str) -> str:
    """The single 'Error: ...' line of `text`, asserting there is nothing else."""
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line error, got:\n{text}"
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


def train_tiny(ckpt_dir: Path, corpus: Path, *extra: object, steps: int = 6) -> Result:
    result = invoke("train", corpus, "--checkpoint-dir", ckpt_dir, *TINY, "--max-steps", steps,
                    "--eval-every", 3, "-q", *extra)
    assert result.exit_code == 0, result.output
    return result


# ---- threads and the C libraries ----------------------------------------------------------------
@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to `count` for the block (the session runs on one)."""
    with threads_for_block(count):
        yield


NATIVE_LIBRARIES = (native.library, native.amx_library, native.avx512_library, native.fp32_library)  # memoized


def clear_libraries() -> None:
    """Forgets every loaded C library, so the next call builds or loads it again."""
    for load in NATIVE_LIBRARIES:
        load.cache_clear()


def assert_step_matches_fused(model, make_step, batch: int, threads: int) -> None:
    """A generation stepper (`make_step(model, batch)`), started from a carried-in state,
    gives the fused core's logits, next-char distribution and final state to 1e-5."""
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, 60), generator=torch.Generator().manual_seed(0))
    with torch_threads(threads), torch.no_grad():
        _, start = model(ids[:, :10])
        ref, ref_state = model(ids[:, 10:], start)
        step = make_step(model, batch)
        step.load(start)
        got = torch.stack([step.step(ids[:, t].tolist()).clone() for t in range(10, ids.size(1))], 1)
    assert torch.allclose(got.softmax(-1), ref.softmax(-1), atol=1e-5)
    assert torch.allclose(got, ref, atol=1e-5)
    assert len(step.state()) == len(ref_state)
    for a, b in zip(step.state(), ref_state):
        assert torch.allclose(a, b, atol=1e-5)


# ---- checkpoints --------------------------------------------------------------------------
def _walk(value: object) -> Iterator[object]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _walk(v)
    else:
        yield value


def load_finite(path: Path) -> checkpoint.Checkpoint:
    """Loads with charrnn's own loader; every tensor and every recorded figure must be finite."""
    ckpt = checkpoint.load(path)
    bad = [t.shape for t in _walk(ckpt.data)
           if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all()]
    assert not bad, f"{path} holds non-finite tensors {bad}"
    figures = [f for f in _walk([ckpt.data.get(k) for k in ("metrics", "best_val_loss", "schedule")])
               if isinstance(f, float)]
    assert all(math.isfinite(f) for f in figures), f"{path} records non-finite figures: {ckpt.data['metrics']}"
    return ckpt


def leftovers(folder: Path) -> list[str]:
    """Names in a checkpoint dir other than latest.pt, best.pt and the token cache."""
    expected = (checkpoint.LATEST, checkpoint.BEST, cache.CACHE_FOLDER)
    return sorted(p.name for p in folder.iterdir() if p.name not in expected)


def is_temp_of(name: str, target: str) -> bool:
    """Is `name` a temp file that fileio.atomic_writer makes while writing `target`?"""
    return name.startswith(f".{target}.") and name.endswith(".tmp")


# ---- real processes ---------------------------------------------------------------------
def charrnn_env() -> dict[str, str]:
    """The environment of a charrnn subprocess: one thread, unbuffered, and no checkpoint dir from
    the developer's shell (the battery's conftest also removes the shell's other CHARRNN_* options
    and keeps the session's CPU pinning)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("CHARRNN_CHECKPOINT_DIR", None)
    return env


def charrnn_argv(*args: object) -> list[str]:
    return [sys.executable, "-m", "charrnn", *map(str, args)]


def spawn(*args: object, stderr_path: Path, **kwargs) -> subprocess.Popen:
    """Starts `python -m charrnn ARGS` with stderr going to a file the test can poll."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    with open(stderr_path, "wb") as err:
        return subprocess.Popen(charrnn_argv(*args), stderr=err, env=charrnn_env(), **kwargs)


def run_charrnn(*args: object, input: bytes | str | None = None, timeout: float = 120, check: bool = True,
                **kwargs) -> subprocess.CompletedProcess:
    """The real command line, as a shell runs it (`kwargs`: subprocess.run's, e.g. cwd, text);
    with `check`, a non-zero exit fails the test with its stderr."""
    if input is None:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.run(charrnn_argv(*args), input=input, capture_output=True, env=charrnn_env(), timeout=timeout,
                          **kwargs)
    if check and proc.returncode != 0:
        err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
        raise AssertionError(f"charrnn {' '.join(map(str, args))} exited {proc.returncode}: {err}")
    return proc


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30.0,
             proc: subprocess.Popen | None = None, poll: float = 0.005) -> object:
    """Polls until `predicate()` is truthy; fails if it times out or `proc` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited {proc.returncode} while waiting for {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
