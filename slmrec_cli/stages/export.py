"""`slmrec export`: merged + quantized artifacts, their measured quality (quality.json) and latency (bench.json)."""

from __future__ import annotations

from pathlib import Path

import torch

from slmrec_cli import ui
from slmrec_cli.config.export import ExportConfig
from slmrec_cli.devices import device_name
from slmrec_cli.errors import SlmrecError
from slmrec_cli.export.variants import Variant, ort_cuda_available, present, runtimes, scorer
from slmrec_cli.io import atomic_dir, read_json, write_json


def latest_distill_run(root: Path = Path("runs")) -> Path:
    """The most recently finished distill run under ./runs (finished = it has its test metrics file)."""
    found = []
    for cfg in Path(root).glob("*/config.json"):
        done = cfg.parent / "eval" / "test-sampled.json"
        if done.exists():
            try:
                kind = read_json(cfg).get("kind")
            except ValueError:
                continue
            if kind == "student":
                found.append((done.stat().st_mtime, cfg.parent))
    if not found:
        raise SlmrecError(f"no finished distill run under {root}/; pass --model RUN (a teacher or student run)")
    return max(found)[1]


def build_artifacts(run: Path, out: Path, formats: list[str], quantize: list[str], force: bool,
                    int8_scheme: str = "smooth", smooth_alpha: float | None = None) -> dict:
    from slmrec_cli.export.model import merge_run, save_export

    if out.exists() and any(out.iterdir()):
        if not (out / "config.json").exists():
            raise SlmrecError(f"{out} exists and is not an slmrec export; choose another --out")
        if not force:
            raise SlmrecError(f"{out} already exists; pass --force to replace it")
    if "onnx" in formats:
        from slmrec_cli.export.onnx import need_onnxruntime

        need_onnxruntime()
    want_bnb = "safetensors" in formats and any(q != "none" for q in quantize)
    if want_bnb:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            if "onnx" not in formats:
                raise SlmrecError("--quantize int8/int4 of safetensors needs bitsandbytes: pip install '.[quant]'") \
                    from None
            ui.info("[yellow]bitsandbytes is not installed: skipping the bnb variants (pip install '.[quant]')[/]")
            want_bnb = False
    info: dict = {}
    rec, cfg = merge_run(run)
    with atomic_dir(out, force=True) as tmp:
        save_export(rec, cfg, run, tmp)
        if "onnx" in formats:
            from slmrec_cli.export.onnx import export_onnx, max_abs_diff, quantize_int4

            ui.info("exporting ONNX")
            export_onnx(rec, tmp / "model.onnx")
            info["onnx_max_abs_diff"] = max_abs_diff(rec, tmp / "model.onnx", cfg_items(rec))
            if info["onnx_max_abs_diff"] > 1e-4:
                raise RuntimeError(f"ONNX disagrees with torch by {info['onnx_max_abs_diff']:.2e} (> 1e-4)")
            if "int8" in quantize:
                ui.info(f"quantizing onnx-int8 ({int8_scheme})")
                info.update(onnx_int8(rec, run, cfg, tmp, int8_scheme, smooth_alpha))
            if "int4" in quantize:
                quantize_int4(tmp / "model.onnx", tmp / "model.int4.onnx")
        if want_bnb:
            from slmrec_cli.export.bnb import quantize_bnb

            for q, name in (("int8", "bnb-int8"), ("int4", "bnb-nf4")):
                if q in quantize:
                    ui.info(f"quantizing {name}")
                    quantize_bnb(rec, q.replace("int4", "nf4"), tmp / name)
        write_json(tmp / "export_info.json", {"source_run": str(run), **info})
    return info


def onnx_int8(rec, run: Path, run_cfg: dict, tmp: Path, scheme: str, alpha: float | None) -> dict:
    """model.int8.onnx by the chosen scheme; SmoothQuant calibrates on the run's training histories."""
    from slmrec_cli.export.onnx import quantize_int8

    if scheme != "smooth":
        return quantize_int8(tmp / "model.onnx", tmp / "model.int8.onnx", scheme)
    from slmrec_cli.data import load_dataset
    from slmrec_cli.export.smooth import smooth_int8
    from slmrec_cli.runs import check_same_data

    data = load_dataset(run_cfg["data"]["path"])
    check_same_data(run_cfg, data, run)
    return smooth_int8(rec, data, tmp / "model.int8.onnx", alpha)


def cfg_items(rec) -> int:
    return rec.id_table.shape[0] - 1


