"""Small checkpoints for the export tests, made in milliseconds instead of trained, their
pages, and the check that a page in a browser computes what charrnn computes.

A random model is scaled up so that its distributions are peaked (a near-uniform one would
make greedy text hinge on ties); the export reads it exactly as it reads a trained one.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

import charrnn
from charrnn import checkpoint
from charrnn.config import ModelConfig
from charrnn.export import export
from charrnn.export.weights import rounded_to_fp16
from charrnn.model import CharRNN
from charrnn.text.records import record_hashes

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_run"
TEXT_CHARS = sorted(set("\n !',.:;?ABCDEFGHIJKLMNOPRSTUWYabcdefghiklmnoprstuvwy"))
NAMES = ["anna", "bob", "carla", "dave", "emma", "finn", "greta", "hugo", "ida", "jon", "kim", "lena"]


def make_checkpoint(path: Path, cell: str = "lstm", layers: int = 2, hidden: int = 24, chars: list[str] = TEXT_CHARS,
                    records: list[str] | None = None, seed: int = 0, scale: float = 3.0) -> Path:
    """A checkpoint file of a random model (weights times `scale`); with `records`, a record
    model that knows those records' hashes."""
    torch.manual_seed(seed)
    vocab_size = len(chars) + (records is not None)
    config = ModelConfig(vocab_size=vocab_size, cell=cell, layers=layers, hidden=hidden, dropout=0.0)
    model = CharRNN(config)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    payload = {"model_config": asdict(config), "vocab": list(chars), "model": model.state_dict(), "step": 1234,
               "best_val_loss": 1.5}
    if records is not None:
        payload["records"] = {"separator": "\n", "count": len(records)}
        payload["record_hashes"] = record_hashes(records)
    checkpoint.save(path, payload)
    return path


def rounded_checkpoint(source: Path, path: Path) -> Path:
    """`source` with its weights rounded to fp16 as the page holds them: charrnn's own
    sampler on this file is what the page must equal."""
    ckpt = checkpoint.load(source)
    rounded = rounded_to_fp16(ckpt.model)
    data = {k: v for k, v in ckpt.data.items() if k not in ("format", "format_version")}
    data["model"] = rounded.state_dict()
    checkpoint.save(path, data)
    return path


def page_for(folder: Path, ck: Path) -> tuple[Path, Path]:
    """The exported page and the checkpoint of the weights it holds (rounded to fp16)."""
    export(ck, folder / "model.html")
    return folder / "model.html", rounded_checkpoint(ck, folder / "rounded.pt")


def assert_page_is_charrnn(browser, rounded: Path, prime: str) -> None:
    """In a page that has run `prime` at temperature 0 for 300 characters (any browser driver
    with `js`): its next-character probabilities over the prime equal PyTorch's on the rounded
    weights to 1e-4, and its text equals charrnn's greedy text."""
    ckpt = checkpoint.load(rounded)
    got = torch.tensor(browser.js(f"charrnnPage.distributions({json.dumps(prime)})"), dtype=torch.float64)
    with torch.no_grad():
        logits, _ = ckpt.model.eval()(ckpt.vocab.encode(prime)[None])
    want = logits[0].double().softmax(-1)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-4
    text = browser.js("document.getElementById('output').textContent")
    assert text == charrnn.load(rounded).generate(prime=prime, length=300, temperature=0)
