"""The suite's fixtures; its helpers are in helpers.py."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from .helpers import TINY, clear_libraries, make_corpus

# Tests use tiny models: one thread avoids oversubscribing small CI machines.
torch.set_num_threads(1)

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