def measure_quality(out: Path, variants: list[Variant], eval_batch: int) -> dict:
    from slmrec_cli.data import load_dataset
    from slmrec_cli.evaluation.evaluate import rank_split

    cfg = read_json(out / "config.json")
    data = load_dataset(cfg["data"]["path"])
    if data.content_hash != cfg["data"]["hash"]:
        raise SlmrecError(f"{cfg['data']['path']} changed since the run was trained; cannot score the export")
    from slmrec_cli.evaluation.ranking import relative_mrr_ci

    rows, ranks = [], {}
    for v in variants:
        score_all, _ = scorer(v, out, "ort" if v.name.startswith("onnx") else "torch", "cpu")
        res = rank_split(score_all, data, "test", ("sampled", "full"), max_len=cfg["max_len"],
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


def run_bench(out: Path, variants: list[Variant], batches: list[int], threads: int, min_seconds: float) -> dict:
    from slmrec_cli.export.bench import bench_one

    cfg = read_json(out / "config.json")
    cuda, ort_cuda = torch.cuda.is_available(), ort_cuda_available()
    rows = []
    for v in variants:
        for runtime, provider in runtimes(v, cuda, ort_cuda):
            try:
                score_all, sync = scorer(v, out, runtime, provider, threads)
            except SlmrecError as e:
                ui.info(f"[yellow]skip {v.name} on {runtime}/{provider}: {e}[/]")
                continue
            ui.info(f"bench {v.name} {runtime}/{provider}")
            rows += bench_one(v.name, runtime, provider, score_all, batches, cfg["max_len"], cfg["n_items"],
                              sync=sync, min_seconds=min_seconds)
    return {"device": device_name("cuda" if cuda else "cpu"), "threads": threads, "cuda": cuda,
            "ort_cuda": ort_cuda, "history_length": cfg["max_len"], "results": rows}


def run_export(cfg: ExportConfig) -> dict:
    """`slmrec export`: a new export of a run, or (--bench-only) a new benchmark of an existing export."""
    if cfg.bench_only is not None:
        return {"bench": bench_only(cfg.bench_only, batches=cfg.batch_sizes, threads=cfg.threads,
                                    min_seconds=cfg.min_seconds)}
    model = cfg.model
    if model is None:
        model = latest_distill_run()
        ui.info(f"exporting the latest distill run: {model}")
    return export(Path(model), Path(cfg.out or Path("exports") / Path(model).name), cfg)


def export(model: Path, out: Path, cfg: ExportConfig) -> dict:
    formats, quantize, bench, batches = cfg.format, cfg.quantize, cfg.bench, cfg.batch_sizes
    threads, eval_batch, force, min_seconds = cfg.threads, cfg.eval_batch, cfg.force, cfg.min_seconds
    int8_scheme, smooth_alpha = cfg.int8_scheme, cfg.smooth_alpha
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    info = build_artifacts(Path(model), Path(out), formats, quantize, force, int8_scheme, smooth_alpha)
    variants = present(out)
    quality = measure_quality(out, variants, eval_batch)
    quality.update(info)
    write_json(out / "quality.json", quality)
    result = {"quality": quality}
    if bench:
        result["bench"] = run_bench(out, variants, batches, threads, min_seconds)
        write_json(out / "bench.json", result["bench"])
    print_summary(quality, result.get("bench"))
    return result


def bench_only(out: Path, *, batches: list[int], threads: int | None, min_seconds: float = 1.0) -> dict:
    if not (Path(out) / "config.json").exists():
        raise SlmrecError(f"{out} is not an slmrec export; run `slmrec export` first")
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    bench = run_bench(Path(out), present(out), batches, threads, min_seconds)
    write_json(Path(out) / "bench.json", bench)
    quality = read_json(Path(out) / "quality.json") if (Path(out) / "quality.json").exists() else None
    print_summary(quality, bench)
    return bench


def ci_text(variant: dict) -> str:
    ci = variant.get("relative_mrr_ci95")
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else ""


def print_summary(quality: dict | None, bench: dict | None) -> None:
    from rich.table import Table

    q = {r["name"]: r for r in (quality or {}).get("variants", [])}
    table = Table(title="export: variant × runtime (test split; MRR sampled)", title_justify="left")
    for col in ("variant", "runtime", "MB", "MRR %", "rel. MRR", "95% CI", "batch", "p50 ms", "users/s"):
        table.add_column(col, justify="left" if col in ("variant", "runtime") else "right", no_wrap=True)
    rows = (bench or {}).get("results") or [{"variant": n, "runtime": "-", "provider": "", "batch": None}
                                             for n in q]
    for r in rows:
        v = q.get(r["variant"], {})
        mrr = v.get("metrics", {}).get("sampled", {}).get("MRR")
        table.add_row(r["variant"], f"{r['runtime']}/{r['provider']}".strip("/"),
                      f"{v['bytes'] / 2**20:.1f}" if v else "", f"{100 * mrr:.2f}" if mrr is not None else "",
                      f"{v['relative_mrr']:.3f}" if v else "", ci_text(v), str(r["batch"] or ""),
                      f"{r['p50_ms']:.1f}" if "p50_ms" in r else "", f"{r['users_per_s']:.0f}" if "users_per_s"
                      in r else "")
    if bench:
        table.caption = f"{bench['device']} · history length {bench['history_length']} · p50 per call"
    ui.out.print(table)



