"""Checkpoint files: what they hold, how they are written, and how they are read safely.

A checkpoint is one `torch.save` file of tensors and plain Python data only, so it is
read with `torch.load(weights_only=True)`, which refuses anything that would run code.
Tensors are stored on the CPU, so a file written on a GPU loads anywhere.
"""

from __future__ import annotations

import errno
import math
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CharrnnError, CheckpointError
from .fileio import atomic_write, why_write_failed
from .model import CharRNN, ModelConfig
from .text.vocab import Vocabulary

FORMAT = "charrnn-checkpoint"
FORMAT_VERSION = 1
LATEST = "latest.pt"
BEST = "best.pt"
REQUIRED = ("format", "format_version", "model_config", "vocab", "model")


def to_cpu(value: Any) -> Any:
    """A copy of nested dicts/lists/tuples with every tensor moved to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


def save(path: Path, payload: dict) -> None:
    """Writes atomically: on any failure the previous file at `path` is left whole."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **to_cpu(payload)}
    try:
        atomic_write(Path(path), lambda f: torch.save(payload, f))
    except (OSError, RuntimeError) as error:
        # When a write fails inside torch.save, closing its zip writer can raise a RuntimeError
        # ("unexpected pos") on top, leaving the OSError only as the context.
        e = error if isinstance(error, OSError) else error.__context__
        if not isinstance(e, OSError):
            raise
        why = why_write_failed(e)
        raise CharrnnError(f"cannot write checkpoint {path}: {why}; the previous checkpoint is intact") from None


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or the best one in a directory (best.pt, then latest.pt)."""
    p = Path(path)
    if p.is_dir():
        for name in (BEST, LATEST):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"no checkpoint in {p} (looked for {BEST} and {LATEST}); train a model first")
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint")
    return p


@dataclass
class Checkpoint:
    path: Path
    data: dict
    model: CharRNN  # on the CPU, weights loaded and checked against the config

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.data["model_config"])

    @property
    def record_separator(self) -> str | None:
        """What separates a record model's records; None for a stream model (as is every
        checkpoint written before record models existed)."""
        records = self.field("records", dict)
        return None if records is None else typed(self.path, "record separator", records.get("separator"), str)

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary(self.data["vocab"], marker=self.record_separator is not None)

    def move_model_to(self, device: torch.device | str = "cpu") -> CharRNN:
        """This checkpoint's own model, moved to `device`: not a copy, so a caller that trains
        it changes `self.model` too."""
        return self.model.to(device)

    def field(self, name: str, kinds: type | tuple[type, ...]) -> Any:
        """The stored field `name` if it is one of `kinds`, None if absent (as in older checkpoints)."""
        return typed(self.path, name, self.data.get(name), kinds)


def typed(path: Path, name: str, value: Any, kinds: type | tuple[type, ...]) -> Any:
    """`value` if it is None or one of `kinds`; anything else is a damaged checkpoint.

    Only the weights and the config are checked on load; the other fields are plain data
    that a hand edit or another program can give any type, which would otherwise surface
    as a TypeError wherever the field is first used. A bool is no number here (Python
    counts it as an int), and a float must be finite (charrnn never records NaN or inf).
    """
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    ok = value is None or (
        isinstance(value, kinds)
        and not (isinstance(value, bool) and bool not in kinds)
        and not (isinstance(value, float) and not math.isfinite(value))
    )
    if not ok:
        shown = repr(value) if isinstance(value, (str, bytes, int, float)) else f"a {type(value).__name__}"
        if len(shown) > 40:
            shown = shown[:37] + "..."
        raise CheckpointError(
            f"{path}: damaged checkpoint, its {name} is {shown}, not {' or '.join(k.__name__ for k in kinds)}"
        )
    return value


def load(path: str | Path) -> Checkpoint:
    """Reads and validates a checkpoint; every failure is a one-line CheckpointError."""
    p = resolve(path)
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" not in str(e):  # not an object reference: bytes that are no pickle at all
            raise CheckpointError(f"{p}: not a readable checkpoint (truncated, or not a PyTorch file)") from None
        raise CheckpointError(
            f"{p}: refused: the file holds objects other than tensors and plain data, "
            "which a charrnn checkpoint never does, so it was not loaded"
        ) from None
    except (OSError, EOFError, RuntimeError, ValueError, AttributeError, TypeError, KeyError, IndexError) as e:
        if isinstance(e, OSError) and e.errno is not None and e.errno != errno.ENOENT and not str(e).startswith("["):
            raise CheckpointError(f"{p}: {e.strerror or e}") from None
        raise CheckpointError(f"{p}: not a readable checkpoint (truncated, or not a PyTorch file)") from None
    return Checkpoint(p, data, _validated_model(p, data))


def _weight_shapes(config: ModelConfig) -> Iterator[tuple[str, tuple[int, ...]]]:
    """The names and shapes of `CharRNN(config).state_dict()`, worked out without building
    the model (tests/reliability/test_hostile_files.py holds the two equal)."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[config.cell] * config.hidden
    yield "embed.weight", (config.vocab_size, config.hidden)
    for k in range(config.layers):
        yield f"core.weight_ih_l{k}", (gates, config.hidden)
        yield f"core.weight_hh_l{k}", (gates, config.hidden)
        yield f"core.bias_ih_l{k}", (gates,)
        yield f"core.bias_hh_l{k}", (gates,)
    yield "head.weight", (config.vocab_size, config.hidden)
    yield "head.bias", (config.vocab_size,)


