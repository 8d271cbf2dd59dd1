"""Renders the results tables of docs/benchmarks.md from the JSON the bench scripts wrote.

    python bench/report.py            # prints Markdown; paste over docs/benchmarks.md's tables

The tables: the targets (quality.py, speed.py), large corpora (scale.py) and the GPU trials
(bench/results/trials). Rows with no JSON say "not measured". Nothing here is typed in by
hand but the targets.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, model_name  # noqa: E402
from charrnn.config import TrainConfig  # noqa: E402


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def verdict(value: float | None, target: float, lower_is_better: bool = False) -> str:
    if value is None:
        return "—"
    met = value <= target if lower_is_better else value >= target
    return "met" if met else "**not met**"


def earlier_runs(device: str) -> list[dict]:
    """Earlier speed runs of the same code kept beside the latest (speed-DEVICE-*.json): this VM
    drifts between runs by more than the margins measured, so a verdict rests on their median."""
    return [json.loads(path.read_text()) for path in sorted(RESULTS.glob(f"speed-{device}-*.json"))]


def same_case(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("size", "batch", "seq", "precision"))


def run_dates(latest: dict, earlier: list[dict]) -> str:
    return "–".join(sorted({run["date"] for run in earlier} | {latest["date"]}))


def runs_text(rows: list[dict], key: str, spec: str, unit: str, each_unit: str) -> str:
    """The figure, or the median of several runs followed by each run's."""
    if len(rows) == 1:
        return f"{rows[0][key]:{spec}}{unit}"
    each = ", ".join(f"{r[key]:{spec}}{each_unit}" for r in rows)
    return f"{median([r[key] for r in rows]):{spec}}{unit}, the median of {len(rows)} runs ({each})"


def runs_verdict(rows: list[dict], key: str, target: float) -> str:
    """The verdict on the median, saying how many runs fell short of the target."""
    text = verdict(median([r[key] for r in rows]), target)
    short = sum(r[key] < target for r in rows)
    return f"{text} ({short} of {len(rows)} runs below)" if short and len(rows) > 1 else text


MISSING = ("not measured", "—", "—", "—", "no GPU was available")


BUDGET_OPTIONS = ("max_epochs", "max_steps", "max_time")  # set by each bench run, not defaults


def default_options() -> dict:
    """The options `charrnn train` takes with no flags (the same on every device)."""
    from charrnn.cli import train

    return {p.name: p.default for p in train.params}


def default_model() -> str:
    """The model `charrnn train` builds with no flags, named as quality.py names it."""
    return model_name(default_options())


def defaults_since_changed(quality: dict) -> list[str]:
    """Options whose default is no longer what a defaults run was measured with.

    Runs before 2026-11-28 recorded only their model, so for them only the model is compared.
    """
    today = default_options()
    if "options" not in quality:
        model = model_name(today)
        return [] if quality.get("model") == model else [f"model {quality.get('model')} → {model}"]
    return [f"{name} {value} → {today[name]}" for name, value in quality["options"].items()
            if name in today and name not in BUDGET_OPTIONS and today[name] != value]


def quality_row(quality: dict | None, label: str, target: float, where: str, command: str) -> tuple:
    if not quality:
        return (label, f"≤ {target}", *MISSING[:3], where, MISSING[4] if where == "GPU" else command)
    device = quality.get("device_name") or f"CPU, {quality['cpu_count']} cores (torch {quality['torch']})"
    measured, met = describe_run(quality), verdict(quality["val_loss"], target, True)
    changed = quality.get("train_args", "defaults") == "defaults" and defaults_since_changed(quality)
    if changed:
        # The figure stays on record but no longer answers for what `charrnn train` does today.
        measured, met = (f"not measured with the current defaults (changed since: {', '.join(changed)}); "
                         f"the former defaults: {measured}, {met}"), "not measured"
    return (label, f"≤ {target}", measured, met, quality["date"], device, command)


