"""Training speed when other programs share the CPU, at the default thread count and at one.

    python bench/contention.py [--steps 400]

The AMX kernel's threads wait for one another at every time step, and torch's products at
every operator, so a thread that another program pushes off its core holds up the others.
This runs `charrnn train` with the default model on the first 300,000 characters of
tiny-shakespeare for a fixed number of steps in three settings: alone; beside one busy
process (a Python loop that never sleeps); and two trainings side by side. Each runs at the
default thread count and with `--threads 1`. Speed is steps per second of training time as
the run's checkpoint records it (start-up and the corpus encoding are not counted).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    SHAKESPEARE,
    charrnn_command,
    corpus_slice,
    device_name,
    latest_checkpoint,
    print_table,
    write_json,
)

SLICE_CHARS = 300_000
BUSY_LOOP = [sys.executable, "-c", "while True: pass"]


def steps_per_second(checkpoint_dir: Path) -> float:
    saved = latest_checkpoint(checkpoint_dir)
    return saved["step"] / saved["elapsed"]


def train_side_by_side(corpus: Path, runs: int, steps: int, threads: int | None, scratch: Path) -> list[float]:
    """Starts `runs` trainings at once and returns each one's steps per second."""
    dirs = [scratch / f"run{len(list(scratch.iterdir()))}-{i}" for i in range(runs)]
    thread_args = ["--threads", str(threads)] if threads else []
    # Validation reads 1,000 characters, so the figure is the training steps'.
    processes = [subprocess.Popen(charrnn_command("train", str(corpus), "--device", "cpu", "-q", "--checkpoint-dir",
                                                  str(d), "--max-steps", str(steps), "--eval-every", str(steps),
                                                  "--eval-chars", "1000", *thread_args))
                 for d in dirs]
    for p in processes:
        if p.wait() != 0:
            raise SystemExit(f"charrnn train exited with {p.returncode}")
    return [round(steps_per_second(d), 2) for d in dirs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(SHAKESPEARE))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--json-out")
    args = parser.parse_args()

    default_threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        corpus = corpus_slice(Path(args.corpus), SLICE_CHARS, scratch)
        runs_dir = scratch / "runs"
        runs_dir.mkdir()
        for setting in ("alone", "beside a busy process", "two side by side"):
            for threads in (None, 1):
                busy = subprocess.Popen(BUSY_LOOP) if setting == "beside a busy process" else None
                try:
                    speeds = train_side_by_side(corpus, 2 if setting == "two side by side" else 1, args.steps,
                                                threads, runs_dir)
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
                rows.append({"setting": setting, "threads": threads or default_threads,
                             "steps_per_s": speeds if len(speeds) > 1 else speeds[0]})
    print_table(rows, ["setting", "threads", "steps_per_s"])
    write_json("contention-cpu.json", {"device_name": device_name(torch.device("cpu")), "steps": args.steps,
                                       "corpus_chars": SLICE_CHARS, "rows": rows}, args.json_out)


if __name__ == "__main__":
    main()
