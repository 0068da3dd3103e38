#!/usr/bin/env bash
# The GPU part of the benchmark (issue 6 and 8), as one script for a lent GPU machine.
#
#   bench/gpu_paper_scale.sh [OUT]        # default OUT: bench/out-gpu
#
# 1. CUDA correctness: slicing equals the CPU, every component passes its contract on CUDA.
# 2. images/s at the paper's scale (L = 128, paper-sized CNN backbones), per encoder x decoder.
# 3. A 2-process torchrun (NCCL) smoke run with its scaling efficiency, when 2+ GPUs exist.
# 4. The four Table 2 methods at L = 64, N = 5,000 on hsp90 and spike with the paper's settings.
# Steps 1-3 take minutes; step 4 is the long one (simulation runs on the CPU cores first).
set -euo pipefail
OUT=${1:-bench/out-gpu}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
"$PY" bench/gpu_check.py
"$PY" bench/bench_components.py --device cuda --box 128 --paper-encoders --json "$OUT/components-L128.json"
if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
    "$PY" bench/bench_scaling.py --procs 1 2 --box 64 --n 4096 --epochs 2 --device cuda
fi
"$PY" bench/bench_reconstruction.py --device cuda --box 64 --n 5000 --settings paper \
    --epochs 20 --switch-epoch 7 --datasets hsp90 spike --workers 8 --out "$OUT/L64"