def describe_run(quality: dict) -> str:
    """A quality run's figure with what it rests on: best step, precision, weights kept, model, options."""
    last = (quality.get("metrics") or [{}])[-1]
    total = last.get("step", quality["steps"])
    measured = (f"{quality['val_loss']:.4f} after {quality['steps']:,} steps" if total <= quality["steps"] else
                f"{quality['val_loss']:.4f} at step {quality['steps']:,} (best.pt) of {total:,}")
    if total > quality["steps"] and quality.get("train_wall_s", 1e9) < 0.9 * parse_budget(quality["budget"]):
        measured += f", stopped by the plateau rule after {quality['train_wall_s']:.0f} s"
    if "train_precision" in quality:
        measured += (f", {quality['train_precision']} training and evaluation"
                     f" (evaluated in fp32: {quality['val_loss_fp32']:.4f})"
                     if quality["eval_precision"] != "fp32" else ", fp32")
    if "val_loss_trained" in last:
        kept = "weight average" if last["val_loss_averaged"] < last["val_loss_trained"] else "trained weights"
        measured += (f" ({kept}; trained weights {last['val_loss_trained']:.4f}, "
                     f"average {last['val_loss_averaged']:.4f} at the last validation)")
    measured += f", {quality['model']}" if "model" in quality else ""
    if quality.get("train_args", "defaults") != "defaults":
        measured += f", **not the defaults**: {quality['train_args']}"
    return measured


