#!/usr/bin/env bash
# Every check and figure that needs a CUDA GPU, in one go (a lent GPU's time is short):
# the GPU tests, the 5-minute quality run with default settings, and the speed tables.
#
#     bench/gpu.sh CORPUS OUTDIR     # e.g. bench/gpu.sh ../shared/data/tinyshakespeare.txt /tmp/gpu
#
# Each stage has its own time limit, so that one that hangs leaves time for the others;
# logs and JSON land in OUTDIR, and a summary is printed last.
set -u
corpus=${1:?usage: bench/gpu.sh CORPUS OUTDIR}
out=${2:?usage: bench/gpu.sh CORPUS OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
status=()

stage() {  # stage NAME SECONDS COMMAND...: runs it under a limit, logging to OUTDIR/NAME.log
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    status+=("$name: exit $rc after $((SECONDS - start)) s")
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt" 2>&1
"$python" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(), torch.get_num_threads(), "threads")' \
    >>"$out/gpu.txt" 2>&1
stage tests 90 "$python" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/training/test_trainer.py tests/test_model.py
stage quality 400 "$python" bench/quality.py --time 5m --device cuda --corpus "$corpus" \
    --json-out "$out/quality-5m-cuda.json"
stage speed 130 "$python" bench/speed.py --device cuda --rounds 2 --sample-rounds 5 --json-out "$out/speed-cuda.json"

cat "$out/gpu.txt"
tail -n 3 "$out/tests.log"
grep -v '^\$ \|it/s\]\|s/it\]' "$out/quality.log" | tail -n 25
tail -n 16 "$out/speed.log"
printf '%s\n' "${status[@]}"
