"""`charrnn export`'s page: its size, and its sampling speed in headless Chromium beside the native sampler's.

For each size (the default 2x256 LSTM and 3x512, random weights over a 65-character
vocabulary unless --checkpoint gives a trained model for the first) this exports the page,
opens it in headless Chromium with `#bench=N` (the page steps and draws N characters of one
stream at temperature 1 and writes its chars/s into the DOM), once with the WebAssembly SIMD
kernel and once with the plain JavaScript path, then (where Firefox is installed) in headless
Firefox with the WebAssembly kernel, and times `charrnn.load(...).generate` over the same number
of characters in this process. Speed and size depend on the weights' shapes
only, so random weights measure the same as trained ones.

    python bench/export.py                        # writes bench/results/export-cpu.json
    python bench/export.py --checkpoint checkpoints --chars 50000
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import charrnn  # noqa: E402
from charrnn import checkpoint  # noqa: E402
from charrnn.config import ModelConfig  # noqa: E402
from charrnn.export import export  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402
from tests.browser import BROWSER, Chromium, open_page, wait_for  # noqa: E402
from tests.firefox import FIREFOX, Firefox  # noqa: E402

CHARS = sorted(set("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))  # tiny-shakespeare's 65
SIZES = [(2, 256), (3, 512)]


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def random_checkpoint(path: Path, layers: int, hidden: int) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=len(CHARS), cell="lstm", layers=layers, hidden=hidden)
    model = CharRNN(config)
    checkpoint.save(path, {"model_config": asdict(config), "vocab": CHARS, "model": model.state_dict()})
    return path


def page_rate(browser: Chromium | Firefox, page: Path, chars: int, engine: str, repeats: int) -> tuple[float, str]:
    """The median of the page's own chars/s over `repeats` fresh loads, and the kernel it ran."""
    rates, used = [], ""
    for _ in range(repeats):
        if isinstance(browser, Firefox):
            browser.open_page(page, f"engine={engine}&bench={chars}")
        else:
            open_page(browser, page, f"engine={engine}&bench={chars}")
        rates.append(float(wait_for(browser, "document.body.dataset.bench", timeout=300)))
        used = browser.js("document.body.dataset.engine")
    return statistics.median(rates), used


def native_rate(ck: Path, chars: int, repeats: int) -> float:
    model = charrnn.load(ck)
    model.generate(length=200, temperature=1, seed=0)  # warm-up: builds and loads the C step
    times = []
    for seed in range(repeats):
        began = time.perf_counter()
        model.generate(length=chars, temperature=1, seed=seed)
        times.append(time.perf_counter() - began)
    return chars / statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained model for the first row (else random 2x256 weights)")
    parser.add_argument("--chars", type=int, default=20_000, help="characters per timed run (the JS path: a fifth)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "export-cpu.json"))
    args = parser.parse_args()
    if BROWSER is None:
        print("no Chromium on PATH", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        browser = Chromium(folder / "profile")
        firefox = Firefox(folder / "firefox-profile") if FIREFOX else None  # a second engine, where installed
        try:
            for index, (layers, hidden) in enumerate(SIZES):
                name = f"{layers}x{hidden}"
                if index == 0 and args.checkpoint:
                    ck = checkpoint.resolve(args.checkpoint)
                    config = checkpoint.load(ck).model_config
                    name = f"{config.layers}x{config.hidden} (trained)"
                else:
                    ck = random_checkpoint(folder / f"{name}.pt", layers, hidden)
                page = folder / f"{name}.html"
                summary = export(ck, page)
                wasm, engine = page_rate(browser, page, args.chars, "wasm", args.repeats)
                plain, _ = page_rate(browser, page, max(1000, args.chars // 5), "js", args.repeats)
                native = native_rate(ck, args.chars, args.repeats)
                gecko = page_rate(firefox, page, args.chars, "wasm", args.repeats)[0] if firefox else None
                row = {"model": f"lstm {name}", "vocab": summary["vocab_size"], "page_bytes": summary["bytes"],
                       "page_mb": round(summary["bytes"] / 1e6, 2), "page_chars_per_s": round(wasm),
                       "page_kernel": engine, "page_js_fallback_chars_per_s": round(plain),
                       "native_chars_per_s": round(native), "page_vs_native": round(wasm / native, 3),
                       "page_firefox_chars_per_s": None if gecko is None else round(gecko)}
                print(json.dumps(row), flush=True)
                rows.append(row)
            version = browser.call("Browser.getVersion").get("product")
            gecko_version = firefox.version() if firefox else None
        finally:
            browser.close()
            if firefox:
                firefox.close()
    result = {"bench": "export", "date": date.today().isoformat(), "cpu": cpu_name(),
              "torch_threads": torch.get_num_threads(), "browser": version, "firefox": gecko_version,
              "chars_per_run": args.chars,
              "repeats": args.repeats, "command": "python bench/export.py " + " ".join(sys.argv[1:]),
              "note": "one stream at temperature 1; page = headless Chromium (page_firefox: headless Firefox, "
                      "WebAssembly SIMD), fp16 weights unpacked to fp32; native = charrnn.load(...).generate in "
                      "this process", "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
