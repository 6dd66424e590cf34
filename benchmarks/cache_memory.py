"""Does a big teacher cache stay out of RAM? A student of LLaMA-2-7B width (hidden 4096, 4 layers, random weights)
trains a few steps from a synthetic bf16 cache of ~200k examples at B = 4 (6.5 GB), and again with the alignment
terms off and no cache; each run's peak anonymous memory (RssAnon, polled from /proc) is compared.

    python benchmarks/cache_memory.py OUT [--users 500] [--steps 3]

Target (docs/scaling.md): the cached run's peak RssAnon within 2 GiB of the run without it. The cache is read
through a memory map, so its pages are file-backed (RssFile), reclaimable, and shared between processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def rss_anon(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def run(cmd: list, label: str) -> dict:
    """Run `slmrec ...`, polling its RssAnon every 0.05 s; wall seconds and the peak."""
    print(f"== {label}: {' '.join(map(str, cmd))}", flush=True)
    start, peak = time.monotonic(), 0
    proc = subprocess.Popen(["slmrec", *map(str, cmd)])

    def poll() -> None:
        nonlocal peak
        while proc.poll() is None:
            try:
                peak = max(peak, rss_anon(proc.pid))
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.05)

    t = threading.Thread(target=poll)
    t.start()
    proc.wait()
    t.join()
    if proc.returncode:
        sys.exit(f"cache_memory: {label} failed (exit {proc.returncode})")
    out = {"label": label, "wall_s": round(time.monotonic() - start, 1), "peak_rss_anon_gib": round(peak / 2**30, 3)}
    print(f"== {label}: {out}", flush=True)
    return out


def dataset(out: Path, users: int, length: int, items: int) -> Path:
    """`users` users, each `length` distinct items in random order from a catalogue of `items`."""
    from slmrec_cli.data import Log, prepare, save_dataset

    rng = np.random.default_rng(0)
    u = np.repeat(np.arange(users), length)
    it = np.concatenate([rng.choice(items, length, replace=False) for _ in range(users)])
    log = Log(users=[f"u{x}" for x in u], items=[f"i{x}" for x in it], ratings=None,
              timestamps=np.arange(len(u), dtype=np.float64))
    opts = {"min_rating": None, "k_core": 1, "keep_duplicates": False, "num_negatives": 99, "seed": 1}
    path = out / "data"
    save_dataset(prepare(log, **opts), path, name="synthetic-long", source={"kind": "synthetic"}, options=opts,
                 force=True)
    return path


def synthetic_cache(path: Path, teacher: Path, data_dir: Path, max_len: int, blocks: int, hidden: int) -> int:
    """A cache distill accepts for this teacher, data and setup (fp32 autocast, bf16 storage), with random rows."""
    from slmrec_cli.data import load_dataset, training_windows
    from slmrec_cli.distill.cache import FEATURES, META, cache_key, teacher_fingerprint
    from slmrec_cli.io import write_json

    data = load_dataset(data_dir)
    n = len(training_windows(data, max_len))
    from slmrec_cli.distill.blocks import block_layers

    pairs = block_layers(8, 4, blocks)  # the 8-layer teacher's layers 2, 4, 6, 8 for the 4-layer student
    key = cache_key(teacher_fingerprint(teacher), data.content_hash, "causal", max_len, pairs, "last", "bf16", "fp32")
    path.mkdir(parents=True, exist_ok=True)
    arr = np.lib.format.open_memmap(path / FEATURES, mode="w+", dtype=np.uint16, shape=(n, blocks, hidden))
    rng = np.random.default_rng(0)
    for start in range(0, n, 4096):  # bf16 bits of N(0, 1): the top half of float32's
        rows = rng.standard_normal((min(4096, n - start), blocks, hidden), dtype=np.float32)
        arr[start:start + len(rows)] = (rows.view(np.uint32) >> 16).astype(np.uint16)
    arr.flush()
    del arr
    write_json(path / META, {**key, "shape": [n, blocks, hidden]})
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--length", type=int, default=1602, help="items per user (windows ≈ length / max-len each)")
    ap.add_argument("--max-len", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="64 wide instead of 4096: checks the plumbing quickly")
    a = ap.parse_args()
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = out / "llama-2-7b-shape"
    base.mkdir(exist_ok=True)
    sys.path.insert(0, str(Path(__file__).parent))
    from scale_drill import LLAMA2_7B, SMALL

    shape = LLAMA2_7B | (SMALL if a.small else {})
    (base / "config.json").write_text(json.dumps(shape) + "\n")
    data = dataset(out, a.users, a.length, items=4000)
    common = ["--mixed-precision", "no", "--eval-batch", 64]
    runs = out / "runs"
    records = [run(["pretrain-ids", "--data", data, "--out", runs / "sasrec", "--epochs", 1, "--force"], "SASRec ids")]
    records.append(run(["train-teacher", "--data", data, "--ids", runs / "sasrec", "--base-model", base,
                        "--random-init", "--layers", 8, "--max-len", a.max_len, "--max-steps", 1, "--epochs", 1,
                        "--batch-size", 2, "--out", runs / "t8", "--force", *common], "teacher, 8 layers (1 step)"))
    n = synthetic_cache(out / "cache", runs / "t8", data, a.max_len, 4, shape["hidden_size"])
    from slmrec_cli.distill.cache import FEATURES

    size = (out / "cache" / FEATURES).stat().st_size
    print(f"== synthetic cache: {n} examples, {size / 2**30:.2f} GiB", flush=True)
    student = ["distill", "--teacher", runs / "t8", "--student-layers", 4, "--blocks", 4, "--max-steps", a.steps,
               "--epochs", 1, "--batch-size", 4, *common]
    cached = run([*student, "--teacher-cache", out / "cache", "--out", runs / "s4-cache", "--force"],
                 "student, aligned from the cache")
    alone = run([*student, "--lambda-cos", 0, "--lambda-norm", 0, "--lambda-ms", 0, "--out", runs / "s4-alone",
                 "--force"], "student, alignment terms off")
    result = {"examples": n, "cache_gib": round(size / 2**30, 2), "runs": [*records, cached, alone],
              "rss_anon_difference_gib": round(cached["peak_rss_anon_gib"] - alone["peak_rss_anon_gib"], 3),
              "target_gib": 2.0, "threads": os.environ.get("OMP_NUM_THREADS")}
    result["target_met"] = result["rss_anon_difference_gib"] <= 2.0
    (out / "cache_memory.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    if not result["target_met"]:
        raise SystemExit("cache_memory: the cached run's peak RssAnon is more than 2 GiB above the run without it")


if __name__ == "__main__":
    main()
