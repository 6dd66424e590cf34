"""Each variant's six metrics on the test split under both protocols, and its MRR relative to torch-fp32."""

from __future__ import annotations

from pathlib import Path

from slmrec_cli.export.files import read_manifest
from slmrec_cli.export.variants import Variant, scorer


def quality_runtime(variant: Variant, device: str) -> tuple[str, str]:
    """(runtime, provider) that scores a variant's quality: ONNX files in ONNX Runtime, the rest in torch; on the
    CPU unless device is a GPU."""
    onnx = variant.name.startswith("onnx")
    if not device.startswith("cuda"):
        return ("ort" if onnx else "torch", "cpu")
    return ("ort", "cuda") if onnx else ("torch", "cuda-fp32" if variant.name == "torch-fp32" else "cuda")


def measure_quality(export_dir: Path, variants: list[Variant], eval_batch: int, data, device: str = "cpu") -> dict:
    """quality.json of an export (each variant loaded as a user would, its files checked) on `data`, the dataset its
    run was trained on (checked by the caller)."""
    from slmrec_cli.evaluation.evaluate import rank_split
    from slmrec_cli.evaluation.ranking import relative_mrr_ci

    max_len = read_manifest(export_dir)["max_len"]
    rows, ranks = [], {}
    for v in variants:
        score_all, _ = scorer(v, export_dir, *quality_runtime(v, device))
        res = rank_split(score_all, data, "test", ("sampled", "full"), max_len=max_len,
                         batch_size=eval_batch, desc=f"quality {v.name}")
        rows.append({"name": v.name, "file": v.file, "bytes": v.bytes,
                     "metrics": {p: r.metrics for p, r in res.items()}})
        ranks[v.name] = res["sampled"].ranks
    ref = next((r for r in rows if r["name"] == "torch-fp32"), rows[0])
    base = ref["metrics"]["sampled"]["MRR"]
    for r in rows:
        r["relative_mrr"] = r["metrics"]["sampled"]["MRR"] / base if base else float("nan")
        if base:
            r["relative_mrr_ci95"] = list(relative_mrr_ci(ranks[r["name"]], ranks[ref["name"]]))
    return {"dataset": data.name, "data_hash": data.content_hash, "split": "test", "users": data.n_users,
            "candidates_sampled": int(data.negatives.shape[1] + 1), "variants": rows,
            "relative_mrr_ci95": "paired bootstrap over test users, 2000 resamples, seed 0 (sampled protocol)"}
