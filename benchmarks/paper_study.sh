#!/usr/bin/env bash
# The SLMRec paper's study on one dataset, then `slmrec report` (Markdown tables + PNG plots).
# Usage: benchmarks/paper_study.sh DATASET [ROOT [extra options for every LLM stage...]]
#   DATASET: a built-in name (ml-100k, ml-1m) or a prepared dataset dir; ROOT defaults to studies/<name>.
# Runs under ROOT/runs: sasrec; teachers t8 and t30 (full depth) and t4 (E4SRec-4: the student's depth without
# distillation); the student s4 (4←8, all three terms, B=4); the ablations s4-cos, s4-cos-norm, s4-cos-ms; the
# block sweep s4-b1, s4-b2; online distillation s4-online; the probes of t8 and t30; the depth sweep adds t1, t2, t16;
# `pairs` distills other (teacher, student) depths, s2-from-t4 by default, with the student's depth trained alone;
# `seeds` reruns the student and the same depth without distillation with other seeds (t4-seed1, s4-seed1, ...),
# and, when `pairs` runs too, each pair's student and its depth alone (s2-from-t4-seed1, t2-seed1, ...).
# `kd` (opt-in: name it in STAGES; beyond the paper) distills each pair again with L_kd added to the paper's loss
# (s2-from-t4-kd) and with L_kd alone, the paper's three terms off (s2-from-t4-kdonly), for seed 42 and each of SEEDS;
# KD_LAMBDA=1 and KD_TAU=1 set λ_kd and τ.
# `levers` (opt-in: name it in STAGES) retrains E4SRec-M and E4SRec-N under ROOT/levers, one lever changed at a time,
# to see what moves the depth result: lr x0.5 and x2 (t8-lr5e-4, t8-lr2e-3, ...), one example per user
# (t8-last: --targets last) and every prefix as a target at the same number of steps (t8-all: --targets all
# --max-steps EPOCHS x steps of a --targets last epoch). They stay out of the report's tables.
# `align` distills the student with --align all (D_cos, D_norm, L_ms at every real position; s4-align-all).
# MS_SWEEP="1 0.01" adds to `ablation` the paper's loss with the paper's other λ_ms values (s4-ms1, ...; the default
# is 0.1); SEED_STUDENTS="paper cos" makes `seeds` rerun the D_cos-only student too (s4-cos-seed1, ...), not only the
# paper's loss (the default, "paper"); "ms1" there reruns the paper's loss with λ_ms = 1 (s4-ms1-seed1, ...).
# Sizes (env): EPOCHS=6 (LLM stages, each stopping early after 2 validations without a better valid MRR; EVAL_EVERY=0
#   validates once per epoch, N every N steps), TEACHER_SEEDS="1 2" (those of SEEDS that also retrain the teacher,
#   t8-seed1, ...), SASREC_PATIENCE=5, EVAL_BATCH=64, BASE=smollm2-135m, TEACHER=8, STUDENT=4,
#   FULL=30 (the base model's depth), BLOCKS=4, B_SWEEP="1 2", SWEEP="1 2 16" (extra depths), PAIRS="4:2"
#   (teacher:student depths; B is the largest of BLOCKS..1 dividing both), SEEDS="" (extra seeds, e.g. "1 2 3";
#   `slmrec report` folds runs that differ only by seed into one row and checks student vs no-KD seed by seed),
#   STAGES="core align ablation blocks online full sweep pairs seeds" (a subset runs part of the study; add "levers" for
#   the levers or kd stage), LEVER_LRS="5e-4 2e-3", KD_LAMBDA=1, KD_TAU=1.
# Finished runs are skipped and interrupted ones resume, so an interrupted study continues where it stopped.
# DRY_RUN=1 prints the plan instead: each slmrec command that would run, shell-quoted, one per line (the dataset must
# be prepared already; the report's run list is left unexpanded).
set -euo pipefail
dataset=${1:?usage: benchmarks/paper_study.sh DATASET [ROOT [options...]]}
if [ -f "$dataset/meta.json" ]; then name=$(basename "$dataset"); else name=$dataset; fi
root=${2:-studies/$name}; shift $(( $# >= 2 ? 2 : 1 ))
EPOCHS=${EPOCHS:-6}; BASE=${BASE:-smollm2-135m}; EVAL_BATCH=${EVAL_BATCH:-64}
M=${TEACHER:-8}; N=${STUDENT:-4}; B=${BLOCKS:-4}; EVAL_EVERY=${EVAL_EVERY:-0}
STAGES=" ${STAGES:-core align ablation blocks online full sweep pairs seeds} "
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
data=$root/data runs=$root/runs
mkdir -p "$runs"
log() { echo "== $(date +%H:%M:%S) $*"; }
has() { [[ $STAGES == *" $1 "* ]]; }

run() { if [ -n "${DRY_RUN:-}" ]; then printf '%q ' "$@"; echo; else "$@"; fi; }  # run COMMAND, or print it
# run_stage RUN COMMAND...: skip when finished, resume when a checkpoint exists, else start fresh
planned=" "  # what this invocation has run (or, in a dry run, printed) already
run_stage() {
  local run=$1; shift
  if [ -f "$run/eval/test-sampled.json" ] || [[ $planned == *" $run "* ]]; then log "$run: done"; return; fi
  planned+="$run "
  log "$run: $*"
  if [ -d "$run/checkpoint" ]; then run "$@" --out "$run" --resume; else run "$@" --out "$run" --force; fi
}
# teacher_as NAME DEPTH [options]; teacher DEPTH [options] makes t<DEPTH>
teacher_as() { run_stage "$runs/$1" slmrec train-teacher --data "$data" --ids "$runs/sasrec" --base-model "$BASE" \
  --layers "$2" --epochs "$EPOCHS" --patience 2 --eval-every "$EVAL_EVERY" --eval-batch "$EVAL_BATCH" "${@:3}"; }
teacher() { teacher_as "t$1" "$@"; }
# student NAME BLOCKS [options]: N←M from t$M, with the frozen teacher's features cached once per block layout
student() { run_stage "$runs/$1" slmrec distill --teacher "$runs/t$M" --student-layers "$N" --blocks "$2" \
  --epochs "$EPOCHS" --patience 2 --eval-every "$EVAL_EVERY" --eval-batch "$EVAL_BATCH" "${@:3}"; }
# pair TEACHER_DEPTH STUDENT_DEPTH NAME [options]: the student of depth N from t<M> with the largest B <= BLOCKS
# dividing both depths
pair() {
  local tm=$1 sn=$2 name=$3 b=$B; shift 3
  while (( tm % b || sn % b )); do b=$((b - 1)); done
  run_stage "$runs/$name" slmrec distill --teacher "$runs/t$tm" --student-layers "$sn" --blocks "$b" \
    --epochs "$EPOCHS" --patience 2 --eval-every "$EVAL_EVERY" --eval-batch "$EVAL_BATCH" --teacher-cache "$runs/t$tm/feature-cache-b$b" "$@"
}
cache() { echo "--teacher-cache $runs/t$M/feature-cache-b$1"; }
cos=(--lambda-norm 0 --lambda-ms 0)  # the D_cos-only student: CE + (1 − D_cos)
probe() {
  [ -f "$1/probe/test.json" ] || [[ $planned == *" $1/probe "* ]] && return
  planned+="$1/probe "
  run slmrec prune-probe "$1" --baseline "$runs/sasrec" --eval-batch "$EVAL_BATCH"
}

if [ -f "$dataset/meta.json" ]; then data=$dataset
elif [ ! -f "$data/meta.json" ]; then log "prepare $dataset"; run slmrec prepare --dataset "$dataset" --out "$data"; fi
run_stage "$runs/sasrec" slmrec pretrain-ids --data "$data" --patience "${SASREC_PATIENCE:-5}"

if has core; then
  teacher "$M" "$@"; probe "$runs/t$M"
  teacher "$N" "$@"
  student "s$N" "$B" $(cache "$B") "$@"
fi
if has align; then  # causal targets: the alignment terms at every real position instead of the last one
  student "s$N-align-all" "$B" --align all --teacher-cache "$runs/t$M/feature-cache-all" "$@"
fi
if has ablation; then  # paper Table 4: which terms of Eq. 6 carry the gain
  student "s$N-cos" "$B" "${cos[@]}" $(cache "$B") "$@"
  student "s$N-cos-norm" "$B" --lambda-ms 0 $(cache "$B") "$@"
  student "s$N-cos-ms" "$B" --lambda-norm 0 $(cache "$B") "$@"
  for l in ${MS_SWEEP:-}; do student "s$N-ms$l" "$B" --lambda-ms "$l" $(cache "$B") "$@"; done  # the paper's λ3 range
fi
if has blocks; then  # paper Fig. 4: the number of aligned blocks
  for b in ${B_SWEEP:-1 2}; do  # a B that divides BLOCKS reads its teacher layers from the main cache
    if (( B % b == 0 )); then c=$B; else c=$b; fi
    student "s$N-b$b" "$b" $(cache "$c") "$@"
  done
fi
if has online; then student "s$N-online" "$B" --mode online "$@"; fi  # paper RQ4
if has full; then teacher "${FULL:-30}" "$@"; probe "$runs/t${FULL:-30}"; fi
if has sweep; then for l in ${SWEEP:-1 2 16}; do teacher "$l" "$@"; done; fi  # paper Fig. 2d-f
if has pairs; then  # the paper's result needs a teacher stronger than the student's depth trained alone
  for p in ${PAIRS:-4:2}; do
    teacher "${p%%:*}" "$@"; teacher "${p##*:}" "$@"; pair "${p%%:*}" "${p##*:}" "s${p##*:}-from-t${p%%:*}" "$@"
  done
fi
if has seeds; then  # seed noise: is the student's gain over the same depth more than a seed's worth?
  for s in ${SEEDS:-}; do
    if [[ " ${TEACHER_SEEDS-1 2} " == *" $s "* ]]; then teacher_as "t$M-seed$s" "$M" --seed "$s" "$@"; fi
    teacher_as "t$N-seed$s" "$N" --seed "$s" "$@"
    for v in ${SEED_STUDENTS:-paper}; do  # which students get the seed: the paper's loss, the cosine term alone
      case $v in
        paper) student "s$N-seed$s" "$B" $(cache "$B") --seed "$s" "$@" ;;
        cos) student "s$N-cos-seed$s" "$B" "${cos[@]}" $(cache "$B") --seed "$s" "$@" ;;
        ms?*) student "s$N-$v-seed$s" "$B" --lambda-ms "${v#ms}" $(cache "$B") --seed "$s" "$@" ;;  # λ_ms, as MS_SWEEP
        *) echo "SEED_STUDENTS: unknown student '$v' (paper, cos, ms<λ> such as ms1)" >&2; exit 2 ;;
      esac
    done
    if has pairs; then  # each pair's student and its depth alone, the pair's teacher kept
      for p in ${PAIRS:-4:2}; do
        teacher_as "t${p##*:}-seed$s" "${p##*:}" --seed "$s" "$@"
        pair "${p%%:*}" "${p##*:}" "s${p##*:}-from-t${p%%:*}-seed$s" --seed "$s" "$@"
      done
    fi
  done
