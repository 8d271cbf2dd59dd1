import os

import pytest
import torch

from charrnn import checkpoint
from charrnn.errors import CheckpointError
from charrnn.fileio import atomic_write
from charrnn.model import CharRNN, ModelConfig


def payload(hidden: int = 8) -> dict:
    model = CharRNN(ModelConfig(vocab_size=3, hidden=hidden, layers=1))
    return {"model_config": model.config.to_dict(), "vocab": ["a", "b", "c"], "model": model.state_dict(),
            "step": 7, "metrics": [{"step": 7, "val_loss": 1.5}], "rng": {"python": (3, (1, 2), None)}}


def test_round_trip_loads_weights_only(tmp_path):
    data = payload()
    checkpoint.save(tmp_path / "latest.pt", data)
    ckpt = checkpoint.load(tmp_path / "latest.pt")
    assert ckpt.vocab.chars == ["a", "b", "c"] and ckpt.data["step"] == 7
    for name, tensor in data["model"].items():
        assert torch.equal(ckpt.model.state_dict()[name], tensor)
    # Nothing but tensors and plain data: the strict loader reads it.
    raw = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert raw["format"] == checkpoint.FORMAT and raw["format_version"] == checkpoint.FORMAT_VERSION


def test_directory_prefers_best_over_latest(tmp_path):
    checkpoint.save(tmp_path / "latest.pt", payload())
    assert checkpoint.resolve(tmp_path).name == "latest.pt"
    checkpoint.save(tmp_path / "best.pt", payload())
    assert checkpoint.resolve(tmp_path).name == "best.pt"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.resolve(empty)


def test_crash_mid_write_keeps_previous_file(tmp_path):
    path = tmp_path / "latest.pt"
    checkpoint.save(path, payload())
    before = path.read_bytes()

    def write_then_crash(f):
        f.write(b"partial garbage")
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        atomic_write(path, write_then_crash)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["latest.pt"]  # the temp file is gone too


def test_newer_format_and_foreign_files_are_one_line_errors(tmp_path):
    newer = tmp_path / "newer.pt"
    data = payload()
    checkpoint.save(newer, data)
    raw = torch.load(newer, weights_only=True)
    raw["format_version"] = checkpoint.FORMAT_VERSION + 1
    torch.save(raw, newer)
    with pytest.raises(CheckpointError, match="newer"):
        checkpoint.load(newer)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a charrnn checkpoint"):
        checkpoint.load(foreign)
    mismatched = tmp_path / "mismatched.pt"
    data["model_config"]["hidden"] = 16
    checkpoint.save(mismatched, data)
    with pytest.raises(CheckpointError, match="disagree"):
        checkpoint.load(mismatched)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to hold the tensors being saved")
def test_gpu_tensors_are_stored_on_cpu(tmp_path):
    data = payload()
    data["model"] = {name: tensor.to("cuda") for name, tensor in data["model"].items()}
    data["nested"] = {"a": [torch.ones(2, device="cuda")], "b": (torch.arange(3, device="cuda"), 3)}
    checkpoint.save(tmp_path / "latest.pt", data)
    # No map_location: a tensor stored on the GPU would load back onto it.
    raw = torch.load(tmp_path / "latest.pt", weights_only=True)
    for name, tensor in data["model"].items():
        assert raw["model"][name].device.type == "cpu", name
        assert torch.equal(raw["model"][name], tensor.cpu())
    assert raw["nested"]["a"][0].device.type == "cpu" and torch.equal(raw["nested"]["a"][0], torch.ones(2))
    assert raw["nested"]["b"][0].device.type == "cpu" and raw["nested"]["b"][0].tolist() == [0, 1, 2]
    assert raw["nested"]["b"][1] == 3
    assert all(t.device.type == "cuda" for t in data["model"].values())  # the caller's tensors stay put


def test_checkpoint_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        checkpoint.save(tmp_path / "latest.pt", payload())
    finally:
        os.umask(old)
    assert (tmp_path / "latest.pt").stat().st_mode & 0o777 == 0o644
