"""A real two-process DistributedDataParallel job over gloo, launched by torchrun.

The commands are the README's "Training on several GPUs or machines" commands with
`--device cpu` and a tiny model.
"""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from charrnn import checkpoint

from ..helpers import charrnn_env, make_corpus, run_charrnn

TORCHRUN_SCRIPT = Path(sys.executable).with_name("torchrun")
TORCHRUN = [str(TORCHRUN_SCRIPT)] if TORCHRUN_SCRIPT.exists() else [sys.executable, "-m", "torch.distributed.run"]
# Dropout off, so that one process and two draw no different random masks and the runs
# differ only in the order floating-point sums are taken; fp32, because bf16's rounding
# (auto's choice on AMX CPUs) of products split differently between ranks is 1e-3, not 1e-7.
RUN = ["--device", "cpu", "--precision", "fp32", "--layers", "1", "--hidden", "32", "--batch-size", "8",
       "--seq-len", "32", "--dropout", "0", "--lr", "1e-2", "--eval-every", "6", "-q"]
# Measured differences are about 1e-7; a wrong gradient average (a sum, or one rank's
# half) or a wrong stream split moves the loss by more than 1e-2 within these steps.
TOLERANCE = 1e-5


# gloo's rare abort as a rank exits, after the run's work (docs/experiments.md, "Distributed
# runs": cause unknown). The checkpoints the test then compares show whether the run finished.
EXIT_ABORT = "terminate called without an active exception"


def torchrun(nproc: int, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [*TORCHRUN, "--standalone", "--nproc-per-node", str(nproc), "-m", "charrnn", *args]
    proc = subprocess.run(command, capture_output=True, cwd=cwd, env=charrnn_env(), timeout=240)
    stderr = proc.stderr.decode()
    if proc.returncode != 0 and stderr.count(EXIT_ABORT) == 1 and "exitcode  : -6" in stderr:
        warnings.warn(f"a rank aborted at exit under gloo ({EXIT_ABORT!r}); its checkpoints are checked below")
        return proc
    assert proc.returncode == 0, stderr[-3000:]
    return proc


def final(folder: Path) -> tuple[dict, dict]:
    data = checkpoint.load(folder / checkpoint.LATEST).data
    return data["metrics"][-1], data["model"]


def assert_same_run(a: Path, b: Path) -> None:
    (metrics_a, weights_a), (metrics_b, weights_b) = final(a), final(b)
    assert metrics_a["step"] == metrics_b["step"]
    assert metrics_a["train_loss"] == pytest.approx(metrics_b["train_loss"], abs=TOLERANCE)
    assert metrics_a["val_loss"] == pytest.approx(metrics_b["val_loss"], abs=TOLERANCE)
    for name, tensor in weights_a.items():
        assert torch.allclose(tensor, weights_b[name], atol=TOLERANCE, rtol=0), name


def test_two_gloo_processes_match_one_process_and_resume_with_another_world_size(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_corpus(20_000), encoding="utf-8")

    two = torchrun(2, "train", str(corpus), "--checkpoint-dir", "two", "--max-steps", "12", *RUN, cwd=tmp_path)
    assert two.stdout == b""
    # Rank 0 alone writes: one latest.pt (and the best.pt beside it), no per-rank files.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["best.pt", "cache", "latest.pt"]
    run_charrnn("train", str(corpus), "--checkpoint-dir", "one", "--max-steps", "12", *RUN, cwd=tmp_path)
    assert_same_run(tmp_path / "two", tmp_path / "one")

    # A checkpoint written by two ranks loads for sampling in one CPU process.
    sample = run_charrnn("sample", "--checkpoint", str(tmp_path / "two"), "--length", "50", "--seed", "1")
    assert len(sample.stdout.decode()) >= 50

    # Resume each with the other world size: the global streams and their state are
    # the same, only the split of rows between processes changes.
    run_charrnn("train", str(corpus), "--checkpoint-dir", "two", "--resume", "--max-steps", "24", *RUN,
                cwd=tmp_path)
    torchrun(2, "train", str(corpus), "--checkpoint-dir", "one", "--resume", "--max-steps", "24", *RUN, cwd=tmp_path)
    assert_same_run(tmp_path / "two", tmp_path / "one")


def test_stdin_and_a_world_without_torchrun_are_one_line_errors(tmp_path):
    from click.testing import CliRunner

    from charrnn.cli import cli

    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": None, "MASTER_PORT": None}
    result = CliRunner().invoke(cli, ["train", "-", "--checkpoint-dir", str(tmp_path / "c")], input="text", env=env)
    assert result.exit_code == 1 and "standard input" in result.output
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_corpus(5_000), encoding="utf-8")
    result = CliRunner().invoke(cli, ["train", str(corpus), "--device", "cpu", "--checkpoint-dir", str(tmp_path / "c")],
                                env=env)
    assert result.exit_code == 1 and "start with torchrun" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