fi

if has kd; then  # beyond the paper: L_kd, the teacher's next-item distribution, on top of the paper's loss and alone
  for p in ${PAIRS:-4:2}; do
    tm=${p%%:*} sn=${p##*:}
    teacher "$tm" "$@"; teacher "$sn" "$@"
    for s in 42 ${SEEDS:-}; do
      sfx=$([ "$s" = 42 ] || echo "-seed$s")
      kd=(--lambda-kd "${KD_LAMBDA:-1}" --kd-temperature "${KD_TAU:-1}" --seed "$s")
      pair "$tm" "$sn" "s$sn-from-t$tm-kd$sfx" "${kd[@]}" "$@"
      pair "$tm" "$sn" "s$sn-from-t$tm-kdonly$sfx" "${kd[@]}" --lambda-cos 0 --lambda-norm 0 --lambda-ms 0 "$@"
    done
  done
fi

if has levers; then  # what moves E4SRec-M against E4SRec-N: the learning rate, the prompt, the training targets
  mkdir -p "$root/levers"
  lever() { run_stage "$root/levers/$1" slmrec train-teacher --data "$data" --ids "$runs/sasrec" --base-model "$BASE" \
    --layers "$2" --patience 2 --eval-batch "$EVAL_BATCH" "${@:3}"; }
  steps=$(python -c "import json, math, sys; print(int(sys.argv[2]) * math.ceil(json.load(open(sys.argv[1]))['n_users'] / 32))" \
    "$data/meta.json" "$EPOCHS")
  for d in "$M" "$N"; do
    for lr in ${LEVER_LRS:-5e-4 2e-3}; do lever "t$d-lr$lr" "$d" --epochs "$EPOCHS" --lr "$lr" "$@"; done
    lever "t$d-last" "$d" --epochs "$EPOCHS" --targets last "$@"
    lever "t$d-all" "$d" --targets all --epochs "$steps" --max-steps "$steps" --eval-every $((steps / EPOCHS)) "$@"
  done
fi

log "report"
if [ -n "${DRY_RUN:-}" ]; then echo "slmrec report $runs/* --out $root/results.md"
else slmrec report "$runs"/* --out "$root/results.md"; fi
