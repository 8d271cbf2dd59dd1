import contextlib
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from charrnn.native import build as native
from charrnn.runtime import threads_for_block

# Tests use tiny models: one thread avoids oversubscribing small CI machines.
torch.set_num_threads(1)

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
TINY = ["--layers", "1", "--hidden", "32", "--batch-size", "8", "--seq-len", "32"]


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


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to `count` for the block (the session runs on one)."""
    with threads_for_block(count):
        yield


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


NATIVE_LIBRARIES = (native.library, native.amx_library, native.avx512_library, native.fp32_library)  # memoized


def clear_libraries() -> None:
    """Forgets every loaded C library, so the next call builds or loads it again."""
    for load in NATIVE_LIBRARIES:
        load.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory) -> Iterator[Path]:
    """The C libraries build into a cache folder of the test session, not the user's (the CLI
    runs in subprocesses inherit it)."""
    folder = tmp_path_factory.mktemp("xdg_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        clear_libraries()
        yield folder
    clear_libraries()


@pytest.fixture(scope="session", autouse=True)
def cpu_unless_asked() -> Iterator[None]:
    """`train` and `eval` run on the CPU unless a test passes --device: on a machine with a GPU,
    `auto` would otherwise take it for tests written for the CPU's kernels and its reproducible
    results. tests/test_gpu.py names its device."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHARRNN_TRAIN_DEVICE", "cpu")
        patch.setenv("CHARRNN_EVAL_DEVICE", "cpu")
        yield


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(make_corpus(), encoding="utf-8")
    return path


def charrnn_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("CHARRNN_CHECKPOINT_DIR", None)
    return env


def run_charrnn(*args: str, input: bytes | None = None, cwd: Path | None = None, timeout: float = 120,
                check: bool = True) -> subprocess.CompletedProcess:
    """The real command line, as a shell would run it."""
    proc = subprocess.run([sys.executable, "-m", "charrnn", *args], input=input, capture_output=True,
                          cwd=cwd, env=charrnn_env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"charrnn {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode()}")
    return proc


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory, corpus_file) -> Path:
    """A tiny model trained once for the whole session (read-only for tests)."""
    from click.testing import CliRunner

    from charrnn.cli import cli

    out = tmp_path_factory.mktemp("trained")
    result = CliRunner().invoke(cli, ["train", str(corpus_file), "--checkpoint-dir", str(out), "--max-steps", "150",
                                      "--eval-every", "50", "--lr", "1e-2", "-q", *TINY])
    assert result.exit_code == 0, result.output
    return out
