"""The GPU drill's driver (benchmarks/gpu_drill.sh runs it): every CUDA path of slmrec on ml-100k with few steps,
each a real `slmrec` command, timed, PASS or FAIL, into OUT/gpu_drill.json and OUT/gpu_drill.md.

  python benchmarks/gpu_drill.py OUT            the drill (needs a CUDA GPU)
  python benchmarks/gpu_drill.py --plumbing     no GPU needed: every planned command parsed by slmrec's own CLI (its
                                                options exist, their values type-check), nothing run; one line

Paths: bf16 training of an 8-layer teacher and a 4-layer student (step times side by side), fp16 and 8-/4-bit teacher
loading, distillation from a teacher cache and live, prune-probe, evaluate --quantization 8bit|4bit, export with every
variant, --bench-only at batch 1 and 512 on ONNX Runtime CUDA and torch bf16, recommend per variant, and the nodes
that fell off the GPU (bench.json's ort_cuda_placement). STEPS (env, default 40) sets the training steps of each stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("torch-fp32", "onnx-fp32", "onnx-int8", "onnx-int4", "onnx-fp16", "bnb-int8", "bnb-nf4")
HISTORY = "1,2,3,4,5"  # raw ml-100k item ids (item_map.tsv's second column)


def plan(out: Path, steps: int) -> list[tuple[str, list[str]]]:
    """(path name, slmrec arguments) in the order they run; later paths read what earlier ones wrote."""
    data, runs, exp = out / "data", out / "runs", out / "exports" / "s4"
    t8, s4 = runs / "t8", runs / "s4"
    few = ["--max-steps", str(steps), "--eval-every", "0", "--epochs", "1", "--eval-batch", "256", "--force"]
    teacher = ["train-teacher", "--data", str(data), "--ids", str(runs / "sasrec"), "--base-model", "smollm2-135m"]
    quick = ["--max-steps", str(max(2, steps // 4)), "--eval-every", "0", "--epochs", "1", "--eval-batch", "256",
             "--force"]
    p = [("doctor", ["doctor", "--device", "cuda", "--strict"]),
         ("prepare ml-100k", ["prepare", "--dataset", "ml-100k", "--out", str(data)]),
         ("SASRec ids (fp32)", ["pretrain-ids", "--data", str(data), "--out", str(runs / "sasrec"), "--epochs", "3",
                                "--force"]),
         ("teacher 8 layers bf16", [*teacher, "--layers", "8", "--mixed-precision", "bf16", "--out", str(t8), *few]),
         ("teacher fp16", [*teacher, "--layers", "2", "--mixed-precision", "fp16", "--out", str(runs / "t-fp16"),
                           *quick]),
         ("teacher 8-bit base", [*teacher, "--layers", "2", "--load-in-8bit", "--out", str(runs / "t-8bit"),
                                 *quick]),
         ("teacher 4-bit base", [*teacher, "--layers", "2", "--load-in-4bit", "--out", str(runs / "t-4bit"),
                                 *quick]),
         ("prune-probe", ["prune-probe", str(t8), "--device", "cuda", "--eval-batch", "256"]),
         ("student 4 layers bf16, cached teacher",
          ["distill", "--teacher", str(t8), "--student-layers", "4", "--mixed-precision", "bf16", "--teacher-cache",
           str(t8 / "feature-cache"), "--out", str(s4), *few]),
         ("student live teacher", ["distill", "--teacher", str(t8), "--student-layers", "4", "--mixed-precision",
                                   "bf16", "--out", str(runs / "s4-live"), *quick]),
         ("evaluate 8bit", ["evaluate", str(t8), "--quantization", "8bit", "--device", "cuda", "--eval-batch", "256"]),
         ("evaluate 4bit", ["evaluate", str(t8), "--quantization", "4bit", "--device", "cuda", "--eval-batch", "256"]),
         ("export every variant", ["export", "--run", str(s4), "--out", str(exp), "--quantize", "int8,int4,fp16",
                                   "--device", "cuda", "--force"]),
         ("bench-only batch 1, 512", ["export", "--bench-only", str(exp), "--device", "cuda", "--batch-sizes",
                                      "1,512"])]
    p += [(f"recommend {v}", ["recommend", "--export", str(exp), "--variant", v, "--device", "cuda", "--history",
                              HISTORY, "--k", "10"]) for v in VARIANTS]
    return p


def parse_only(p: list[tuple[str, list[str]]]) -> None:
    """Each planned command through slmrec's own parser (typer/click): an unknown option or a bad value fails here,
    as it would on the GPU, without running anything."""
    import typer

    from slmrec_cli.cli import app

    group = typer.main.get_command(app)
    for name, args in p:
        command = group.get_command(None, args[0])
        if command is None:
            raise SystemExit(f"gpu_drill: plumbing: {name}: slmrec has no command {args[0]!r}")
        try:
            command.make_context(args[0], list(args[1:]), resilient_parsing=False)
        except Exception as e:  # click's UsageError and its vendored copy in typer
            raise SystemExit(f"gpu_drill: plumbing: {name}: {e}") from None


def run(name: str, args: list[str], log: Path) -> dict:
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n== {name}: slmrec {' '.join(args)}\n")
        f.flush()
        proc = subprocess.run(["slmrec", *args], stdout=f, stderr=subprocess.STDOUT, timeout=900)
    seconds = time.perf_counter() - t0
    tail = log.read_text().rstrip().splitlines()[-1:] if proc.returncode else []
    return {"path": name, "status": "PASS" if proc.returncode == 0 else "FAIL", "seconds": round(seconds, 1),
            "rc": proc.returncode, "why": tail[0][:300] if tail else ""}


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def numbers(out: Path) -> dict:
    """Step times side by side, the benchmark's rows and the nodes ONNX Runtime left off the GPU."""
    runs = out / "runs"
    step = {name: read(runs / name / "efficiency.json").get("train_seconds_per_step")
            for name in ("t8", "s4", "s4-live", "t-fp16", "t-8bit", "t-4bit")}
    bench = read(out / "exports" / "s4" / "bench.json")
    rows = [{k: r.get(k) for k in ("variant", "runtime", "provider", "batch", "users_per_s", "p50_ms", "p95_ms")}
            for r in bench.get("results", [])]
    return {"seconds_per_step": step, "bench": rows, "ort_placement": bench.get("ort_cuda_placement", {}),
            "quality": read(out / "exports" / "s4" / "quality.json")}


