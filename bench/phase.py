"""How validation loss rises and falls with the position in the epoch.

    python bench/phase.py                      # trains 6,000 steps, validating every 100
    python bench/phase.py --run DIR            # reads the metrics of a run already made

charrnn's streams read contiguous slices of the training text, all reaching their slices'
ends together, and tiny-shakespeare's validation text starts where the last slice ends. A
model trained at a high rate leans towards what it read last, so validation may score better
at some points of an epoch than at others. This trains the default model with frequent
validations, takes each validation's difference from the mean of the two before and the two
after it (which removes the slow fall of training), and averages those differences by the
fraction of the epoch at which they were taken.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import SHAKESPEARE, charrnn, device_name, print_table, run_metrics, write_json  # noqa: E402

BINS = 5


def residuals_by_phase(metrics: list[dict], key: str) -> list[float | None]:
    """Mean difference from the local trend, per fifth of an epoch."""
    sums, counts = [0.0] * BINS, [0] * BINS
    for i in range(2, len(metrics) - 2):
        trend = sum(metrics[j][key] for j in (i - 2, i - 1, i + 1, i + 2)) / 4
        phase = metrics[i]["epoch"] % 1.0
        b = min(BINS - 1, int(phase * BINS))
        sums[b] += metrics[i][key] - trend
        counts[b] += 1
    return [round(s / c, 4) if c else None for s, c in zip(sums, counts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(SHAKESPEARE))
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--run", help="a checkpoint folder of a run made with frequent validations")
    parser.add_argument("--json-out")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        run = Path(args.run) if args.run else Path(scratch) / "ck"
        if not args.run:
            charrnn("train", args.corpus, "--device", "cpu", "-q", "--checkpoint-dir", str(run),
                    "--max-steps", str(args.steps), "--eval-every", "100", capture=False)
        metrics = run_metrics(run)

    keys = [k for k in ("val_loss_trained", "val_loss_averaged", "val_loss") if k in metrics[0]]
    rows = [{"weights": k.removeprefix("val_loss_") if k != "val_loss" else "checkpointed",
             **{f"{b / BINS:.1f}-{(b + 1) / BINS:.1f}": r for b, r in enumerate(residuals_by_phase(metrics, k))}}
            for k in keys]
    print_table(rows, list(rows[0]))
    write_json("phase-cpu.json", {"device_name": device_name(torch.device("cpu")), "steps": metrics[-1]["step"],
                                  "validations": len(metrics), "rows": rows, "metrics": metrics}, args.json_out)


if __name__ == "__main__":
    main()
