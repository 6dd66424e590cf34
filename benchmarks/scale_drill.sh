#!/usr/bin/env bash
# The paper-scale drill (issue: LLaMA-2-7B shape through every stage on a laptop CPU): see benchmarks/scale_drill.py.
# Usage: benchmarks/scale_drill.sh OUT [--users 120] [--steps 4] [--batch 4] [--small]
# Writes OUT/scale.json (per stage: wall time, peak RSS, artifact sizes) and OUT/scale.md (the docs/scaling.md table).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
exec python3 benchmarks/scale_drill.py "$@"