def _weights_mismatch(config: ModelConfig, stored: Any) -> str | None:
    """Where the stored weights differ from those `config` makes, or None where they agree.

    Compared name by name, stopping at the first difference, so a config that claims
    10,000 layers costs as little to refuse as the tensors that are really there.
    """
    if not isinstance(stored, dict):
        return f"a {type(stored).__name__}, not tensors by name"
    expected = set()
    for name, shape in _weight_shapes(config):
        tensor = stored.get(name)
        if not isinstance(tensor, torch.Tensor):
            return f"no tensor {name}" if tensor is None else f"{name} is a {type(tensor).__name__}"
        if tuple(tensor.shape) != shape:
            return f"{name} is {_shape(tensor.shape)}, the config makes it {_shape(shape)}"
        expected.add(name)
    extra = [name for name in stored if name not in expected]
    return f"{len(extra)} tensors the config has no place for, such as {str(extra[0])[:40]}" if extra else None


def _shape(shape: tuple[int, ...] | torch.Size) -> str:
    return "x".join(map(str, shape)) or "a scalar"


def _validated_model(p: Path, data: Any) -> CharRNN:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{p}: a PyTorch file, but not a charrnn checkpoint")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{p}: the checkpoint has no valid format version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format {version} is newer than this charrnn reads ({FORMAT_VERSION}); upgrade charrnn"
        )
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"{p}: damaged checkpoint, missing {', '.join(missing)}")
    try:
        config = ModelConfig(**data["model_config"])
        vocab = Vocabulary(data["vocab"], marker=isinstance(data.get("records"), dict))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{p}: damaged checkpoint, bad model config or vocabulary ({e})") from None
    if len(vocab) != config.vocab_size or len(data["vocab"]) != len(vocab.chars) or not vocab.chars:
        raise CheckpointError(f"{p}: damaged checkpoint, the vocabulary does not match the model config")
    # Before anything is built: a config claiming a model far larger than its tensors would
    # otherwise allocate that model first (an allocator's traceback, or the machine's memory).
    mismatch = _weights_mismatch(config, data["model"])
    if mismatch:
        raise CheckpointError(f"{p}: damaged checkpoint, its weights disagree with its config ({mismatch})")
    bad = next((name for name, t in data["model"].items() if not torch.isfinite(t).all()), None)
    if bad is not None:
        # Such weights sample nothing but one character; training stops before it would save them.
        raise CheckpointError(f"{p}: damaged checkpoint, its weights hold NaN or infinite values (in {bad}), "
                              "which training never saves")
    model = CharRNN(config)
    try:
        model.load_state_dict(data["model"])
    except (RuntimeError, TypeError, AttributeError, KeyError) as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else (first[0] if first else type(e).__name__)
        raise CheckpointError(f"{p}: damaged checkpoint, its weights disagree with its config ({detail})") from None
    return model


# ---- training checkpoints ----------------------------------------------------------------
# Beside the weights `sample` and `eval` use ("model"), a training checkpoint holds what
# `--resume` needs to continue the run exactly. The keys read here are also those of every
# older checkpoint; a key added later is read with the value its runs had.


@dataclass
class TrainingState:
    """Where a run is: everything of a training checkpoint but its weights and its options."""

    step: int
    elapsed: float  # training seconds, summed over resumed runs
    lr: float  # the rate of the next step (for the record; a resumed run computes its own)
    lr_scale: float  # the plateau rule's cut so far
    best_val_loss: float | None
    metrics: list[dict]
    position: dict  # the data batcher's epoch, window and the epoch's rotation offset
    hidden: list[torch.Tensor] | None  # the carried state, every stream's rows
    rng: dict
    optimizer: dict


def training_payload(model: CharRNN, vocab: Vocabulary, other_weights: dict, state: TrainingState, options: dict,
                     corpus: dict, precision: str) -> dict:
    """A training checkpoint's contents. `model` holds the weights for use; `other_weights`
    is {"trained_model" or "averaged_model": state_dict} when a weight average is kept."""
    return {
        "model_config": model.config.to_dict(),
        "vocab": vocab.chars,
        "model": model.state_dict(),
        **other_weights,
        "optimizer": state.optimizer,
        "schedule": {"lr": state.lr, "lr_scale": state.lr_scale},
        "step": state.step,
        "elapsed": state.elapsed,
        "data_position": state.position,
        "hidden": state.hidden,
        "rng": state.rng,
        "metrics": state.metrics,
        "best_val_loss": state.best_val_loss,
        "train_args": options,
        "corpus": corpus,
        "precision": precision,  # of the run that wrote it
    }


def training_state(ckpt: Checkpoint) -> TrainingState:
    """The run's position stored in `ckpt`; a CheckpointError when it cannot be resumed from."""
    d = ckpt.data
    try:
        position = d["data_position"]
        return TrainingState(
            step=int(d["step"]),
            elapsed=float(d["elapsed"]),
            lr=float(d["schedule"].get("lr", 0.0)),
            lr_scale=float(d["schedule"].get("lr_scale", 1.0)),  # absent before the plateau rule
            best_val_loss=d["best_val_loss"],
            metrics=list(d["metrics"]),
            # Checkpoints from before epochs were rotated read the unrotated layout (offset 0).
            position={"epoch": int(position["epoch"]), "window": int(position["window"]),
                      "offset": int(position.get("offset", 0))},
            hidden=d["hidden"],
            rng=d["rng"],
            optimizer=d["optimizer"],
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise resume_error(ckpt, e) from None


def resume_error(ckpt: Checkpoint, error: Exception) -> CheckpointError:
    return CheckpointError(f"{ckpt.path}: cannot resume from this checkpoint ({error})")
