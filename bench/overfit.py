"""Which training options help once a model overfits: a small study on the CPU for the GPU.

    python bench/overfit.py                                  # the study's trials (TRIALS)
    python bench/overfit.py "--dropout 0.3" "--lr 6e-3 --batch-size 8"

A GPU trained the former GPU defaults (3x1024) past the best validation loss on
tiny-shakespeare within a minute, so what bounds its 5-minute figure is overfitting, not time. GPU time is
too short to try many options there; this reproduces that regime on the 2-core CPU by
training the CPU's default model (2x256) on the first 150,000 characters of the corpus,
which it overfits within about ten epochs. Every trial runs `charrnn train` on that slice
with the GPU's schedule (`--plateau-decay 0.5`, validation every 100 steps) under a step
budget, so that trials are comparable however busy the machine is, and reports the best
validation loss the run recorded (its split is the slice's last 10%, scored whole). The
figures rank options for the next GPU trials; they are not the GPU's figures.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    SHAKESPEARE,
    charrnn,
    corpus_slice,
    device_name,
    print_table,
    run_metrics,
    write_json,
)

SCHEDULE = ["--plateau-decay", "0.5", "--eval-every", "100"]
# Beside the defaults and a cosine decay fitted to end at their best step (run first).
TRIALS = ["--dropout 0.3", "--batch-size 8", "--lr 3e-3", "--lr 6e-3", "--lr 2.4e-2", "--lr 4.8e-2"]


def run_trial(corpus: Path, options: str, max_steps: int, scratch: Path) -> dict:
    ckpt = scratch / f"trial{len(list(scratch.iterdir()))}"
    # Later options win in click, so a trial may override the schedule and the step budget.
    start = time.monotonic()
    charrnn("train", str(corpus), "--device", "cpu", "-q", "--checkpoint-dir", str(ckpt),
            "--max-steps", str(max_steps), *SCHEDULE, *shlex.split(options), capture=False)
    wall = time.monotonic() - start
    metrics = run_metrics(ckpt)
    best = min(metrics, key=lambda m: m["val_loss"])
    return {"options": options or "(CPU defaults)", "best_val_loss": round(best["val_loss"], 4),
            "best_step": best["step"], "best_epoch": round(best["epoch"], 1), "steps_run": metrics[-1]["step"],
            "wall_s": round(wall, 1), "metrics": metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trials", nargs="*", help="charrnn train options per trial, beside the defaults and "
                        "the fitted decay (default: the study's)")
    parser.add_argument("--corpus", default=str(SHAKESPEARE))
    parser.add_argument("--chars", type=int, default=150_000, help="characters taken from the corpus's start")
    parser.add_argument("--max-steps", type=int, default=8000, help="each trial's ceiling; the plateau rule ends most")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    corpus = Path(args.corpus)
    if not corpus.exists():
        sys.exit(f"{corpus} not found (charrnn corpus tinyshakespeare -o {corpus})")

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        piece = corpus_slice(corpus, args.chars, root)
        runs = root / "runs"
        runs.mkdir()
        control = run_trial(piece, "", args.max_steps, runs)
        # Does annealing before the overfitting starts beat the plateau rule's annealing after it?
        fitted = run_trial(piece, f"--max-steps {control['best_step']} --plateau-decay 1", args.max_steps, runs)
        rows = [control, fitted, *(run_trial(piece, options, args.max_steps, runs)
                                   for options in (args.trials or TRIALS))]

    print_table(rows, ["options", "best_val_loss", "best_step", "best_epoch", "steps_run", "wall_s"])
    write_json("overfit-cpu.json", {"device_name": device_name(torch.device("cpu")), "chars": args.chars,
                                    "schedule": shlex.join(SCHEDULE), "max_steps": args.max_steps, "rows": rows},
               args.json_out)


if __name__ == "__main__":
    main()
