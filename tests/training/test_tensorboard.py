"""`charrnn train --tensorboard DIR`: the run's scalars as TensorBoard event files."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from click.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli import cli

from ..helpers import TINY

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def train(tmp_path, corpus_file, *extra):
    return CliRunner().invoke(cli, ["train", str(corpus_file), "--checkpoint-dir", str(tmp_path / "ck"),
                                    "--max-steps", "40", "--eval-every", "20", "-q", *TINY, *extra])


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="the tensorboard package is not installed "
                                                "(pip install 'charrnn[tensorboard]')")
def test_scalars_are_written_and_read_back(tmp_path, corpus_file):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(tmp_path, corpus_file, "--tensorboard", str(tmp_path / "tb"))
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {"loss/train", "loss/validation", "learning_rate", "throughput/chars_per_s"}
    metrics = checkpoint.load(tmp_path / "ck" / "latest.pt").data["metrics"]
    validation = events.Scalars("loss/validation")
    assert [e.step for e in validation] == [m["step"] for m in metrics] == [20, 40]
    assert [e.value for e in validation] == pytest.approx([m["val_loss"] for m in metrics], rel=1e-6)
    train_loss = events.Scalars("loss/train")
    assert [e.step for e in train_loss] == [20, 40]
    assert train_loss[-1].value == pytest.approx(metrics[-1]["train_loss"], rel=1e-6)
    assert all(e.value > 0 for e in events.Scalars("throughput/chars_per_s"))
    assert all(0 < e.value <= 1e-2 for e in events.Scalars("learning_rate"))  # --lr's default is the peak


def test_a_missing_tensorboard_is_one_line(tmp_path, corpus_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import fails, as without the package
    result = train(tmp_path, corpus_file, "--tensorboard", str(tmp_path / "tb"))
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        "Error: --tensorboard needs the tensorboard package: pip install tensorboard "
        "(or pip install 'charrnn[tensorboard]')"]
    assert not (tmp_path / "ck" / "latest.pt").exists()  # stopped before the first step


def test_without_the_option_nothing_is_written(tmp_path, corpus_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not even imported
    result = train(tmp_path, corpus_file)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "tb").exists()
