"""Device choice, precision and seeding."""

from __future__ import annotations

import contextlib
import random

import torch

from .errors import CharrnnError

DEVICES = ("auto", "cpu", "cuda", "mps")


def pick_device(name: str) -> torch.device:
    """'auto' takes CUDA, then MPS, then the CPU; a named device must be present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharrnnError("--device cuda: no CUDA device is available")
    if name == "mps" and not _mps_available():
        raise CharrnnError("--device mps: no MPS device is available")
    if name not in DEVICES:
        raise CharrnnError(f"unknown device {name!r}")
    return torch.device(name)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA devices that support it; full precision elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    # random.setstate wants tuples all the way down; a round trip through a file may give lists.
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
