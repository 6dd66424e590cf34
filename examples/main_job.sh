#!/usr/bin/env bash
# The main job, from nothing, on ml-100k with SmolLM2-135M (under 15 minutes in a fresh clone on a quiet 2-core CPU;
# each stage prints its time):
#   install → prepare → SASRec ids → 8-layer teacher → per-layer probe → 4-layer student distilled from it
#   → side-by-side evaluation and report → export (ONNX + int8) → one recommendation.
# The schedule follows the CPU's measured speed. Where it has AMX tiles (the LLM stages train in bf16 at about half the
# fp32 time) the job runs the study's schedule at the defaults: both LLM stages up to 6 epochs at lr 1e-3, validated
# every epoch, stopping early after 2 validations without a better one (SCHEDULE=study; 9.7 minutes measured on 2 such
# cores). Elsewhere it runs a short one: the teacher 3 epochs, the student 4, both at lr 3e-3 (better than 1e-3 on
# validation for so short a schedule), validated once at the end (SCHEDULE=short), in bf16 where the CPU has AVX-512
# BF16 without AMX (the study's schedule took 15.7 minutes on 2 such AMD EPYC cores) and in fp32 on AVX2 (where 2 and 3
# epochs left the student level with SASRec on validation, 3 and 4 put both LLM models above it).
# docs/findings.md, "The main job", has what each gave. The student's teacher cache is stored in fp32: it is 20 MB
# here (bf16, the default, is for caches of gigabytes) and keeps the live teacher's features exactly.
# benchmarks/paper_study.sh runs the whole study.
# Re-running skips finished stages and resumes interrupted ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if [ -z "${SCHEDULE:-}" ]; then  # bf16 on AMX tiles is fast enough for the study's schedule in 15 minutes
  why=$(python -c "from slmrec_cli.train.accelerator import cpu_auto_bf16_allowed as ok, cpu_bf16_supported as bf16
import torch
amx = ok() and getattr(torch.cpu, '_is_amx_tile_supported', lambda: False)()
print('bf16 on AMX' if amx else 'bf16 (AVX-512 BF16, no AMX)' if ok() and bf16() else 'fp32')")
  if [ "$why" = "bf16 on AMX" ]; then SCHEDULE=study; else SCHEDULE=short; fi
  echo "== this CPU trains the LLM stages in $why: the $SCHEDULE schedule (set SCHEDULE=study or short to choose)"
fi
case $SCHEDULE in  # epochs of the teacher and the student, their learning rate, validation every N steps (0: epoch)
  study) sched=(6 6 1e-3 0) ;;
  short) sched=(3 4 3e-3 100000) ;;  # 100000 steps: once, at the end (each validation costs 10-20 s here)
  *) echo "SCHEDULE must be study or short, got '$SCHEDULE'" >&2; exit 2 ;;
esac
TEACHER_EPOCHS=${TEACHER_EPOCHS:-${sched[0]}}; STUDENT_EPOCHS=${STUDENT_EPOCHS:-${sched[1]}}
LLM_LR=${LLM_LR:-${sched[2]}}; EVAL_EVERY=${EVAL_EVERY:-${sched[3]}}
start=$SECONDS
took() { echo "== $1: $((SECONDS - start)) s since the start"; }

# run_stage RUN_DIR COMMAND...: skip when finished, resume when a checkpoint exists
run_stage() {
  local run=$1; shift
  [ -f "$run/eval/test-sampled.json" ] && { echo "== $run: done"; return; }
  if [ -d "$run/checkpoint" ]; then "$@" --out "$run" --resume; else "$@" --out "$run" --force; fi
}

[ -f data/ml-100k/meta.json ] || slmrec prepare --dataset ml-100k --out data/ml-100k

took setup
run_stage runs/sasrec slmrec pretrain-ids --data data/ml-100k --patience 5
took SASRec
run_stage runs/t8 slmrec train-teacher --data data/ml-100k --ids runs/sasrec --base-model smollm2-135m \
  --layers 8 --epochs "$TEACHER_EPOCHS" --lr "$LLM_LR" --eval-every "$EVAL_EVERY" --patience 2 --eval-batch 64
took teacher
[ -f runs/t8/probe/test.json ] || slmrec prune-probe runs/t8 --baseline runs/sasrec --eval-batch 64
took probe
run_stage runs/s4 slmrec distill --teacher runs/t8 --student-layers 4 --epochs "$STUDENT_EPOCHS" --lr "$LLM_LR" \
  --eval-every "$EVAL_EVERY" --patience 2 --teacher-cache runs/t8/feature-cache --teacher-cache-dtype fp32 --eval-batch 64
took student

slmrec evaluate runs/sasrec runs/t8 runs/s4 --popularity --split test --protocol both --reuse
slmrec report runs/sasrec runs/t8 runs/s4 --out runs/report.md   # the paper's tables for these runs, claims checked
took "evaluate and report"

[ -f exports/s4/quality.json ] || slmrec export --run runs/s4 --out exports/s4 --format onnx --quantize int8 --force
took export
history=$(sed -n '2,4p' data/ml-100k/item_map.tsv | cut -f2 | paste -sd, -)
echo "== recommend for the history $history"
slmrec recommend --export exports/s4 --history "$history" --k 10
took all
