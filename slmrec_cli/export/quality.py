"""Each variant's six metrics on the test split under both protocols, and its MRR relative to torch-fp32; where each
was measured."""

from __future__ import annotations

from pathlib import Path

from slmrec_cli import ui
from slmrec_cli.errors import SlmrecError
from slmrec_cli.export.files import read_manifest
from slmrec_cli.export.variants import Variant, ort_cuda_available, scorer


def onnx_providers(variant: str, device: str) -> list[str]:
    """ONNX Runtime providers to score an ONNX variant on, first choice first: int8 and int4 on the CPU they are made
    for; fp16 on the CUDA provider when ONNX Runtime has one (whatever --device), else the CPU; fp32 on the CUDA
    provider when the export runs on a GPU and ONNX Runtime has it, else the CPU."""
    cuda = ort_cuda_available() and variant not in ("onnx-int8", "onnx-int4")
    if cuda and (variant == "onnx-fp16" or device.startswith("cuda")):
        return ["cuda", "cpu"]
    return ["cpu"]


def quality_runtimes(variant: Variant, device: str) -> list[tuple[str, str]]:
    """(runtime, provider) pairs that may score a variant, first choice first: ONNX files in ONNX Runtime
    (onnx_providers), the rest in torch on `device` (fp32 for torch-fp32)."""
    if variant.name.startswith("onnx"):
        return [("ort", p) for p in onnx_providers(variant.name, device)]
    if not device.startswith("cuda"):
        return [("torch", "cpu")]
    return [("torch", "cuda-fp32" if variant.name == "torch-fp32" else "cuda")]


def measure_quality(export_dir: Path, variants: list[Variant], eval_batch: int, data, device: str = "cpu") -> dict:
    """quality.json of an export (each variant loaded as a user would, its files checked) on `data`, the dataset its
    run was trained on (checked by the caller). Each variant records where it was measured (`measured_on`); a
    variant that no runtime here can load (fp16 without CUDA, on an ONNX Runtime with no CPU fp16 kernels) is listed
    under `not_measured` with the reason."""
    from slmrec_cli.evaluation.evaluate import rank_split
    from slmrec_cli.evaluation.ranking import relative_mrr_ci

    max_len = read_manifest(export_dir)["max_len"]
    rows, ranks, missing = [], {}, []
    for v in variants:
        score_all, where, errors = None, None, []
        for runtime, provider in quality_runtimes(v, device):
            try:
                score_all, _ = scorer(v, export_dir, runtime, provider)
                where = f"{runtime}/{provider}"
                break
            except SlmrecError as e:  # e.g. ONNX Runtime's CUDA provider listed but unable to start: the next one
                errors.append(f"{runtime}/{provider}: {e}")
        if score_all is None and v.name != "onnx-fp16":  # a variant meant to run here: the export fails
            raise SlmrecError("; ".join(errors))
        if score_all is None:
            missing.append({"name": v.name, "why": "; ".join(errors)})
            ui.info(f"[yellow]{v.name}: quality not measured here ({'; '.join(errors)})[/]")
            continue
        res = rank_split(score_all, data, "test", ("sampled", "full"), max_len=max_len,
                         batch_size=eval_batch, desc=f"quality {v.name}")
        rows.append({"name": v.name, "file": v.file, "bytes": v.bytes, "measured_on": where,
                     "metrics": {p: r.metrics for p, r in res.items()}})
        ranks[v.name] = res["sampled"].ranks
    ref = next((r for r in rows if r["name"] == "torch-fp32"), rows[0])
    base = ref["metrics"]["sampled"]["MRR"]
    for r in rows:
        r["relative_mrr"] = r["metrics"]["sampled"]["MRR"] / base if base else float("nan")
        if base:
            r["relative_mrr_ci95"] = list(relative_mrr_ci(ranks[r["name"]], ranks[ref["name"]]))
    out = {"dataset": data.name, "data_hash": data.content_hash, "split": "test", "users": data.n_users,
           "candidates_sampled": int(data.negatives.shape[1] + 1), "variants": rows,
           "relative_mrr_ci95": "paired bootstrap over test users, 2000 resamples, seed 0 (sampled protocol)"}
    if missing:
        out["not_measured"] = missing
    return out
