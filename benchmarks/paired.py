"""Is one run's MRR above another's by more than the choice of test users explains? A paired bootstrap.

python benchmarks/paired.py RUN_A RUN_B [--split test] [--protocol sampled] [--resamples 2000] [--eval-batch 64]

Scores both runs on the same users of the split (the runs' own protocol: docs/protocol.md), then resamples the users
with replacement and reports MRR_A − MRR_B in points with its 95% interval, the per-user standard error of the
difference, and how often A is ahead over the resamples. A single run's test MRR on ml-100k (938 users) moves by
about half a point with the users alone, so a comparison of two single runs needs this before it says "above".
Seeds are the other noise; `benchmarks/seeds.py` pairs runs by seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def user_ranks(run: Path, split: str, protocol: str, batch: int) -> tuple[np.ndarray, str]:
    """Per-user 0-based ranks of the target (pessimistic ties) and the dataset's content hash."""
    from slmrec_cli.data import load_dataset
    from slmrec_cli.evaluation.evaluate import rank_split
    from slmrec_cli.runs import Run

    loaded = Run.load(run)
    ds = load_dataset(loaded.data.path)
    loaded.check_data(ds)
    model = loaded.load_model("cpu")
    res = rank_split(model.score_all, ds, split, (protocol,), max_len=model.cfg.max_len, batch_size=batch)[protocol]
    return np.asarray(res.ranks)[np.argsort(res.user_ids)], ds.content_hash  # in user order, to pair


def paired(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """MRR difference (points) of two rank arrays over the same users, with a paired bootstrap 95% interval."""
    from slmrec_cli.evaluation.ranking import paired_bootstrap

    ra, rb = 1.0 / (a.astype(np.float64) + 1), 1.0 / (b.astype(np.float64) + 1)
    d = ra - rb
    ma, mb = paired_bootstrap(a, b, resamples, seed)
    boot = ma - mb
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return {"mrr_a": 100 * ra.mean(), "mrr_b": 100 * rb.mean(), "diff": 100 * d.mean(),
            "lo": 100 * lo, "hi": 100 * hi, "se": 100 * d.std(ddof=1) / np.sqrt(d.size),
            "se_a": 100 * ra.std(ddof=1) / np.sqrt(d.size), "ahead": float((boot > 0).mean()), "users": d.size}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--protocol", default="sampled", choices=["sampled", "full"])
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--eval-batch", type=int, default=64)
    args = p.parse_args()
    (a, ha), (b, hb) = (user_ranks(r, args.split, args.protocol, args.eval_batch) for r in (args.run_a, args.run_b))
    if ha != hb or a.shape != b.shape:
        print(f"error: {args.run_a} and {args.run_b} were trained on different data ({ha} vs {hb}); compare runs of "
              "one dataset", file=sys.stderr)
        return 2
    r = paired(a, b, args.resamples)
    print(f"{args.split} MRR % ({args.protocol}, {r['users']} users): A {args.run_a} {r['mrr_a']:.2f}, "
          f"B {args.run_b} {r['mrr_b']:.2f}")
    print(f"A − B = {r['diff']:+.2f} points, 95% paired bootstrap interval [{r['lo']:+.2f}, {r['hi']:+.2f}], "
          f"standard error {r['se']:.2f} (one model's MRR alone: ±{r['se_a']:.2f}); A ahead in "
          f"{100 * r['ahead']:.0f}% of {args.resamples} resamples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
