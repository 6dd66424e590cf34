#!/usr/bin/env bash
# The main job on a fresh machine: install, prepare ml-100k, train SASRec, evaluate side by side with popularity.
# Outputs: data/ml-100k, runs/sasrec (eval/*.json metrics files). Re-running resumes/reuses finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

[ -f data/ml-100k/meta.json ] || slmrec prepare --dataset ml-100k --out data/ml-100k

if [ ! -f runs/sasrec/eval/test-sampled.json ]; then
  if [ -d runs/sasrec/checkpoint ]; then resume=--resume; else resume=--force; fi
  slmrec pretrain-ids --data data/ml-100k --out runs/sasrec $resume
fi

slmrec evaluate runs/sasrec --popularity --split test --protocol both
