"""What the LLM's quality costs to serve: users/s and p50/p95 latency at batch 1 and 512 for SASRec (torch and ONNX),
and every CPU variant of LLM exports (torch-fp32, onnx-fp32, onnx-int8, onnx-int4), on one CPU, in one process, one
model after another with the same thread count.

  python benchmarks/serving_latency.py --sasrec runs/sasrec --export teacher=exports/t8 --export student=exports/s4 \
      [--threads 2] [--batches 1,512] [--out serving.json]

Each model reads full histories of its own window (its max_len; random item ids, the same seed for all). Make the
exports first: `slmrec export --run runs/t8 --format onnx --quantize int8,int4 --out exports/t8` (and the student's).
SASRec's ONNX graph is traced here (slmrec_cli.export.sasrec) and checked against torch before it is timed.
Docs: docs/export.md, "Serving cost against SASRec".
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

CPU_VARIANTS = ("torch-fp32", "onnx-fp32", "onnx-int8", "onnx-int4")


def sasrec_rows(run: Path, batches: list[int], threads: int, min_seconds: float) -> list[dict]:
    from slmrec_cli.export.bench import bench_one, random_histories
    from slmrec_cli.export.onnx import onnx_scorer, session
    from slmrec_cli.export.sasrec import export_sasrec_onnx
    from slmrec_cli.runs import Run

    loaded = Run.load(run)
    model = loaded.load_model("cpu")
    n_items, max_len = loaded.model.n_items, loaded.model.max_len
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sasrec.onnx"
        check = export_sasrec_onnx(run, path, random_histories(8, max_len, n_items, seed=1))
        score_onnx = onnx_scorer(session(path, threads=threads))

        @torch.no_grad()
        def score_torch(items):
            return model.score_all(items)

        rows = bench_one("torch-fp32", "torch", "cpu", score_torch, batches, max_len, n_items,
                         min_seconds=min_seconds)
        rows += bench_one("onnx-fp32", "ort", "cpu", score_onnx, batches, max_len, n_items, min_seconds=min_seconds)
    for r in rows:
        r.update(model="SASRec", history_length=max_len, onnx_check=check["max_rel_diff"])
    return rows


def export_rows(name: str, export_dir: Path, batches: list[int], threads: int, min_seconds: float) -> list[dict]:
    from slmrec_cli.export.bench import bench_one
    from slmrec_cli.export.files import read_manifest
    from slmrec_cli.export.variants import present, scorer

    cfg, rows = read_manifest(export_dir), []
    for v in present(export_dir):
        if v.name not in CPU_VARIANTS:
            continue
        runtime = "torch" if v.name.startswith("torch") else "ort"
        score, _ = scorer(v, export_dir, runtime, "cpu", threads)
        new = bench_one(v.name, runtime, "cpu", score, batches, cfg["max_len"], cfg["n_items"],
                        min_seconds=min_seconds)
        for r in new:
            r.update(model=f"{name} ({cfg['layers']} layers)", history_length=cfg["max_len"])
        rows += new
    return rows


def table(rows: list[dict]) -> str:
    base = {r["batch"]: r["users_per_s"] for r in rows if r["model"] == "SASRec" and r["variant"] == "onnx-fp32"}
    lines = ["| model | variant | runtime | batch | users/s | p50 ms | p95 ms | users/s vs SASRec onnx-fp32 |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = r["users_per_s"] / base[r["batch"]] if r["batch"] in base else float("nan")
        lines.append(f"| {r['model']} | {r['variant']} | {r['runtime']} | {r['batch']} | {r['users_per_s']:.1f} | "
                     f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {ratio:.3g}× |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sasrec", type=Path, required=True, help="a SASRec run (pretrain-ids)")
    ap.add_argument("--export", action="append", default=[], metavar="NAME=DIR", help="an LLM export (repeatable)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batches", default="1,512")
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    batches = [int(b) for b in a.batches.split(",")]
    rows = sasrec_rows(a.sasrec, batches, a.threads, a.min_seconds)
    for spec in a.export:
        name, _, path = spec.partition("=")
        rows += export_rows(name, Path(path), batches, a.threads, a.min_seconds)
    from slmrec_cli.devices import device_name

    print(f"serving on {device_name('cpu')}, {a.threads} thread(s) for torch and ONNX Runtime\n")
    print(table(rows))
    if a.out:
        a.out.write_text(json.dumps({"device": device_name("cpu"), "threads": a.threads, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
