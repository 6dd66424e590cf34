"""`slmrec export`: merged + quantized artifacts, their measured quality (quality.json) and latency (bench.json);
the result is the export directory with both."""

from __future__ import annotations

from pathlib import Path

import torch

from slmrec_cli import ui
from slmrec_cli.config.export import ExportConfig
from slmrec_cli.devices import device_name, resolve_device
from slmrec_cli.errors import SlmrecError
from slmrec_cli.evaluation.tables import print_export
from slmrec_cli.export.files import read_manifest
from slmrec_cli.export.variants import Variant, ort_cuda_available, ort_cuda_by_default, present, runtimes, scorer
from slmrec_cli.io import read_json, write_json
from slmrec_cli.runs import LLM_KINDS, Run, RunKind


def latest_distill_run(root: Path = Path("runs")) -> Path:
    """The most recently finished distill run under ./runs (finished = it has its test metrics file)."""
    found = []
    for cfg in Path(root).glob("*/config.json"):
        done = cfg.parent / "eval" / "test-sampled.json"
        if done.exists():
            try:
                kind = Run.load(cfg.parent).kind
            except SlmrecError:
                continue
            if kind is RunKind.STUDENT:
                found.append((done.stat().st_mtime, cfg.parent))
    if not found:
        raise SlmrecError(f"no finished distill run under {root}/; pass --run RUN (a teacher or student run)")
    return max(found)[1]


def run_bench(out: Path, variants: list[Variant], batches: list[int], threads: int, min_seconds: float,
              device: str | None = None) -> dict:
    """Every variant on every runtime available here (device None), or only on the CPU or only on the GPU. ONNX
    Runtime's CUDA provider runs through IOBinding, and the nodes it left to another provider are recorded
    (`ort_placement`: export.bench); a row's provider says where its compute ran (export.bench.ran_on). onnx-int8
    and onnx-int4 get the CUDA provider only when --device names a GPU (variants.ort_cuda_by_default)."""
    from slmrec_cli.export.bench import bench_one, ort_placement, ran_on

    cfg = read_manifest(out)
    cuda, ort_cuda = torch.cuda.is_available() and device != "cpu", ort_cuda_available() and device != "cpu"
    asked = device is not None and device != "cpu"
    rows, placement = [], {}
    for v in variants:
        pairs = [(r, p) for r, p in runtimes(v, cuda, ort_cuda, cuda_asked=asked)
                 if device is None or (p == "cpu") == (device == "cpu")]
        if not pairs:
            ui.info(f"[yellow]skip {v.name}: no runtime for it on {device}[/]")
        elif ort_cuda and not asked and v.name.startswith("onnx") and not ort_cuda_by_default(v.name):
            ui.info(f"{v.name}: on ONNX Runtime's CPU provider, which it is made for (--device cuda benchmarks it on "
                    "the CUDA provider)")
        for runtime, provider in pairs:
            placed = None
            try:
                score_all, sync = scorer(v, out, runtime, provider, threads)
            except SlmrecError as e:
                ui.info(f"[yellow]skip {v.name} on {runtime}/{provider}: {e}[/]")
                continue
            if runtime == "ort" and provider == "cuda":
                placed = ort_placement(score_all, v.path, provider, cfg["n_items"], cfg["max_len"])
                placement[v.name] = placed
                if placed and placed["elsewhere"]:
                    ui.info(f"[yellow]{v.name} on ONNX Runtime's CUDA provider: {placed['elsewhere']} of "
                            f"{placed['nodes']} nodes run elsewhere ({placed['elsewhere_ops']})[/]")
            ui.info(f"bench {v.name} {runtime}/{provider}")
            new = bench_one(v.name, runtime, ran_on(provider, placed), score_all, batches, cfg["max_len"],
                            cfg["n_items"], sync=sync, min_seconds=min_seconds)
            for r in new:
                r["io_binding"] = runtime == "ort" and provider == "cuda"
            rows += new
    bench = {"device": device_name("cuda" if cuda else "cpu"), "threads": threads, "cuda": cuda,
             "ort_cuda": ort_cuda, "history_length": cfg["max_len"], "results": rows}
    if placement:
        bench["ort_cuda_placement"] = placement
    return bench


def run_export(cfg: ExportConfig) -> dict:
    """`slmrec export`: a new export of a run, or (--bench-only) a new benchmark of an existing export."""
    if cfg.bench_only is not None:
        out = Path(cfg.bench_only)
        bench = bench_only(out, batches=cfg.batch_sizes, threads=cfg.threads, min_seconds=cfg.min_seconds,
                           device=cfg.device)
        quality = read_json(out / "quality.json") if (out / "quality.json").exists() else None
        return {"export": str(out), "quality": quality, "bench": bench}
    run = cfg.run
    if run is None:
        run = latest_distill_run()
        ui.info(f"exporting the latest distill run: {run}")
    out = Path(cfg.out or Path("exports") / Path(run).name)
    return {"export": str(out), "bench": None, **export(Path(run), out, cfg)}


def main(cfg: ExportConfig) -> dict:
    """`slmrec export`: the export (or --bench-only), one table of every variant; the result is the export
    directory, its quality.json and bench.json (null when not benchmarked)."""
    result = run_export(cfg)
    print_export(result["quality"], result["bench"])
    return result


def export(run: Path, out: Path, cfg: ExportConfig) -> dict:
    """Export the teacher or student `run` into `out` (ExportConfig says how); {"quality"} and, with cfg.bench,
    {"bench"}."""
    formats, quantize, bench, batches = cfg.format, cfg.quantize, cfg.bench, cfg.batch_sizes
    threads, eval_batch, force, min_seconds = cfg.threads, cfg.eval_batch, cfg.force, cfg.min_seconds
    int8_scheme, smooth_alpha = cfg.int8_scheme, cfg.smooth_alpha
    device = None if cfg.device == "auto" else resolve_device(cfg.device)  # auto: bench on every runtime here
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    from slmrec_cli.export.build import build_export

    loaded = Run.load(run).require(*LLM_KINDS, hint="export takes a teacher or student run")
    quality = build_export(loaded, Path(out), formats, quantize, force, int8_scheme=int8_scheme,
                           smooth_alpha=smooth_alpha, eval_batch=eval_batch, device=device or auto_device(loaded))
    result = {"quality": quality}
    if bench:
        result["bench"] = run_bench(out, present(out), batches, threads, min_seconds, device)
        write_json(out / "bench.json", result["bench"])
    return result


def auto_device(run: Run) -> str:
    """--device auto's device for merging and scoring: where the run trained (export.model.run_device) when that is
    a GPU visible here, else the CPU (fp32)."""
    from slmrec_cli.export.model import run_device

    if run_device(run) != "cuda":
        return "cpu"
    if not torch.cuda.is_available():
        ui.info(f"[yellow]{run.path} trained on CUDA but no GPU is visible here: merging and scoring on the CPU in "
                "fp32[/]")
        return "cpu"
    return "cuda"


def bench_only(out: Path, *, batches: list[int], threads: int | None, min_seconds: float = 1.0,
               device: str = "auto") -> dict:
    read_manifest(Path(out))
    variants = present(out)
    for v in variants:  # a damaged or missing file stops the benchmark before it starts, naming the file
        v.verify()
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    bench = run_bench(Path(out), variants, batches, threads, min_seconds,
                      None if device == "auto" else resolve_device(device))
    write_json(Path(out) / "bench.json", bench)
    return bench
