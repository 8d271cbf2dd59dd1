"""New names from makemore's names.txt: test loss, how many samples are new, and throughput.

    python bench/records.py                     # 5 minutes of `charrnn train --records`
    python bench/records.py --time 1m --throughput-time 30s
    python bench/records.py --steps 8000 --no-throughput -- --dropout 0.3 --eval-every 250   # a trial

makemore's own split (its `create_datasets`): `torch.manual_seed(3407)`, `rp =
torch.randperm(len(words))`, the last 1,000 of `rp` are the test set, the rest train. Runs
`charrnn train TRAIN --records --max-time T` with no other option, then `charrnn eval TEST`
(nats per token, END included: makemore's convention, so the figures compare), draws 1,000
names with `charrnn sample -n 1000 --seed 0` and counts those not among the training names.
Then the throughput of record mode against stream mode on the same training names, one short
run of each, side by side in this run (tokens a second of training, from the runs' metrics:
a record mode token is a character or an END, a stream mode token a character).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, charrnn, device_name, latest_checkpoint, model_name, print_table, write_json  # noqa: E402

NAMES = ROOT.parent / "shared" / "data" / "names.txt"
MAKEMORE_SEED = 3407
TEST_SIZE = 1000


def makemore_split(path: Path) -> tuple[list[str], list[str]]:
    """makemore's create_datasets: stripped non-empty lines, a seeded permutation, the last
    1,000 (or a tenth, if fewer) are the test set."""
    words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines()]
    words = [w for w in words if w]
    test_size = min(TEST_SIZE, int(len(words) * 0.1))
    torch.manual_seed(MAKEMORE_SEED)
    rp = torch.randperm(len(words)).tolist()
    return [words[i] for i in rp[:-test_size]], [words[i] for i in rp[-test_size:]]


def throughput(train: Path, scratch: Path, budget: str, records: bool) -> float:
    """Tokens a second of a short run with the defaults (the last validation's window)."""
    ckpt = scratch / f"speed-{'records' if records else 'stream'}"
    mode = ["--records"] if records else []
    charrnn("train", str(train), *mode, "--max-time", budget, "--eval-every", "500", "--checkpoint-dir", str(ckpt),
            "-q", capture=False)
    metrics = latest_checkpoint(ckpt)["metrics"]
    return max(m["chars_per_s"] for m in metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time", default="5m", help="training budget, e.g. 5m")
    parser.add_argument("--throughput-time", default="60s", help="budget of each throughput run")
    parser.add_argument("--names", default=str(NAMES))
    parser.add_argument("--steps", type=int, help="a step budget instead of --time (for trials)")
    parser.add_argument("--no-throughput", action="store_true", help="skip the record/stream throughput runs")
    parser.add_argument("train_args", nargs="*", help="more `charrnn train` options, after --")
    parser.add_argument("--keep", help="copy the trained checkpoint dir and the split's files here")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    names = Path(args.names)
    if not names.exists():
        sys.exit(f"{names} not found (makemore's names.txt)")
    train_words, test_words = makemore_split(names)

    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        train, test = scratch / "train.txt", scratch / "test.txt"
        train.write_text("\n".join(train_words) + "\n", encoding="utf-8")
        test.write_text("\n".join(test_words) + "\n", encoding="utf-8")
        ckpt = scratch / "ck"
        start = time.monotonic()
        budget = ["--max-steps", str(args.steps)] if args.steps else ["--max-time", args.time]
        charrnn("train", str(train), "--records", *budget, "--checkpoint-dir", str(ckpt), *args.train_args,
                capture=False)
        wall = time.monotonic() - start
        figures = json.loads(charrnn("eval", str(test), "--checkpoint-dir", str(ckpt), "--json").stdout)
        full = json.loads(charrnn("eval", str(test), "--checkpoint-dir", str(ckpt), "--json",
                                  "--precision", "fp32").stdout)
        info = json.loads(charrnn("info", "--checkpoint-dir", str(ckpt), "--json").stdout)
        samples = charrnn("sample", "--checkpoint-dir", str(ckpt), "-n", "1000", "--seed", "0").stdout.splitlines()
        stored = latest_checkpoint(ckpt)
        if args.keep:
            shutil.copytree(scratch, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("cache"))
        record_speed = stream_speed = None
        if not args.no_throughput:
            record_speed = throughput(train, scratch, args.throughput_time, records=True)
            stream_speed = throughput(train, scratch, args.throughput_time, records=False)

    known, held_out = set(train_words), set(test_words)
    row = {
        "budget": f"{args.steps} steps" if args.steps else args.time, "train_args": args.train_args or "defaults",
        "device_name": device_name(torch.device("cpu")), "model": model_name(info),
        "steps": info["step"], "train_wall_s": round(wall, 1), "test_loss": figures["loss"],
        "eval_precision": figures["precision"], "test_loss_fp32": full["loss"], "test_tokens": figures["chars"],
        "samples": len(samples), "new_share": sum(s not in known for s in samples) / len(samples),
        "in_test_share": sum(s in held_out for s in samples) / len(samples),
        "record_tokens_per_s": record_speed and round(record_speed),
        "stream_tokens_per_s": stream_speed and round(stream_speed),
        "throughput_budget": args.throughput_time,
    }
    print_table([row], ["budget", "model", "steps", "test_loss", "test_loss_fp32", "new_share",
                        "record_tokens_per_s", "stream_tokens_per_s"])
    print("\nsamples: " + ", ".join(samples[:20]))
    trial = "-".join(([f"{args.steps}steps"] if args.steps else []) + [a.strip("-") for a in args.train_args])
    name = f"trials-cpu/records-names-{trial}.json" if trial else "records-names-cpu.json"
    write_json(name, {**row, "first_samples": samples[:50], "metrics": stored["metrics"],
                                          "options": stored["train_args"]}, args.json_out)


if __name__ == "__main__":
    main()
