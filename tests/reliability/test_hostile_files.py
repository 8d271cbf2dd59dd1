"""Hostile and broken checkpoint files: every command refuses them in one line, nothing runs.
A damaged token cache is rebuilt."""

from __future__ import annotations

import os
import shlex
import shutil
import time
from pathlib import Path

import pytest
import torch

from charrnn import checkpoint
from charrnn.config import CELLS, ModelConfig
from charrnn.model import CharRNN
from charrnn.text import cache

from ..helpers import invoke, one_line_error, train_tiny, write_corpus

COMMANDS = ["info", "sample", "eval", "train --resume"]


def run_on(command: str, path: Path, trained: Path):
    """Runs `command` against the checkpoint file `path` (for --resume: as latest.pt of a dir)."""
    corpus = trained.parent / "corpus.txt"
    if command == "info":
        return invoke("info", path)
    if command == "sample":
        return invoke("sample", "--checkpoint", path, "--length", 20, "--seed", 1)
    if command == "eval":
        return invoke("eval", corpus, "--checkpoint", path)
    folder = path.parent / f"resume-{path.stem}"
    folder.mkdir()
    shutil.copyfile(path, folder / checkpoint.LATEST)
    return invoke("train", corpus, "--checkpoint-dir", folder, "--resume", "--max-steps", 100, "-q")


