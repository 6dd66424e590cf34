#!/usr/bin/env bash
# The study on Amazon Beauty as S3-Rec publishes it (one user per line, items in time order; 22,363 users, 12,101
# items, 198,502 interactions), the paper's kind of data: sparse histories (8.9 items a user), a large catalogue.
# Usage: benchmarks/beauty_study.sh BEAUTY_TXT [ROOT [extra options for every LLM stage...]]
#   BEAUTY_TXT: S3-Rec's data/Beauty.txt (repository RUCAIBox/CIKM2020-S3Rec; docs/data.md); ROOT: studies/beauty.
# Prepares it with 99 fixed negatives per user (the published sampled tables' protocol), trains SASRec at its defaults
# with seeds 42, 1, 2 (sasrec, sasrec-seed1, sasrec-seed2; the LLM models read seed 42's id table), then
# benchmarks/paper_study.sh's core and seeds stages: E4SRec-8 (t8), E4SRec-4 (t4) and the student SLMRec 4←8 (s4),
# each with seeds 42, 1, 2, the probe of t8, and `slmrec report` (published numbers beside ours where the protocol
# matches). Every piece resumes where it stopped; keep each finished run's records as it goes:
#   python benchmarks/keep_records.py ROOT/runs docs/records/beauty
# DRY_RUN=1 prints the plan (after preparing the data). Sizes (env): SASREC_SEEDS="1 2", SEEDS="1 2", STAGES="core seeds", and paper_study.sh's own (EPOCHS=6, ...).
# Cost on 2 CPU cores (AVX2, fp32): docs/findings.md, "Amazon Beauty".
set -euo pipefail
src=${1:?usage: benchmarks/beauty_study.sh BEAUTY_TXT [ROOT [options...]]}
root=${2:-studies/beauty}; shift $(( $# >= 2 ? 2 : 1 ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
data=$root/data
mkdir -p "$root/runs"
[ -f "$data/meta.json" ] || slmrec prepare --input "$src" --format sequences --num-negatives 99 --name beauty \
  --out "$data"
sasrec() {  # sasrec RUN [options]: skip when finished, resume when a checkpoint exists
  local run=$root/runs/$1; shift
  [ -f "$run/eval/test-sampled.json" ] && return
  echo "== $(date +%H:%M:%S) $run"
  [ -n "${DRY_RUN:-}" ] && { echo "slmrec pretrain-ids --data $data --out $run $*"; return; }
  if [ -d "$run/checkpoint" ]; then slmrec pretrain-ids --data "$data" --out "$run" --resume "$@"
  else slmrec pretrain-ids --data "$data" --out "$run" --force "$@"; fi
}
sasrec sasrec
for s in ${SASREC_SEEDS:-1 2}; do sasrec "sasrec-seed$s" --seed "$s"; done
SASREC_PATIENCE=10 STAGES=${STAGES:-core seeds} SEEDS=${SEEDS:-1 2} \
  bash "$(dirname "$0")/paper_study.sh" "$data" "$root" "$@"
