"""Memory and time on corpora far larger than tiny-shakespeare: 100 MB and 1 GB.

    python bench/scale.py                       # 100M and 1G, default model
    python bench/scale.py --sizes 100M --steps 100

For each size it generates a UTF-8 corpus (words over an alphabet with two-, three- and
four-byte characters, so every chunk boundary case occurs), then runs the real CLI in
child processes and reads each one's peak resident memory from the kernel (wait4's
ru_maxrss, which counts memory-mapped file pages that were touched):

- encode: `charrnn.text.cache.prepare` on a cold cache, the first thing `charrnn train`
  does: hashing, then the streaming encode into the token cache;
- train: `charrnn train` on the warm cache (so it only hashes the corpus) for --steps
  steps and one validation, with the default model and options;
- eval: `head -c EVAL_BYTES corpus | charrnn eval -` — a streamed evaluation of a slice
  (a full CPU pass over 100 MB would take hours; memory does not depend on the length).

The generated files live in --workdir (deleted afterwards unless --keep).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import device_name, print_table, write_json  # noqa: E402

SIZES = {"M": 10**6, "G": 10**9}
CHARRNN = [sys.executable, "-m", "charrnn"]


def parse_size(text: str) -> int:
    text = text.strip().upper()
    return int(float(text[:-1]) * SIZES[text[-1]]) if text[-1] in SIZES else int(text)


def generate(path: Path, size: int, seed: int = 0) -> None:
    """`size` bytes of sentence-like text: a 2 MB block, rotated at a new line each time."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyzàéèüöñçß"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 9))) for _ in range(20_000)]
    words += ["—", "«", "»", "中文", "字符", "😀", "∑", "Ω"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 14))).capitalize() + ".\n"
             for _ in range(35_000)]
    block = "".join(lines).encode("utf-8")
    written = 0
    with open(path, "wb") as f:
        while written < size:
            cut = block.find(b"\n", rng.randrange(len(block))) + 1
            piece = (block[cut:] + block[:cut])[: size - written]
            f.write(piece)
            written += len(piece)
    # The last piece may end inside a multi-byte character: trim to a whole one.
    with open(path, "r+b") as f:
        f.seek(max(0, size - 4))
        tail = f.read()
        keep = len(tail.decode("utf-8", "ignore").encode("utf-8"))
        f.truncate(max(0, size - 4) + keep)


def run(command: list[str] | str, stdin_from: list[str] | None = None) -> tuple[float, float, str]:
    """Runs a command; returns (seconds, peak RSS in MiB of the charrnn process, stderr tail)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    feeder = subprocess.Popen(stdin_from, stdout=subprocess.PIPE) if stdin_from else None
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdin=feeder.stdout if feeder else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
        if feeder:
            feeder.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        if feeder:
            feeder.wait()
        err.seek(0)
        tail = err.read().decode(errors="replace")[-2000:]
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{command} exited {code}:\n{tail}")
    return seconds, usage.ru_maxrss / 1024, tail  # Linux reports KiB


def measure(size: int, workdir: Path, steps: int, eval_bytes: int) -> dict:
    corpus = workdir / f"corpus-{size}.txt"
    start = time.perf_counter()
    generate(corpus, size)
    print(f"generated {corpus.stat().st_size:,} bytes in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    ck, cache = workdir / "ck", workdir / "cache"
    shutil.rmtree(ck, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    train = [*CHARRNN, "train", str(corpus), "--checkpoint-dir", str(ck), "--cache-dir", str(cache), "--device",
             "cpu", "-q"]

    prepare = f"from charrnn.text.cache import prepare; prepare({str(corpus)!r}, 'utf-8', {str(cache)!r})"
    encode_s, encode_rss, _ = run([sys.executable, "-c", prepare])
    tokens_file = next(cache.glob("*.tokens"))
    train_s, train_rss, _ = run([*train, "--max-steps", str(steps), "--eval-every", str(steps)])
    eval_s, eval_rss, _ = run([*CHARRNN, "eval", "-", "--checkpoint", str(ck), "--json", "-q"],
                              stdin_from=["head", "-c", str(eval_bytes), str(corpus)])
    row = {
        "corpus_bytes": corpus.stat().st_size,
        "token_file_bytes": tokens_file.stat().st_size,
        "encode_s": round(encode_s, 1),
        "encode_peak_rss_mib": round(encode_rss),
        "warm_train_s": round(train_s, 1),
        "train_steps": steps,
        "train_peak_rss_mib": round(train_rss),
        "eval_bytes": eval_bytes,
        "eval_s": round(eval_s, 1),
        "eval_peak_rss_mib": round(eval_rss),
    }
    corpus.unlink()
    shutil.rmtree(cache)
    shutil.rmtree(ck)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100M,1G", help="Comma-separated corpus sizes, e.g. 100M,1G.")
    parser.add_argument("--steps", type=int, default=200, help="Training steps on the warm cache.")
    parser.add_argument("--eval-bytes", type=parse_size, default=parse_size("5M"), help="Slice given to eval.")
    parser.add_argument("--workdir", type=Path, default=None, help="Where the corpora go (needs 2.2x the size).")
    parser.add_argument("--keep", action="store_true", help="Keep --workdir.")
    parser.add_argument("--json-out", help="Where to write the JSON (default bench/results/scale-cpu.json).")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="charrnn-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for text in args.sizes.split(","):
            row = {"size": text.strip(), **measure(parse_size(text), workdir, args.steps, args.eval_bytes)}
            rows.append(row)
            print_table(rows, list(row))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    write_json("scale-cpu.json", {"device": "cpu", "device_name": device_name(torch.device("cpu")),
                                  "model": "default (lstm 2x256)", "command": " ".join(["python", *sys.argv]),
                                  "rows": rows}, args.json_out)


if __name__ == "__main__":
    main()
