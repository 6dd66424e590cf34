#!/usr/bin/env bash
# Set up from nothing, then the static checks (ruff, vulture, mypy) and the whole test suite (CPU, one thread per
# library).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=""
PY=${PYTHON:-python3}
$PY -m ruff check slmrec_cli tests benchmarks
$PY -m vulture   # dead code; settings and scope in pyproject.toml, exceptions in vulture_allow.py
$PY -m mypy      # types of config, runs and stages (pyproject.toml); docs/code.md, "Static checks"
# one worker per core (pytest-xdist; SLMREC_TEST_WORKERS=0 runs in this process), each test module on one worker
$PY -m pytest -q -n "${SLMREC_TEST_WORKERS:-auto}" --dist loadscope "$@"
