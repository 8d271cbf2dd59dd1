"""Shared bits of the bench scripts: device facts, tables, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
RESULTS = ROOT / "bench" / "results"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(_cell(r.get(c)).ljust(w) for c, w in zip(columns, widths)))
    sys.stdout.flush()


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"
    return str(value)


def write_json(name: str, payload: dict, out: str | None) -> Path:
    path = Path(out) if out else RESULTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"date": date.today().isoformat(), "torch": torch.__version__, "python": platform.python_version(),
               "cpu_count": os.cpu_count(), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return path


def charrnn_command(*args: str) -> list[str]:
    """The real command line, as this Python runs it; echoed to stderr."""
    print("$ charrnn " + " ".join(args), file=sys.stderr, flush=True)
    return [sys.executable, "-m", "charrnn", *args]


def charrnn(*args: str, capture: bool = True) -> subprocess.CompletedProcess:
    """Runs the real command line; its stdout returned as text when captured."""
    return subprocess.run(charrnn_command(*args), check=True, text=True,
                          stdout=subprocess.PIPE if capture else None)


def model_name(options: dict) -> str:
    """How bench results name a model ("lstm 2x256"), from `charrnn info` or train options."""
    return f"{options['cell']} {options['layers']}x{options['hidden']}"


def latest_checkpoint(checkpoint_dir: Path) -> dict:
    """The last checkpoint a bench run wrote in `checkpoint_dir`, as stored."""
    return torch.load(checkpoint_dir / "latest.pt", weights_only=True)


def run_metrics(checkpoint_dir: Path) -> list[dict]:
    """The validation records of the run whose checkpoints are in `checkpoint_dir`."""
    return latest_checkpoint(checkpoint_dir)["metrics"]


def corpus_slice(corpus: Path, chars: int, folder: Path) -> Path:
    """The first `chars` characters of `corpus`, written to folder/slice.txt."""
    piece = folder / "slice.txt"
    piece.write_text(corpus.read_text(encoding="utf-8")[:chars], encoding="utf-8")
    return piece
