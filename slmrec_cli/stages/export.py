"""`slmrec export`: merged + quantized artifacts, their measured quality (quality.json) and latency (bench.json)."""

from __future__ import annotations

from pathlib import Path

import torch

from slmrec_cli import ui
from slmrec_cli.config.export import ExportConfig
from slmrec_cli.devices import device_name
from slmrec_cli.errors import SlmrecError
from slmrec_cli.export.files import read_manifest
from slmrec_cli.export.variants import Variant, ort_cuda_available, present, runtimes, scorer
from slmrec_cli.io import read_json, write_json


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


def run_bench(out: Path, variants: list[Variant], batches: list[int], threads: int, min_seconds: float) -> dict:
    from slmrec_cli.export.bench import bench_one

    cfg = read_manifest(out)
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
    from slmrec_cli.export.build import build_export

    quality = build_export(Path(model), Path(out), formats, quantize, force, int8_scheme=int8_scheme,
                           smooth_alpha=smooth_alpha, eval_batch=eval_batch)
    result = {"quality": quality}
    if bench:
        result["bench"] = run_bench(out, present(out), batches, threads, min_seconds)
        write_json(out / "bench.json", result["bench"])
    print_summary(quality, result.get("bench"))
    return result


def bench_only(out: Path, *, batches: list[int], threads: int | None, min_seconds: float = 1.0) -> dict:
    read_manifest(Path(out))
    variants = present(out)
    for v in variants:  # a damaged or missing file stops the benchmark before it starts, naming the file
        v.verify()
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    bench = run_bench(Path(out), variants, batches, threads, min_seconds)
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



