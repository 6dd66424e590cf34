"""Markdown tables for docs/results.md, read from run directories' metrics and efficiency files (no numbers by hand).

python benchmarks/results_tables.py quality RUN... [--split test] [--popularity DATA]
python benchmarks/results_tables.py efficiency STUDENT TEACHER [OTHER...]
python benchmarks/results_tables.py probe RUN [--split test]
python benchmarks/results_tables.py datasets DATA_DIR...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METRICS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def label(run: Path) -> str:
    cfg = read(run / "config.json")
    if cfg["kind"] == "sasrec":
        return f"SASRec ({cfg['model']['layers']} blocks, d={cfg['model']['dim']})"
    base = cfg["base_model"]["ref"] + ("" if cfg["base_model"]["pretrained"] else " [not pretrained]")
    if cfg["kind"] == "student":
        d = cfg["distill"]
        terms = "+".join(t for t, k in (("cos", "lambda_cos"), ("norm", "lambda_norm"), ("ms", "lambda_ms")) if d[k])
        return (f"SLMRec {d['student_layers']}←{d['teacher_layers']} ({base}, B={d['blocks']}, {terms or 'CE only'}, "
                f"{d['norm_loss']}, {d['mode']})")
    return f"E4SRec-style {cfg['model']['layers']} layers ({base})"


def quality(runs: list[Path], split: str, popularity: Path | None) -> str:
    out = []
    for protocol in ("sampled", "full"):
        rows = []
        for run in runs:
            f = run / "eval" / f"{split}-{protocol}.json"
            if f.exists():
                rows.append((f"{label(run)} `{run.name}`", read(f)))
        if popularity is not None:
            import subprocess

            res = subprocess.run(["slmrec", "-q", "evaluate", "--popularity", "--data", str(popularity), "--split",
                                  split, "--protocol", protocol, "--json"], capture_output=True, text=True, check=True)
            rows.insert(0, ("most popular", json.loads(res.stdout)))
        if not rows:
            continue
        r0 = rows[0][1]
        out.append(f"**{split} split, {protocol} protocol** — {r0['candidates']} candidates, "
                   f"mask_history={str(r0['mask_history']).lower()}, {r0['users']} users, dataset {r0['dataset']} "
                   f"`{r0['data_hash']}`, pessimistic ties; metrics in %.\n")
        out.append("| model | " + " | ".join(METRICS) + " |")
        out.append("|---|" + "---:|" * len(METRICS))
        best = {m: max(r["metrics"][m] for _, r in rows) for m in METRICS}
        for name, r in rows:
            cells = [f"**{100 * r['metrics'][m]:.2f}**" if r["metrics"][m] == best[m] and len(rows) > 1
                     else f"{100 * r['metrics'][m]:.2f}" for m in METRICS]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def efficiency(runs: list[Path]) -> str:
    rows = [(run, read(run / "efficiency.json")) for run in runs]
    ref = rows[1][1] if len(rows) > 1 else rows[0][1]
    ref_name = (rows[1] if len(rows) > 1 else rows[0])[0].name
    out = [f"Device: {rows[0][1]['device']}. Ratios are against `{ref_name}` (measured in the same session).\n",
           "| run | trainable params | inference params | train s/epoch | inference s (test, sampled) | users "
           "| peak memory GiB | train ×  | inference × | inference params × |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run, e in rows:
        out.append(f"| `{run.name}` | {e['params']['trainable']:,} | {e['params']['inference']:,} | "
                   f"{e['train_seconds_per_epoch']:.1f} | {e['inference_seconds']:.1f} | {e['inference_users']} | "
                   f"{e['peak_memory_bytes'] / 2**30:.2f} | "
                   f"{e['train_seconds_per_epoch'] / ref['train_seconds_per_epoch']:.2f} | "
                   f"{e['inference_seconds'] / ref['inference_seconds']:.2f} | "
                   f"{e['params']['inference'] / ref['params']['inference']:.2f} |")
    return "\n".join(out) + "\n"


def probe(run: Path, split: str) -> str:
    rec = read(run / "probe" / f"{split}.json")
    out = [f"Per-layer probe of `{run.name}` ({rec['base_model']}), {split} split, sampled protocol, final norm "
           f"{'on' if rec['final_norm'] else 'off'}; metrics in %.\n",
           "| layer | " + " | ".join(METRICS) + " |", "|---:|" + "---:|" * len(METRICS)]
    for row in rec["layers"]:
        out.append(f"| {row['layer']} | " + " | ".join(f"{100 * row['metrics'][m]:.2f}" for m in METRICS) + " |")
    return "\n".join(out) + "\n"


def datasets(dirs: list[Path]) -> str:
    out = ["| dataset | users | items | interactions | density | avg length | content hash | filters |",
           "|---|---:|---:|---:|---:|---:|---|---|"]
    for d in dirs:
        m = read(d / "meta.json")
        st, op = m["stats"], m["options"]
        out.append(f"| {m['name']} | {st['users']:,} | {st['items']:,} | {st['interactions']:,} | "
                   f"{100 * st['density']:.2f}% | {st['mean_length']:.1f} | `{m['content_hash']}` | rating > "
                   f"{op['min_rating']:g}, {op['k_core']}-core, {op['num_negatives']} negatives (seed {op['seed']}) |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("quality", "efficiency", "probe", "datasets"))
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--popularity", type=Path)
    a = ap.parse_args()
    if a.what == "quality":
        print(quality(a.runs, a.split, a.popularity))
    elif a.what == "efficiency":
        print(efficiency(a.runs))
    elif a.what == "datasets":
        print(datasets(a.runs))
    else:
        print(probe(a.runs[0], a.split))


if __name__ == "__main__":
    main()
