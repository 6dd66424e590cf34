#!/usr/bin/env bash
# Depth sweep (paper Fig. 2d–f): teachers with the first l layers of a base model, l in DEPTHS, same settings.
# Usage: examples/depth_sweep.sh DATA_DIR SASREC_RUN OUT_ROOT [extra train-teacher options...]
# Env: DEPTHS="1 2 4 8 16 30" BASE=smollm2-135m. Finished depths are skipped, interrupted ones resume.
# Then plots metric vs depth with the SASRec line: OUT_ROOT/depth_sweep.png and OUT_ROOT/depth_sweep.json.
set -euo pipefail
data=${1:?dataset dir}; ids=${2:?sasrec run}; root=${3:?output root}; shift 3
base=${BASE:-smollm2-135m}
for l in ${DEPTHS:-1 2 4 8 16 30}; do
  run="$root/t$l"
  [ -f "$run/eval/test-sampled.json" ] && continue
  if [ -d "$run/checkpoint" ]; then mode=--resume; else mode=--force; fi
  slmrec train-teacher --data "$data" --ids "$ids" --base-model "$base" --layers "$l" --out "$run" $mode "$@"
done
python - "$root" "$ids" <<'PY'
import json, sys
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
root, ids = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for run in root.glob("t*"):
    f = run / "eval" / "test-sampled.json"
    if f.exists():
        cfg = json.loads((run / "config.json").read_text())
        rows.append({"layers": cfg["model"]["layers"], "run": str(run), **json.loads(f.read_text())["metrics"]})
rows.sort(key=lambda r: r["layers"])
base = json.loads((ids / "eval" / "test-sampled.json").read_text())["metrics"]
(root / "depth_sweep.json").write_text(json.dumps({"split": "test", "protocol": "sampled", "rows": rows,
                                                   "sasrec": base}, indent=2))
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
for ax, m in zip(axes, ("HR@10", "NDCG@10", "MRR")):
    ax.plot([r["layers"] for r in rows], [100 * r[m] for r in rows], marker="o", label="teacher, first l layers")
    ax.axhline(100 * base[m], color="tab:red", linestyle="--", label="SASRec")
    ax.set_xscale("log", base=2); ax.set_xlabel("layers"); ax.set_ylabel(f"{m} (%)"); ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.suptitle(f"depth sweep ({root}, test, sampled)", fontsize=10)
fig.tight_layout(); fig.savefig(root / "depth_sweep.png", dpi=110)
for r in rows:
    print(f"layers {r['layers']:>2}: MRR {100 * r['MRR']:.2f}  NDCG@10 {100 * r['NDCG@10']:.2f}  HR@10 {100 * r['HR@10']:.2f}")
PY