def parse_budget(text: str) -> float:
    """Seconds in a bench budget such as '10m' or '90s'."""
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def main() -> None:
    rows: list[tuple[str, str, str, str, str, str, str]] = []

    rows.append(quality_row(load("quality-10m-auto.json"), "val loss after 10 min (nats/char)", 1.45, "this CPU",
                            "`python bench/quality.py --time 10m`"))
    rows.append(quality_row(load("quality-5m-cuda.json"), "val loss after 5 min, one GPU (the target names an H100)",
                            1.38, "GPU", "`python bench/quality.py --time 5m --device cuda` (bench/gpu.sh)"))

    speed, cpu_runs = load("speed-cpu.json"), earlier_runs("cpu")
    for label, device, data, earlier in (("CPU", "cpu", speed, cpu_runs),
                                         ("GPU", "cuda", load("speed-cuda.json"), earlier_runs("cuda"))):
        if not data:
            rows.append((f"training vs plain loop ({label})", "≥ 0.95×", *MISSING))
            rows.append((f"training vs per-step loop ({label})", "≥ 5×", *MISSING))
            continue
        cmd = "`python bench/speed.py" + (" --device cuda" if device == "cuda" else "") + "`"
        dates = run_dates(data, earlier)
        for r in data["training"]:
            where = f"{r['size']}, batch {r['batch']}×{r['seq']}, {r.get('precision', 'fp32')} (all loops)"
            same = [x for run in earlier for x in run["training"] if same_case(x, r)] + [r]
            ratio = runs_text(same, "vs_plain", ".2f", "×", "×")
            rows.append((f"training vs plain loop, {where}", "≥ 0.95×",
                         f"{ratio} (latest: {r['charrnn']:,.0f} vs {r['plain']:,.0f} chars/s)",
                         runs_verdict(same, "vs_plain", 0.95), dates, data["device"], cmd))
            ceiling = (f"; measured ceiling here {r['ceiling_vs_per_step']:.1f}×, charrnn at "
                       f"{r['of_peak']:.0%} of the matmul peak" if "ceiling_vs_per_step" in r else "")
            ratio = runs_text(same, "vs_per_step", ".2f", "×", "×")
            rows.append((f"training vs per-step loop, {where}", "≥ 5×",
                         f"{ratio} (latest: {r['charrnn']:,.0f} vs {r['per_step']:,.0f} chars/s{ceiling})",
                         runs_verdict(same, "vs_per_step", 5), dates, data["device"], cmd))
    rows += fp32_rows(speed, cpu_runs)
    gpu_speed = load("speed-cuda.json")
    large = [r for r in (gpu_speed or {}).get("training", []) if r["size"] == "3x512"]
    if large:
        best = max(large, key=lambda r: r["charrnn"])
        each = "; ".join(f"batch {r['batch']}×{r['seq']}: {r['charrnn']:,.0f}" for r in large)
        rows.append(("training throughput, 3×512 bf16, one GPU (the target names an H100)", "≥ 1,000,000 chars/s",
                     f"{best['charrnn']:,.0f} chars/s at batch {best['batch']} ({each})",
                     verdict(best["charrnn"], 1_000_000), gpu_speed["date"], gpu_speed["device"],
                     "`python bench/speed.py --device cuda`"))
    else:
        rows.append(("training throughput, 3×512 bf16, one H100", "≥ 1,000,000 chars/s", *MISSING))
    if speed:
        dates = run_dates(speed, cpu_runs)
        for r in speed["sampling"]:
            target = 10_000 if r["streams"] == 1 else 40_000
            ceiling = f"; weight-read ceiling {r['ceiling']:,.0f}" if "ceiling" in r else ""
            step = {"NativeLSTMStep": "C step; ", "LSTMStep": "tensor step; ",
                    "LSTMStep + C gates": "tensor step, gates in C; "}.get(r.get("step", ""), "")
            same = [x for run in cpu_runs for x in run["sampling"]
                    if (x["size"], x["streams"]) == (r["size"], r["streams"])] + [r]
            measured = runs_text(same, "charrnn", ",.0f", " chars/s", "")
            rows.append((f"sampling, {r['streams']} stream(s), {r['size']}", f"≥ {target:,} chars/s",
                         f"{measured} (latest: {step}nn.LSTM per char: {r['per_char_lstm']:,.0f}{ceiling})",
                         runs_verdict(same, "charrnn", target), dates, speed["device"], "`python bench/speed.py`"))
    single = [r for r in (gpu_speed or {}).get("sampling", []) if r["streams"] == 1]
    if single:
        r = single[0]
        rows.append((f"sampling, one stream, {r['size']}, on a GPU machine (the target names an H100)",
                     "≥ 20,000 chars/s",
                     f"{r['charrnn']:,.0f} chars/s, stepping on the host CPU ({gpu_speed.get('cpu_count', '?')} cores) "
                     f"as charrnn samples everywhere (nn.LSTM per char there: {r['per_char_lstm']:,.0f})",
                     verdict(r["charrnn"], 20_000),
                     gpu_speed["date"], f"{gpu_speed['device']} machine", "`python bench/speed.py --device cuda`"))
    else:
        rows.append(("sampling, one stream, one H100", "≥ 20,000 chars/s", *MISSING))

    print("| figure | target | measured | verdict | date | device | command |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    scale_table()
    trials_table()


# CPU runs in fp32 (each its own case, never a median with speed-cpu.json's runs): the precision
# `auto` picks on CPUs that do not multiply bf16 natively, measured here and on an AVX2 stand-in.
FP32_SPEED = (
    ("speed-fp32-cpu.json", "`python bench/speed.py --precision fp32`"),
    ("speed-fp32-avx2-proxy.json", "`bench/avx2.sh python bench/speed.py --precision fp32` (an AVX2 CPU's stand-in: "
                                   "C code built without AVX-512, oneDNN, MKL and ATen held to AVX2)"),
)
FP32_TARGET = 1.5  # issue 24: default training at ≥ 1.5× the plain fp32 loop, in whatever precision auto picks
DEFAULT_BATCH = TrainConfig().batch_size  # the target's batch: a default `charrnn train`'s


def fp32_rows(speed: dict | None, earlier: list[dict]) -> list[tuple[str, ...]]:
    """charrnn in auto's precision at the default batch against the plain loop in fp32, and the
    fp32 runs against the plain fp32 loop."""
    rows = []
    for r in (speed or {}).get("training", []):
        if "vs_plain_fp32" not in r or r["batch"] != DEFAULT_BATCH:
            continue
        same = [x for run in earlier for x in run["training"] if same_case(x, r) and "vs_plain_fp32" in x] + [r]
        rows.append((f"default training ({r['precision']}, what auto picks) vs the plain fp32 loop, {r['size']}, "
                     f"batch {r['batch']}×{r['seq']}", f"≥ {FP32_TARGET}×",
                     f"{runs_text(same, 'vs_plain_fp32', '.2f', '×', '×')} (latest: {r['charrnn']:,.0f} vs "
                     f"{r['plain_fp32']:,.0f} chars/s)", runs_verdict(same, "vs_plain_fp32", FP32_TARGET),
                     run_dates(speed, earlier), speed["device"], "`python bench/speed.py`"))
    for name, cmd in FP32_SPEED:
        data = load(name)
        for r in (data or {}).get("training", []):
            rows.append((f"fp32 training vs the plain fp32 loop, {r['size']}, batch {r['batch']}×{r['seq']}",
                         f"≥ {FP32_TARGET}× at batch {DEFAULT_BATCH}" if r["batch"] == DEFAULT_BATCH else "—",
                         f"{r['vs_plain']:.2f}× ({r['charrnn']:,.0f} vs {r['plain']:,.0f} chars/s)",
                         verdict(r["vs_plain"], FP32_TARGET) if r["batch"] == DEFAULT_BATCH else "—", data["date"],
                         data["device"], cmd))
    return rows


def trials_table() -> None:
    """Trials of other GPU settings (bench/results/trials), against the defaults' own run."""
    trials = [json.loads(p.read_text()) for p in sorted((RESULTS / "trials").glob("quality-*.json"))]
    if not trials:
        return
    print()
    print("GPU trials (`python bench/quality.py --device cuda` with the options set through CHARRNN_TRAIN_*; the "
          "three trials of each budget ran at once on the one GPU, sharing its time):")
    print()
    print("| options beside the GPU defaults of the day | model | budget | val loss | best.pt step, epoch | steps run, "
          "wall time of `train` | date | device |")
    print("|---|---|---|---|---|---|---|---|")
    for t in trials:
        best = next((m for m in t["metrics"] if m["step"] == t["steps"]), {})
        args = t["train_args"]
        options = (", ".join(f"{k.removeprefix('CHARRNN_TRAIN_').lower()} {v}" for k, v in args.items())
                   if isinstance(args, dict) else "none: the defaults, as the trials' control")
        print(f"| {options} | {t['model']} | {t['budget']} | {t['val_loss']:.4f} | "
              f"{t['steps']:,}, {best.get('epoch', 0):.1f} | "
              f"{t['metrics'][-1]['step']:,}, {t['train_wall_s']:.0f} s | {t['date']} | {t['device_name']} |")


def scale_table() -> None:
    """Memory and time on large generated corpora (bench/scale.py); target: peak RSS ≤ 1.5 GB at 1 GB."""
    scale = load("scale-cpu.json")
    print()
    if not scale:
        print("Large corpora: not measured (`python bench/scale.py`).")
        return
    print(f"Large corpora, default model, {scale.get('device_name', 'CPU')}, {scale['date']}, "
          f"`{scale.get('command', 'python bench/scale.py')}`:")
    print()
    print("| corpus | token file | encode (hash + encode) | training: steps, time, peak RSS | "
          "eval of a streamed slice | peak RSS target ≤ 1.5 GB |")
    print("|---|---|---|---|---|---|")
    for r in scale["rows"]:
        peak = max(r["encode_peak_rss_mib"], r["train_peak_rss_mib"], r["eval_peak_rss_mib"])
        print(f"| {r['corpus_bytes'] / 1e6:,.0f} MB | {r['token_file_bytes'] / 1e6:,.0f} MB | "
              f"{r['encode_s']:.1f} s, peak RSS {r['encode_peak_rss_mib']} MiB | "
              f"{r['train_steps']} steps in {r['warm_train_s']:.0f} s (start-up and one validation included), "
              f"peak RSS {r['train_peak_rss_mib']} MiB | {r['eval_bytes'] / 1e6:,.0f} MB in {r['eval_s']:.0f} s, "
              f"peak RSS {r['eval_peak_rss_mib']} MiB | {verdict(peak, 1536, True)} ({peak} MiB) |")


if __name__ == "__main__":
    main()
