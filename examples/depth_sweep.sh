#!/usr/bin/env bash
# Depth sweep (paper Fig. 2d–f): teachers with the first l layers of a base model, l in DEPTHS, same settings.
# Usage: examples/depth_sweep.sh DATA_DIR SASREC_RUN OUT_ROOT [extra train-teacher options...]
# Env: DEPTHS="1 2 4 8 16 30" BASE=smollm2-135m. Finished depths are skipped, interrupted ones resume.
# Then `slmrec report` tabulates and plots metric vs depth with the SASRec line: OUT_ROOT/depth_sweep.md and
# OUT_ROOT/img/<dataset>-depth-sweep.png (plus the other sections its runs allow).
set -euo pipefail
data=${1:?dataset dir}; ids=${2:?sasrec run}; root=${3:?output root}; shift 3
base=${BASE:-smollm2-135m}
for l in ${DEPTHS:-1 2 4 8 16 30}; do
  run="$root/t$l"
  [ -f "$run/eval/test-sampled.json" ] && continue
  if [ -d "$run/checkpoint" ]; then mode=--resume; else mode=--force; fi
  slmrec train-teacher --data "$data" --ids "$ids" --base-model "$base" --layers "$l" --out "$run" $mode "$@"
done
slmrec report "$ids" "$root"/t* --out "$root/depth_sweep.md" --img-dir "$root/img"
echo "depth sweep: $root/depth_sweep.md and $root/img/*-depth-sweep.png"