class Payload:
    """Unpickling this runs a shell command: what a booby-trapped checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.fixture(scope="module")
def hostile(trained: Path, tmp_path_factory) -> tuple[dict[str, Path], Path]:
    """Two trapped files, proven live: an unsafe torch.load of each really creates the marker."""
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "PWNED"
    bare = folder / "bare.pt"
    torch.save(Payload(marker), bare)
    # The trap hidden inside an otherwise genuine checkpoint.
    real = torch.load(trained / checkpoint.LATEST, weights_only=True)
    real["metrics"].append({"step": Payload(marker)})
    nested = folder / "nested.pt"
    torch.save(real, nested)
    for path in (bare, nested):
        torch.load(path, weights_only=False)
        assert marker.exists(), "the payload should run when loaded unsafely"
        marker.unlink()
    return {"bare": bare, "nested": nested}, marker


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", ["bare", "nested"])
def test_pickle_payload_is_refused_and_never_runs(hostile, trained, command, kind):
    files, marker = hostile
    result = run_on(command, files[kind], trained)
    assert result.exit_code == 2, result.output
    line = one_line_error(result.output)
    assert "refused" in line and "not loaded" in line, line
    assert not marker.exists(), "the payload ran"


def _broken(kind: str, trained: Path, folder: Path) -> Path:
    path = folder / f"{kind}.pt"
    good = (trained / checkpoint.LATEST).read_bytes()
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "random-bytes":
        path.write_bytes(os.urandom(len(good)))
    elif kind == "text":
        path.write_text("hello, I am not a checkpoint\n")
    elif kind == "foreign-torch-file":
        torch.save({"a": torch.zeros(2)}, path)
    elif kind == "not-a-dict":
        torch.save([torch.zeros(2), 3], path)
    elif kind == "config-disagrees-with-tensors":
        data = torch.load(trained / checkpoint.LATEST, weights_only=True)
        data["model_config"]["hidden"] *= 2
        torch.save(data, path)
    elif kind in ("config-claims-hidden-1000000", "config-claims-10000-layers"):
        data = torch.load(trained / checkpoint.LATEST, weights_only=True)
        data["model_config"].update({"hidden": 1_000_000} if "hidden" in kind else {"layers": 10_000})
        torch.save(data, path)
    elif kind in ("nan-weights", "infinite-weights"):
        data = torch.load(trained / checkpoint.LATEST, weights_only=True)
        data["model"]["core.weight_hh_l0"][3, 5] = float("nan") if kind == "nan-weights" else float("-inf")
        torch.save(data, path)
    elif kind == "vocab-disagrees-with-config":
        data = torch.load(trained / checkpoint.LATEST, weights_only=True)
        data["vocab"] = data["vocab"][:-1]
        torch.save(data, path)
    elif kind == "newer-format":
        data = torch.load(trained / checkpoint.LATEST, weights_only=True)
        data["format_version"] = checkpoint.FORMAT_VERSION + 1
        torch.save(data, path)
    else:
        raise ValueError(kind)
    return path


CLAIMS = ["config-claims-hidden-1000000", "config-claims-10000-layers"]
BROKEN = ["truncated", "zero-bytes", "random-bytes", "text", "foreign-torch-file", "not-a-dict",
          "config-disagrees-with-tensors", *CLAIMS, "nan-weights", "infinite-weights", "vocab-disagrees-with-config",
          "newer-format"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", BROKEN)
def test_broken_checkpoint_is_a_one_line_error_exit_2(trained, tmp_path, command, kind):
    path = _broken(kind, trained, tmp_path)
    original = path.read_bytes()
    result = run_on(command, path, trained)
    assert result.exit_code == 2, result.output
    line = one_line_error(result.output)
    named = f"resume-{path.stem}/{checkpoint.LATEST}" if command == "train --resume" else path.name
    assert named in line, line
    assert result.stdout == ""  # no partial product (sample text, info) before the error
    assert path.read_bytes() == original
    if command == "train --resume":  # nothing written next to the bad latest.pt
        assert sorted(p.name for p in (tmp_path / f"resume-{path.stem}").iterdir()) == [checkpoint.LATEST]


@pytest.mark.parametrize("kind, words", [
    ("config-claims-hidden-1000000", "embed.weight is"),
    ("config-claims-10000-layers", "no tensor core.weight_ih_l1"),
    ("nan-weights", "NaN or infinite values (in core.weight_hh_l0)"),
    ("infinite-weights", "NaN or infinite values (in core.weight_hh_l0)"),
])
def test_impossible_config_or_non_finite_weights_refused_before_building_a_model(trained, tmp_path, kind, words):
    """A config claiming a model far larger than its tensors was built before the comparison
    (an allocator's traceback, or the machine's memory gone); NaN weights sampled a stream of
    newlines with exit 0. Both are refused on load, in one line, at once."""
    path = _broken(kind, trained, tmp_path)
    for command in ("info", "sample", "eval"):
        start = time.monotonic()
        result = run_on(command, path, trained)
        took = time.monotonic() - start
        assert result.exit_code == 2, result.output
        line = one_line_error(result.stderr)
        assert "damaged checkpoint" in line and words in line, line
        assert took < 5, f"{command} took {took:.1f}s to refuse {kind}"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 3])
def test_the_shapes_checked_on_load_are_the_models(cell, layers):
    config = ModelConfig(vocab_size=7, cell=cell, layers=layers, hidden=5)
    model = CharRNN(config).state_dict()
    assert list(checkpoint._weight_shapes(config)) == [(name, tuple(t.shape)) for name, t in model.items()]


def test_checkpoint_without_optimizer_state_samples_but_cannot_resume(trained, tmp_path):
    """A checkpoint stripped to the model (say, by hand) still samples; resuming says why not."""
    data = torch.load(trained / checkpoint.LATEST, weights_only=True)
    del data["optimizer"]
    path = tmp_path / "stripped.pt"
    torch.save(data, path)
    assert run_on("sample", path, trained).exit_code == 0
    result = run_on("train --resume", path, trained)
    assert result.exit_code == 2
    assert "cannot resume" in one_line_error(result.output)


@pytest.mark.parametrize("field, value", [
    ("elapsed", "12 minutes"), ("elapsed", float("nan")), ("step", "20"), ("best_val_loss", [1.5]),
    ("precision", 16), ("corpus", "corpus.txt"), ("corpus", {"sha256": 7, "length": 4000}),
    ("corpus", {"sha256": "ab", "length": True}),
])
def test_info_on_a_mistyped_field_names_the_damaged_file(trained, tmp_path, field, value):
    data = torch.load(trained / checkpoint.LATEST, weights_only=True)
    data[field] = value
    path = tmp_path / "mistyped.pt"
    torch.save(data, path)
    for extra in ((), ("--json",)):
        result = invoke("info", path, *extra)
        assert result.exit_code == 2, result.output
        line = one_line_error(result.output)
        assert path.name in line and "damaged checkpoint" in line and field in line, line
        assert result.stdout == ""
    assert run_on("sample", path, trained).exit_code == 0  # the weights are whole


@pytest.mark.parametrize("field, value", [("corpus", ["corpus.txt"]), ("train_args", "--hidden 16")])
def test_resume_from_a_mistyped_field_names_the_damaged_file(trained, tmp_path, field, value):
    data = torch.load(trained / checkpoint.LATEST, weights_only=True)
    data[field] = value
    path = tmp_path / "mistyped.pt"
    torch.save(data, path)
    result = run_on("train --resume", path, trained)
    assert result.exit_code == 2, result.output
    line = one_line_error(result.output)
    assert "damaged checkpoint" in line and field in line, line


def test_token_cache_with_ids_past_its_vocabulary_is_rebuilt(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    ckpt = tmp_path / "ck"
    train_tiny(ckpt, corpus, steps=2)
    (token_file,) = (ckpt / cache.CACHE_FOLDER).glob("*.tokens")
    good = token_file.read_bytes()
    damaged = bytearray(good)
    damaged[::50] = b"\xff" * len(damaged[::50])  # every batch meets one; the file keeps its length
    token_file.write_bytes(damaged)
    train_tiny(ckpt, corpus, "--overwrite", steps=2)  # was an IndexError from the embedding
    assert token_file.read_bytes() == good
