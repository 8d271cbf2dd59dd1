"""Validation loss of the real CLI after a fixed training time, with default settings.

    python bench/quality.py --time 10m            # CPU target: val loss <= 1.45
    python bench/quality.py --time 5m --device cuda

Runs `charrnn train tinyshakespeare.txt --max-time T` with no other flags (only --device
and a scratch --checkpoint-dir when asked), then `charrnn eval` on the last 10% of the
file (nanoGPT's validation split), in nats per character: once with the default 16 warm
parallel streams and once as a single continuous stream, so their difference is on
record, and once more in fp32 where charrnn's own choice of precision is bf16 (CPUs with
AMX, GPUs). Also records a sample at --temp 0.8.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    SHAKESPEARE,
    charrnn,
    device_name,
    latest_checkpoint,
    model_name,
    print_table,
    write_json,
)
from charrnn.runtime import pick_device  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time", default="10m", help="training budget, e.g. 10m")
    parser.add_argument("--device", default=None, help="passed to train and eval (default: charrnn's auto)")
    parser.add_argument("--corpus", default=str(SHAKESPEARE))
    parser.add_argument("--json-out")
    args = parser.parse_args()
    corpus = Path(args.corpus)
    if not corpus.exists():
        sys.exit(f"{corpus} not found (charrnn corpus tinyshakespeare -o {corpus})")

    device_args = ["--device", args.device] if args.device else []
    with tempfile.TemporaryDirectory() as scratch:
        ckpt = Path(scratch) / "ck"
        start = time.monotonic()
        charrnn("train", str(corpus), "--max-time", args.time, "--checkpoint-dir", str(ckpt), *device_args,
                capture=False)
        wall = time.monotonic() - start
        text = corpus.read_text(encoding="utf-8")
        val = Path(scratch) / "val.txt"
        val.write_text(text[int(len(text) * 0.9):], encoding="utf-8")  # nanoGPT's split
        figures = json.loads(charrnn("eval", str(val), "--checkpoint-dir", str(ckpt), "--json", *device_args).stdout)
        single = json.loads(charrnn("eval", str(val), "--checkpoint-dir", str(ckpt), "--json", "--streams", "1",
                                    *device_args).stdout)
        full = json.loads(charrnn("eval", str(val), "--checkpoint-dir", str(ckpt), "--json", "--precision", "fp32",
                                  *device_args).stdout)
        info = json.loads(charrnn("info", "--checkpoint-dir", str(ckpt), "--json").stdout)
        sample = charrnn("sample", "--checkpoint-dir", str(ckpt), "--temp", "0.8", "--length", "600",
                         "--seed", "0").stdout
        stored = latest_checkpoint(ckpt)

    row = {
        "budget": args.time, "device": args.device or "auto",
        "device_name": device_name(pick_device(args.device or "auto")), "val_loss": figures["loss"],
        "val_loss_single_stream": single["loss"], "eval_precision": figures["precision"],
        "val_loss_fp32": full["loss"], "val_bpc": figures["bpc"], "val_chars": figures["chars"],
        "steps": info["step"], "train_wall_s": round(wall, 1), "train_precision": info["precision"],
        "model": model_name(info), "parameters": info["parameters"],
    }
    # Options a trial set through click's environment variables (CHARRNN_TRAIN_WEIGHT_DROP=0.2 ...)
    # are part of the result; the README's figure must have none.
    overrides = {k: v for k, v in sorted(os.environ.items()) if k.startswith("CHARRNN_TRAIN_")}
    print_table([row], ["budget", "model", "steps", "train_wall_s", "val_loss", "val_loss_single_stream",
                        "eval_precision", "val_loss_fp32", "val_bpc"])
    print("\nsample at --temp 0.8:\n" + sample)
    write_json(f"quality-{args.time}-{row['device']}.json",
               {**row, "sample": sample, "metrics": stored["metrics"], "train_args": overrides or "defaults",
                "options": stored["train_args"]}, args.json_out)


if __name__ == "__main__":
    main()
