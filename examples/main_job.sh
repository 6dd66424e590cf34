#!/usr/bin/env bash
# The main job, from nothing, on ml-100k with SmolLM2-135M (measured: 822 s in a fresh clone on a quiet 2-core CPU):
#   install → prepare → SASRec ids → 8-layer teacher → per-layer probe → 4-layer student distilled from it
#   → side-by-side evaluation and report → export (ONNX + int8) → one recommendation.
# Sizes are picked for the CPU budget (2 epochs of causal targets for the LLM stages); benchmarks/paper_study.sh runs
# the study (up to 6 epochs, early stopping on validation).
# Re-running skips finished stages and resumes interrupted ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
LLM_EPOCHS=${LLM_EPOCHS:-2}

# run_stage RUN_DIR COMMAND...: skip when finished, resume when a checkpoint exists
run_stage() {
  local run=$1; shift
  [ -f "$run/eval/test-sampled.json" ] && { echo "== $run: done"; return; }
  if [ -d "$run/checkpoint" ]; then "$@" --out "$run" --resume; else "$@" --out "$run" --force; fi
}

[ -f data/ml-100k/meta.json ] || slmrec prepare --dataset ml-100k --out data/ml-100k

run_stage runs/sasrec slmrec pretrain-ids --data data/ml-100k --patience 5
run_stage runs/t8 slmrec train-teacher --data data/ml-100k --ids runs/sasrec --base-model smollm2-135m \
  --layers 8 --epochs "$LLM_EPOCHS" --eval-batch 64
[ -f runs/t8/probe/test.json ] || slmrec prune-probe runs/t8 --baseline runs/sasrec --batch-size 64
run_stage runs/s4 slmrec distill --teacher runs/t8 --student-layers 4 --epochs "$LLM_EPOCHS" \
  --teacher-cache runs/t8/feature-cache --eval-batch 64

slmrec evaluate runs/sasrec runs/t8 runs/s4 --popularity --split test --protocol both --reuse
slmrec report runs/sasrec runs/t8 runs/s4 --out runs/report.md   # the paper's tables for these runs, claims checked

[ -f exports/s4/quality.json ] || slmrec export --model runs/s4 --out exports/s4 --format onnx --quantize int8 --force
history=$(sed -n '2,4p' data/ml-100k/item_map.tsv | cut -f2 | paste -sd, -)
echo "== recommend for the history $history"
slmrec recommend --model exports/s4 --history "$history" --k 10
