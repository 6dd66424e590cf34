#!/usr/bin/env bash
# Set up from nothing, then run the whole test suite (CPU, one thread per library).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=""
PY=${PYTHON:-python3}
$PY -m ruff check slmrec_cli tests benchmarks
$PY -m pytest -q "$@"
