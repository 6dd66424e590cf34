#!/usr/bin/env bash
# Choose SASRec defaults by validation MRR (sampled): a small grid on one dataset.
# Usage: benchmarks/sasrec_sweep.sh DATA_DIR OUT_ROOT   (prints one TSV line per setting)
set -euo pipefail
data=${1:?dataset dir}; root=${2:?output root}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
printf "dropout\tlr\tlayers\tvalid_MRR\tepochs\n"
for setting in "0.5 1e-3 2" "0.2 1e-3 2" "0.5 3e-3 2" "0.3 1e-3 2"; do
  set -- $setting
  run="$root/sasrec-d$1-lr$2-l$3"
  [ -f "$run/eval/valid-sampled.json" ] || slmrec -q pretrain-ids --data "$data" --out "$run" --dropout "$1" \
      --lr "$2" --layers "$3" --force > /dev/null
  python - "$run" "$1" "$2" "$3" <<'PY'
import json, sys
run, d, lr, l = sys.argv[1:]
m = json.load(open(f"{run}/eval/valid-sampled.json"))["metrics"]["MRR"]
steps = [json.loads(x) for x in open(f"{run}/train_log.jsonl") if '"valid"' in x]
print(f"{d}\t{lr}\t{l}\t{m:.4f}\t{steps[-1]['epoch']}")
PY
done
