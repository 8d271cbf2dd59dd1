"""Helpers for the reliability battery: tiny corpora, the CLI in-process and as real processes,
and checks on what is left in a checkpoint dir.

Every test in the battery really does the bad thing (kills, fills disks, feeds hostile files)
and checks what a user would see. Models are tiny (1x16) and corpora a few thousand chars.
"""

from __future__ import annotations

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
from charrnn.text import cache

TINY = ["--hidden", "16", "--layers", "1", "--batch-size", "4", "--seq-len", "16"]
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
def proc_env() -> dict[str, str]:
    # conftest.py has already removed the shell's CHARRNN_* options and kept the CPU pinning.
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def charrnn_argv(*args: object) -> list[str]:
    return [sys.executable, "-m", "charrnn", *map(str, args)]


def spawn(*args: object, stderr_path: Path, **kwargs) -> subprocess.Popen:
    """Starts `python -m charrnn ARGS` with stderr going to a file the test can poll."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    with open(stderr_path, "wb") as err:
        return subprocess.Popen(charrnn_argv(*args), stderr=err, env=proc_env(), **kwargs)


def run_charrnn(*args: object, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(charrnn_argv(*args), capture_output=True, text=True, env=proc_env(), timeout=timeout,
                          **kwargs)


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
