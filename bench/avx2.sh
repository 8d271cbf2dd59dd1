#!/usr/bin/env bash
# Runs a command as it would run on a CPU with AVX2 and FMA but neither AVX-512 nor AMX, on a
# CPU that has them: a stand-in for the laptops and older servers charrnn cannot borrow.
#
#   bench/avx2.sh python bench/speed.py --precision fp32 --json-out bench/results/speed-fp32-avx2-proxy.json
#
# charrnn's C code is compiled without AVX-512 (-mno-avx512f after -march=native), and PyTorch's
# three back ends are held to AVX2: oneDNN (nn.LSTM, bf16 products), MKL (fp32 torch.mm) and
# ATen's own vectorised kernels. What it cannot change: the caches, the memory and the clock of
# this CPU, and what `lscpu` reports, so `--precision auto` still sees AVX512-BF16 here (pass
# --precision fp32, which is what auto picks on an AVX2 CPU). bf16 `nn.LSTM` fails under it:
# torch reads the real CPU's flags and asks oneDNN for an AVX-512 bf16 LSTM it may not build.
set -euo pipefail
folder=$(mktemp -d)
trap 'rm -rf "$folder"' EXIT
compiler=$(command -v "${CC:-cc}")
printf '#!/bin/sh\nexec %s "$@" -mno-avx512f\n' "$compiler" > "$folder/cc"
chmod +x "$folder/cc"
CC="$folder/cc" ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 "$@"
