"""Markdown tables for docs/export.md from an export directory's quality.json and bench.json (no numbers by hand).

python benchmarks/export_tables.py EXPORT_DIR [EXPORT_DIR...]   (later dirs add their onnx-int8 as another scheme)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from slmrec_cli.evaluation.tables import ci_text


def load(path: Path, name: str) -> dict | None:
    f = path / name
    return json.loads(f.read_text()) if f.exists() else None


def label(v: dict, q: dict) -> str:
    scheme = q.get("onnx_int8_scheme")
    return f"{v['name']} ({scheme})" if v["name"] == "onnx-int8" and scheme else v["name"]


def quality_table(exports: list[tuple[dict, dict | None]]) -> str:
    q0 = exports[0][0]
    checks = q0.get("onnx_check") or {"onnx-fp32": {"max_abs_diff": q0.get("onnx_max_abs_diff", float("nan"))}}
    diffs = "; ".join(f"{name} {c['max_abs_diff']:.1e}" + (f" (tolerance {c['tolerance']:.1e})" if "tolerance" in c
                                                           else "")
                      for name, c in checks.items() if c.get("max_abs_diff") is not None)
    out = [f"Quality: {q0['dataset']} `{q0['data_hash']}`, {q0['split']} split, {q0['users']} users; ONNX vs torch max "
           f"abs difference {diffs}.\n",
           "| variant | file MB | MRR % (sampled) | MRR % (full) | NDCG@10 % | rel. MRR | 95% CI (paired bootstrap) | "
           "measured on |",
           "|---|---:|---:|---:|---:|---:|---|---|"]
    seen = set()
    for q, _ in exports:
        for v in q["variants"]:
            name = label(v, q)
            if name in seen:
                continue
            seen.add(name)
            m = v["metrics"]
            out.append(f"| {name} | {v['bytes'] / 1e6:.1f} | {100 * m['sampled']['MRR']:.2f} | "
                       f"{100 * m['full']['MRR']:.2f} | {100 * m['sampled']['NDCG@10']:.2f} | "
                       f"{v['relative_mrr']:.3f} | {ci_text(v) or '—'} | {v.get('measured_on', '—')} |")
    return "\n".join(out) + "\n"


def bench_table(exports: list[tuple[dict, dict | None]]) -> str:
    b0 = next((b for _, b in exports if b), None)
    if b0 is None:
        return ""
    out = [f"Latency: device {b0['device']}, {b0['threads']} thread(s), history length {b0.get('history_length')}; "
           "speed-up against torch-fp32 on the same runtime device and batch, measured in the same run.\n",
           "| variant | runtime | batch | p50 ms | p95 ms | users/s | speed-up vs torch-fp32 |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for q, b in exports:
        if not b:
            continue
        ref = {(r["provider"].split("-")[0], r["batch"]): r["p50_ms"] for r in b["results"]
               if r["variant"] == "torch-fp32" and r["provider"] in ("cpu", "cuda-fp32")}
        names = {v["name"]: label(v, q) for v in q["variants"]}
        for r in b["results"]:
            base = ref.get((r["provider"].split("-")[0], r["batch"]))
            speed = f"{base / r['p50_ms']:.2f}×" if base else "—"
            out.append(f"| {names.get(r['variant'], r['variant'])} | {r['runtime']}/{r['provider']} | {r['batch']} | "
                       f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['users_per_s']:.1f} | {speed} |")
    return "\n".join(out) + "\n"


def main() -> None:
    dirs = [Path(a) for a in sys.argv[1:]]
    if not dirs:
        sys.exit(__doc__)
    exports = [(load(d, "quality.json"), load(d, "bench.json")) for d in dirs]
    print(quality_table(exports))
    print(bench_table(exports))


if __name__ == "__main__":
    main()
