"""Fixtures for the reliability battery; the helpers live in tests/helpers.py."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ..helpers import train_tiny, write_corpus

torch.set_num_threads(1)  # in-process training: tiny models gain nothing from threads


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes longer than the rest of the battery together")


# The variables tests/conftest.py's session fixture `cpu_unless_asked` sets to pin `train` and
# `eval` to the CPU: the battery's tests are written for the CPU, and on a GPU host `auto` would
# otherwise take the GPU.
PINNED = ("CHARRNN_TRAIN_DEVICE", "CHARRNN_EVAL_DEVICE")


@pytest.fixture(autouse=True)
def _no_charrnn_env(cpu_unless_asked: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # CHARRNN_* variables set options (auto_envvar_prefix); a developer's shell must not change results.
    # The shell's own values of PINNED were already replaced by the session's pinning, which stays.
    for name in list(os.environ):
        if name.startswith("CHARRNN_") and name not in PINNED:
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a tiny trained model (latest.pt and best.pt); read-only for tests."""
    folder = tmp_path_factory.mktemp("trained")
    train_tiny(folder / "ck", write_corpus(folder / "corpus.txt"), steps=20)
    return folder / "ck"


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen]]:
    """Processes a test started; any still running at the end are killed, never left behind."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
