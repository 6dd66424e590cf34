#!/usr/bin/env bash
# The SLMRec paper's study on one dataset, with SmolLM2-135M, then `slmrec report`.
# Usage: benchmarks/paper_study.sh DATASET [ROOT]
#   DATASET: a built-in name (ml-100k, ml-1m) or a prepared dataset dir; ROOT defaults to studies/<name>.
# Runs (under ROOT/runs): sasrec; teachers t8, t30 (full depth) and t4 (E4SRec-4, no distillation);
# students s4 (4←8, all three terms, B=4), the ablations s4-cos, s4-cos-norm, s4-cos-ms, the block sweep
# s4-b1, s4-b2, online distillation s4-online; the probe of t8 and t30; the depth sweep adds t1, t2, t16.
# Sizes (env): EPOCHS=3 for the LLM stages, SASREC_PATIENCE=5, EVAL_BATCH=64, BASE=smollm2-135m,
#   SWEEP="1 2 16" (extra depths), STAGES="core ablation blocks online full sweep" (a subset runs a part).
# Measured on ml-100k, 2-core CPU: see docs/results.md. Everything skips finished runs and resumes interrupted
# ones, so an interrupted study continues where it stopped. Extra arguments go to every LLM stage.
set -euo pipefail
dataset=${1:?usage: benchmarks/paper_study.sh DATASET [ROOT]}
if [ -f "$dataset/meta.json" ]; then name=$(basename "$dataset"); else name=$dataset; fi
root=${2:-studies/$name}; shift $(( $# >= 2 ? 2 : 1 ))
EPOCHS=${EPOCHS:-3}; BASE=${BASE:-smollm2-135m}; EVAL_BATCH=${EVAL_BATCH:-64}
STAGES=" ${STAGES:-core ablation blocks online full sweep} "
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
data=$root/data runs=$root/runs
mkdir -p "$runs"
log() { echo "== $(date +%H:%M:%S) $*"; }
has() { [[ $STAGES == *" $1 "* ]]; }

# run_stage RUN COMMAND...: skip when finished, resume when a checkpoint exists, else start fresh
run_stage() {
  local run=$1; shift
  if [ -f "$run/eval/test-sampled.json" ]; then log "$run: done"; return; fi
  log "$run: $*"
  if [ -d "$run/checkpoint" ]; then "$@" --out "$run" --resume; else "$@" --out "$run" --force; fi
}
teacher() { run_stage "$runs/t$1" slmrec train-teacher --data "$data" --ids "$runs/sasrec" --base-model "$BASE" \
  --layers "$1" --epochs "$EPOCHS" --patience 2 --eval-batch "$EVAL_BATCH" "${@:2}"; }
student() { local out=$1; shift; run_stage "$runs/$out" slmrec distill --teacher "$runs/t8" --student-layers 4 \
  --epochs "$EPOCHS" --patience 2 --eval-batch "$EVAL_BATCH" "$@"; }
probe() { [ -f "$1/probe/test.json" ] || slmrec prune-probe "$1" --baseline "$runs/sasrec" --batch-size "$EVAL_BATCH"; }
cache() { echo "--teacher-cache $runs/t8/feature-cache-b$1"; }  # one cache per block layout

if [ -f "$dataset/meta.json" ]; then data=$dataset
elif [ ! -f "$data/meta.json" ]; then log "prepare $dataset"; slmrec prepare --dataset "$dataset" --out "$data"; fi
run_stage "$runs/sasrec" slmrec pretrain-ids --data "$data" --patience "${SASREC_PATIENCE:-5}"

if has core; then
  teacher 8 "$@"; probe "$runs/t8"
  teacher 4 "$@"
  student s4 $(cache 4) "$@"
fi
if has ablation; then  # paper Table 4: which terms of Eq. 6 carry the gain
  student s4-cos --lambda-norm 0 --lambda-ms 0 $(cache 4) "$@"
  student s4-cos-norm --lambda-ms 0 $(cache 4) "$@"
  student s4-cos-ms --lambda-norm 0 $(cache 4) "$@"
fi
if has blocks; then  # paper Fig. 4: B in {1, 2, 4} (4 is s4)
  student s4-b1 --blocks 1 $(cache 1) "$@"
  student s4-b2 --blocks 2 $(cache 2) "$@"
fi
if has online; then student s4-online --mode online "$@"; fi  # paper RQ4
if has full; then teacher 30 "$@"; probe "$runs/t30"; fi
if has sweep; then for l in ${SWEEP:-1 2 16}; do teacher "$l" "$@"; done; fi  # paper Fig. 2d-f

log "report"
slmrec report "$runs"/* --out "$root/results.md"