def markdown(result: dict) -> str:
    lines = [f"# GPU drill ({result['device']})", "", "| path | result | seconds | why |", "|---|---|---|---|"]
    lines += [f"| {r['path']} | {r['status']} | {r['seconds']} | {r['why']} |" for r in result["paths"]]
    lines += ["", "Seconds per training step: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                          result["numbers"]["seconds_per_step"].items() if v), ""]
    lines += ["| variant | runtime | provider | batch | users/s | p50 ms | p95 ms |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['runtime']} | {r['provider']} | {r['batch']} | {r['users_per_s'] or 0:.0f} | "
              f"{r['p50_ms'] or 0:.2f} | {r['p95_ms'] or 0:.2f} |" for r in result["numbers"]["bench"]]
    lines += ["", "Nodes ONNX Runtime placed off the GPU: `" + json.dumps(result["numbers"]["ort_placement"]) + "`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["--plumbing"]:
        p = plan(Path("gpu-drill"), 40)
        parse_only(p)
        print(f"{len(p)} paths planned, every command parsed by slmrec's CLI")
        return
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-drill")
    out.mkdir(parents=True, exist_ok=True)
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_drill: torch sees no CUDA GPU here; run it on a GPU machine")
    log, results = out / "gpu_drill.log", []
    for name, args in plan(out, int(os.environ.get("STEPS", "40"))):
        results.append(run(name, args, log))
        r = results[-1]
        print(f"{r['status']}  {r['seconds']:7.1f} s  {name}{'  ' + r['why'] if r['why'] else ''}", flush=True)
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "paths": results,
              "numbers": numbers(out)}
    (out / "gpu_drill.json").write_text(json.dumps(result, indent=1))
    (out / "gpu_drill.md").write_text(markdown(result))
    failed = [r["path"] for r in results if r["status"] == "FAIL"]
    print(f"gpu_drill: {len(results) - len(failed)}/{len(results)} paths passed"
          f"{': failed ' + ', '.join(failed) if failed else ''}; {out}/gpu_drill.md")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
