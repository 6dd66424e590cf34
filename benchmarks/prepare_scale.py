"""prepare at Amazon scale: generate a synthetic `amazon-csv` log and time `slmrec prepare` on it.

    python benchmarks/prepare_scale.py                       # 32M rows, the issue's setting
    python benchmarks/prepare_scale.py --rows 4000000 --out /tmp/scale

The log (issue #18 item 7): users Zipf(1.3) mod 2,000,000, items Zipf(1.3) mod 500,000, ratings 1-5 with
P(rating > 3) = 0.8, timestamps uniform over 2000-01-01 .. 2018-10-01, numpy seed 1. Ids look like Amazon's
(items `B` + 9 digits, users `A` + 13 digits), ratings like `5.0`. It is written in blocks of rows, so generating
it takes little memory. `slmrec prepare --format amazon-csv` then runs as a subprocess with the default options
(999 negatives); its wall time and peak RSS (the child's ru_maxrss) go to OUT/result.json and stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_USERS, N_ITEMS, ZIPF_A, SEED = 2_000_000, 500_000, 1.3, 1
T0, T1 = 946_684_800, 1_538_352_000  # 2000-01-01, 2018-10-01 (unix seconds; all have 10 digits)
RATING_P = [0.2 / 3, 0.2 / 3, 0.2 / 3, 0.4, 0.4]  # P(rating > 3) = 0.8
BLOCK = 1 << 20


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """[n, width] ASCII digits of non-negative integers, zero-padded."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers % 10 + ord("0")).astype(np.uint8)


def block_lines(rng: np.random.Generator, n: int) -> bytes:
    """n rows `B#########,A#############,R.0,TTTTTTTTTT\\n` (41 bytes each), drawn from rng."""
    users = rng.zipf(ZIPF_A, n) % N_USERS
    items = rng.zipf(ZIPF_A, n) % N_ITEMS
    ratings = rng.choice(np.arange(1, 6), size=n, p=RATING_P)
    times = rng.integers(T0, T1, size=n)
    out = np.empty((n, 41), dtype=np.uint8)
    out[:, 0] = ord("B")
    out[:, 1:10] = _digits(items, 9)
    out[:, 10] = ord(",")
    out[:, 11] = ord("A")
    out[:, 12:25] = _digits(users, 13)
    out[:, 25] = ord(",")
    out[:, 26] = ratings + ord("0")
    out[:, 27:29] = np.frombuffer(b".0", dtype=np.uint8)
    out[:, 29] = ord(",")
    out[:, 30:40] = _digits(times, 10)
    out[:, 40] = ord("\n")
    return out.tobytes()


def generate(path: Path, rows: int, seed: int = SEED) -> None:
    """Write the synthetic log, BLOCK rows at a time from one numpy generator (same rows + seed = same file)."""
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        for start in range(0, rows, BLOCK):
            f.write(block_lines(rng, min(BLOCK, rows - start)))
    tmp.replace(path)


def run_prepare(log: Path, out: Path, extra: list[str]) -> dict:
    """`slmrec prepare` on the log as a child process: wall seconds and the child's peak RSS."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "slmrec_cli.cli", "--quiet", "prepare", "--input", str(log), "--format",
           "amazon-csv", "--out", str(out), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB, max over children
    if peak_kib <= before:
        raise RuntimeError("the prepare child's peak RSS is hidden by an earlier, larger child")
    return {"wall_s": round(wall, 1), "peak_rss_gib": round(peak_kib / 2**20, 3), "command": cmd[2:]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=32_000_000, help="rows in the log (default 32,000,000)")
    ap.add_argument("--out", type=Path, default=Path("runs/prepare_scale"), help="work and result folder")
    ap.add_argument("--keep-log", action="store_true", help="keep the generated log (it is reused if present)")
    ap.add_argument("prepare_args", nargs="*", help="more `slmrec prepare` options, after --")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / f"amazon-{args.rows}.csv"
    gen_s = 0.0
    if not log.exists():
        start = time.perf_counter()
        generate(log, args.rows)
        gen_s = round(time.perf_counter() - start, 1)
    try:
        result = run_prepare(log, args.out / "dataset", args.prepare_args)
        meta = json.loads((args.out / "dataset" / "meta.json").read_text())
    finally:
        if not args.keep_log:
            log.unlink(missing_ok=True)
    result = {
        "rows": args.rows, "log_bytes": args.rows * 41, "generate_s": gen_s, **result,
        "users": meta["n_users"], "items": meta["n_items"], "interactions": meta["stats"]["interactions"],
        "content_hash": meta["content_hash"], "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if args.rows == 32_000_000:  # the target, at its size: under 5 minutes and 5 GiB
        result["target"] = {"wall_s": 300, "peak_rss_gib": 5.0}
        result["target_met"] = result["wall_s"] < 300 and result["peak_rss_gib"] < 5.0
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if result.get("target_met") is False:
        raise SystemExit("prepare_scale: target not met (under 300 s and 5 GiB)")
    return result


if __name__ == "__main__":
    main()
