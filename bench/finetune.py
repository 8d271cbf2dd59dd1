"""Fine-tuning (`charrnn train --init-from`) against training from nothing, on small corpora.

    python bench/finetune.py                         # the base (10 min on War and Peace), then every row
    python bench/finetune.py --base runs/warpeace    # reuse a base trained as below
    python bench/finetune.py --base runs/warpeace --sizes 100000 --minutes 1 --only-fine-tuned --no-names \
        -- --lr 1e-2                                 # a trial of a fine-tuning option

Base: `charrnn train warpeace.txt --max-time 10m` with the defaults. Small corpora: the first
20,000 and 100,000 characters of tiny-shakespeare (it has characters War and Peace lacks, so the
vocabulary grows). For each, the best validation loss on tiny-shakespeare's standard split (its
last 10 %, one full pass, nats per character, `charrnn eval` of each run's best.pt) after 1 and
after 3 minutes of fine-tuning from the base, against training from nothing for the same time
and for the base's 10 minutes plus that time (equal compute). Then names.txt (makemore's split):
the base fine-tuned as a record model (`--records`), its test loss in nats per token with END,
beside bench/records.py's figure from nothing. Every run uses the defaults but its budget
(fine-tuning: the `--init-from` defaults), on this machine's CPU, one after another.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, SHAKESPEARE, charrnn, device_name, latest_checkpoint, print_table, write_json  # noqa: E402
from bench.records import NAMES, makemore_split  # noqa: E402

WARPEACE = ROOT.parent / "shared" / "data" / "warpeace.txt"
BASE_MINUTES = 10


def train(corpus: Path, out: Path, minutes: float, *extra: str) -> dict:
    """One `charrnn train` run of `minutes`; its wall time, steps and best internal validation."""
    start = time.monotonic()
    charrnn("train", str(corpus), "--max-time", f"{minutes * 60:g}s", "--checkpoint-dir", str(out), "-q", *extra,
            capture=False)
    stored = latest_checkpoint(out)
    return {"wall_s": round(time.monotonic() - start, 1), "steps": stored["step"],
            "own_val_loss": stored["best_val_loss"]}


def scored(checkpoint_dir: Path, text: Path) -> tuple[float, int]:
    """The loss of `text` under the run's best.pt (`charrnn eval`, the defaults), and how many of
    its characters the model has never seen: a model trained from nothing on the first 20,000
    characters lacks K, Q and Z, which it cannot score, so those are skipped (and counted)."""
    figures = json.loads(charrnn("eval", str(text), "--checkpoint", str(checkpoint_dir / "best.pt"), "--json",
                                 "--skip-unknown").stdout)
    return figures["loss"], figures["skipped"]


def base_run(folder: Path, given: str | None) -> tuple[Path, dict]:
    if given:
        out = Path(given)
        stored = latest_checkpoint(out)
        return out, {"steps": stored["step"], "own_val_loss": stored["best_val_loss"], "wall_s": None,
                     "reused": str(out)}
    out = folder / "base"
    return out, train(WARPEACE, out, BASE_MINUTES)


def corpus_rows(folder: Path, base: Path, sizes: list[int], minutes: list[float], equal_compute: list[int],
                from_nothing: bool, extra: list[str]) -> list[dict]:
    text = SHAKESPEARE.read_text(encoding="utf-8")
    val = folder / "val.txt"
    val.write_text(text[int(len(text) * 0.9):], encoding="utf-8")  # nanoGPT's split
    rows = []
    for size in sizes:
        small = folder / f"shakespeare-{size}.txt"
        small.write_text(text[:size], encoding="utf-8")
        for budget in minutes:
            row: dict = {"corpus": f"tiny-shakespeare first {size:,} chars", "minutes": budget}
            runs = {"fine_tuned": (budget, ["--init-from", str(base), *extra])}
            if from_nothing:
                runs["from_nothing"] = (budget, [])
            if from_nothing and size in equal_compute:
                runs["from_nothing_equal_compute"] = (BASE_MINUTES + budget, [])
            for name, (length, options) in runs.items():
                out = folder / f"{size}-{budget:g}-{name}"
                facts = train(small, out, length, *options)
                row[name], row[f"{name}_skipped"] = scored(out, val)
                row[f"{name}_steps"] = facts["steps"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def names_rows(folder: Path, base: Path, minutes: list[float], extra: list[str]) -> list[dict]:
    train_words, test_words = makemore_split(NAMES)
    names, test = folder / "names-train.txt", folder / "names-test.txt"
    names.write_text("\n".join(train_words) + "\n", encoding="utf-8")
    test.write_text("\n".join(test_words) + "\n", encoding="utf-8")
    rows = []
    for budget in minutes:
        out = folder / f"names-{budget:g}"
        facts = train(names, out, budget, "--records", "--init-from", str(base), *extra)
        loss, skipped = scored(out, test)
        rows.append({"corpus": "names.txt (makemore's split), as records", "minutes": budget, "fine_tuned": loss,
                     "fine_tuned_skipped": skipped, "fine_tuned_steps": facts["steps"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="a base checkpoint dir trained as above (default: train it, 10 minutes)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000], help="small corpora, in chars")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 3], help="fine-tuning budgets")
    parser.add_argument("--equal-compute-sizes", type=int, nargs="*", help="the sizes that also get from-nothing "
                        "runs of 10 + T minutes (default: every size)")
    parser.add_argument("--no-names", action="store_true", help="skip the names.txt row")
    parser.add_argument("--only-fine-tuned", action="store_true", help="no from-nothing runs (trials of options)")
    parser.add_argument("train_args", nargs="*", help="more `charrnn train` options for the fine-tuning runs, after --")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    for needed in (WARPEACE, SHAKESPEARE) + (() if args.no_names else (NAMES,)):
        if not needed.exists():
            sys.exit(f"{needed} not found")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        base, base_facts = base_run(folder, args.base)
        print(json.dumps({"base": base_facts}), flush=True)
        equal = args.sizes if args.equal_compute_sizes is None else args.equal_compute_sizes
        rows = corpus_rows(folder, base, args.sizes, args.minutes, equal, not args.only_fine_tuned, args.train_args)
        if not args.no_names:
            rows += names_rows(folder, base, args.minutes, args.train_args)
    print_table(rows, ["corpus", "minutes", "fine_tuned", "from_nothing", "from_nothing_equal_compute"])
    trial = "-".join(a.strip("-") for a in args.train_args) or ("defaults" if args.only_fine_tuned else "")
    name = f"trials-cpu/finetune-{trial}.json" if trial else "finetune-cpu.json"
    write_json(name, {"device_name": device_name(torch.device("cpu")), "base": {
        "command": f"charrnn train warpeace.txt --max-time {BASE_MINUTES}m", **base_facts},
        "fine_tuning_args": args.train_args or "defaults", "rows": rows}, args.json_out)


if __name__ == "__main__":
    main()
