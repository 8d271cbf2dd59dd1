"""The battery runs on the CPU it was written for, whatever the developer's shell exports.

tests/conftest.py pins `train` and `eval` to the CPU (CHARRNN_TRAIN_DEVICE / CHARRNN_EVAL_DEVICE)
for the whole session; this folder's conftest.py removes every other CHARRNN_* variable, which
would otherwise set options. It once removed the pinning too, so that on a GPU host the battery
trained on CUDA.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..helpers import TINY, charrnn_env, invoke, write_corpus

ROOT = Path(__file__).resolve().parents[2]
PINNING = {"CHARRNN_TRAIN_DEVICE": "cpu", "CHARRNN_EVAL_DEVICE": "cpu"}


def charrnn_variables(env) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("CHARRNN_")}


def test_the_battery_sees_only_the_cpu_pinning():
    assert charrnn_variables(os.environ) == PINNING


def test_training_in_the_battery_runs_on_the_cpu(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", chars=1000)
    result = invoke("train", corpus, "--checkpoint-dir", tmp_path / "ck", *TINY, "--max-steps", 1)
    assert result.exit_code == 0, result.output
    assert "device cpu" in result.output


def test_the_shell_changes_neither_the_pinning_nor_the_options():
    """A real pytest run of the test above under a shell that exports a GPU and option values."""
    hostile = {"CHARRNN_TRAIN_DEVICE": "cuda", "CHARRNN_EVAL_DEVICE": "cuda", "CHARRNN_SAMPLE_TEMP": "7",
               "CHARRNN_CHECKPOINT_DIR": "/nonexistent"}
    node = f"{Path(__file__).relative_to(ROOT)}::test_the_battery_sees_only_the_cpu_pinning"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
                          cwd=ROOT, env={**os.environ, **hostile}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_real_processes_in_the_battery_see_the_pinning():
    assert charrnn_variables(charrnn_env()) == PINNING
