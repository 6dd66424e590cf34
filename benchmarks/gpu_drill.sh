#!/usr/bin/env bash
# The GPU drill: every CUDA path of slmrec exercised once, on ml-100k with few steps (under 8 minutes on one H100 is
# the aim), each printed PASS/FAIL with its time, into OUT/gpu_drill.json and OUT/gpu_drill.md (docs/export.md,
# "The GPU drill"). Usage: bash benchmarks/gpu_drill.sh [OUT]   (default gpu-drill/)
#   First installs the GPU route (scripts/setup.sh with SLMREC_EXTRAS=gpu,gguf,quant,dev: onnxruntime-gpu, and the
#   CUDA torch already there is kept); SLMREC_SETUP=0 skips that on a machine already set up; PIP_FIND_LINKS=DIR
#   installs from carried wheels. STEPS=N: training steps per stage (default 40).
# Without a CUDA GPU it checks its own plumbing (every planned command parsed by slmrec's CLI, nothing run), says so
# in one line and exits 0 (CI runs it that way: tests/test_gpu_drill.py).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-drill}
if ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; }; then
  if ! plumbing=$(python3 benchmarks/gpu_drill.py --plumbing 2>&1); then
    echo "gpu_drill: no CUDA GPU here, and its plumbing check failed: ${plumbing##*$'\n'}"; exit 1
  fi
  echo "gpu_drill: no CUDA GPU here (nvidia-smi sees none), nothing run; plumbing checked: $plumbing"
  exit 0
fi
start=$SECONDS
if [ "${SLMREC_SETUP:-1}" != 0 ]; then SLMREC_EXTRAS=${SLMREC_EXTRAS:-gpu,gguf,quant,dev} bash scripts/setup.sh; fi
echo "== installed in $((SECONDS - start)) s"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
python3 benchmarks/gpu_drill.py "$out"
