#!/usr/bin/env bash
# The GPU benchmark, under 5 minutes: run from the repository root on a machine with CUDA.
#   bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# PY=python uses an environment that already has torch with CUDA; otherwise make installs .venv.
if [ "$PY" = .venv/bin/python ] && [ ! -x .venv/bin/python ]; then make .venv/.installed; fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$PY benchmarks/bench_gpu.py --device cuda --samples 60000 --repeats 3
$PY benchmarks/bench_sampler.py --sizes 60000 1281167 --epochs 3 --memory 0
