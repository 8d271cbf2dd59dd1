#!/usr/bin/env bash
# Trials of training options on a lent GPU, several at once (GPU time is too short to run
# them one after another): each trial is a set of CHARRNN_TRAIN_* assignments given to
# bench/quality.py, and all of them run side by side on the one GPU, sharing its time.
#
#     bench/gpu_trials.sh 5m CORPUS OUTDIR "CHARRNN_TRAIN_LR=4e-3" "CHARRNN_TRAIN_LR=8e-3 CHARRNN_TRAIN_DROPOUT=0.6"
#
# Each trial's JSON lands in OUTDIR as quality-BUDGET-DEVICE-<options>.json, naming the
# trials it ran beside; copy them to bench/results/trials/ for report.py. The defaults run
# beside them as a control ("defaults"): trials sharing a GPU reach each epoch later than a
# run alone, so they compare only with a run that shared it the same way.
set -u
budget=${1:?usage: bench/gpu_trials.sh BUDGET CORPUS OUTDIR "OPTIONS" ...}
corpus=${2:?usage: bench/gpu_trials.sh BUDGET CORPUS OUTDIR "OPTIONS" ...}
out=${3:?usage: bench/gpu_trials.sh BUDGET CORPUS OUTDIR "OPTIONS" ...}
shift 3
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
device=${DEVICE:-cuda}  # DEVICE=cpu tries the script where no GPU is
names=()
for trial in "" "$@"; do
    name=$(echo "$trial" | tr ' ' '\n' | sed 's/^CHARRNN_TRAIN_//' | tr 'A-Z' 'a-z' | sort | tr -d '=' | paste -sd-)
    name=${name:-defaults}
    names+=("quality-$budget-$device-$name.json")
    # shellcheck disable=SC2086  # the trial's assignments are separate words on purpose
    env $trial "$python" bench/quality.py --time "$budget" --device "$device" --corpus "$corpus" \
        --json-out "$out/quality-$budget-$device-$name.json" >"$out/$name.log" 2>&1 &
done
wait
"$python" - "$out" "${names[@]}" <<'PY'
import json, sys
from pathlib import Path

out, names = Path(sys.argv[1]), sys.argv[2:]
for name in names:
    path = out / name
    if not path.exists():
        print(f"{name}: no result (see its log)")
        continue
    result = json.loads(path.read_text())
    result["ran_beside"] = [other for other in names if other != name]
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{name}: val {result['val_loss']:.4f} at step {result['steps']} "
          f"of {result['metrics'][-1]['step']}, train {result['train_wall_s']:.0f} s")
    for m in result["metrics"]:
        print(f"  {m['step']:>6} epoch {m['epoch']:6.2f} train {m['train_loss']:.3f} val {m['val_loss']:.4f} "
              f"lr {m['lr']:.1e} {m['chars_per_s']:,.0f} chars/s")
PY
