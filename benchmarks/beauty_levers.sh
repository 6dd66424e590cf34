#!/usr/bin/env bash
# Why E4SRec-8 trails SASRec on Amazon Beauty: one lever at a time, judged on validation (docs/findings.md, "Amazon
# Beauty"). Every run is E4SRec-8 on smollm2-135m with a 2-epoch cosine schedule, seed 42 and SASRec seed 42's id
# table, as the earlier lever runs (t8-e2-plain at lr 1e-3, t8-e2-lr3e-4); each lever below changes one thing from
# t8-e2-lr3e-4, the best of those, so the levers are steps of a coordinate search, not each against the defaults.
# Usage: benchmarks/beauty_levers.sh ROOT [names...]
#   ROOT: a root of benchmarks/beauty_study.sh (its data/ and runs/sasrec are read; runs go to ROOT/levers/).
#   names: a subset of the levers (default: all, in the order below). Finished runs are skipped, interrupted ones
#   resume. DRY_RUN=1 prints the commands. Each run is ~15 minutes on 2 AVX2 cores (fp32).
set -euo pipefail
root=${1:?usage: benchmarks/beauty_levers.sh ROOT [names...]}; shift
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
declare -A opts=(
  [t8-e2-lr3e-4]=""
  [t8-e2-lr3e-4-drop0.2]="--lora-dropout 0.2"
  [t8-e2-lr3e-4-wd0.1]="--weight-decay 0.1"
  [t8-e2-lr3e-4-r4]="--lora-r 4 --lora-alpha 4"
  [t8-e2-lr3e-4-r64]="--lora-r 64 --lora-alpha 64"
  [t8-e2-lr3e-4-attn]="--lora-targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
  [t8-e2-lr3e-4-len50]="--max-len 50"
  [t8-e2-lr3e-4-len10]="--max-len 10"
  [t8-e2-lr3e-4-ids]="--train-ids"
)
order=(t8-e2-lr3e-4 t8-e2-lr3e-4-drop0.2 t8-e2-lr3e-4-wd0.1 t8-e2-lr3e-4-r4 t8-e2-lr3e-4-attn t8-e2-lr3e-4-len10
  t8-e2-lr3e-4-ids t8-e2-lr3e-4-r64 t8-e2-lr3e-4-len50)
[ $# -gt 0 ] && order=("$@")
mkdir -p "$root/levers"
for name in "${order[@]}"; do
  [ -v "opts[$name]" ] || { echo "unknown lever: $name (choose among: ${!opts[*]})" >&2; exit 2; }
  out=$root/levers/$name
  if [ -f "$out/eval/test-sampled.json" ]; then echo "== $name: done"; continue; fi
  # shellcheck disable=SC2206  # the options are words by design
  cmd=(slmrec train-teacher --data "$root/data" --ids "$root/runs/sasrec" --base-model smollm2-135m --layers 8
    --epochs 2 --lr 3e-4 --eval-every 0 --patience 2 --eval-batch 64 ${opts[$name]} --out "$out")
  if [ -d "$out/checkpoint" ]; then cmd+=(--resume); else cmd+=(--force); fi
  echo "== $(date +%H:%M:%S) $name: ${cmd[*]}"
  [ -n "${DRY_RUN:-}" ] || "${cmd[@]}"
done
