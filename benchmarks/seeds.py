"""Is a difference between two settings more than seed noise? Pair runs of setting A and setting B by seed.

python benchmarks/seeds.py --a RUN... --b RUN... [--split test] [--protocol sampled] [--metric MRR]

Each run's seed is read from its config.json (train.seed); A and B must hold the same seeds, one run each. Prints,
from the runs' own eval files, each seed's metric for A and B and their difference, then mean ± sd (sample standard
deviation) of A, B and the difference and how many seeds A wins, as a Markdown table. Example (the #4 question:
distilled student vs the same depth without distillation):

  python benchmarks/seeds.py --a runs/s2-from-t4 inv/s2-from-t4-seed* --b runs/t2 inv/t2-seed*
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slmrec_cli.evaluation.ranking import METRIC_NAMES
from slmrec_cli.report.collect import label, load_result
from slmrec_cli.report.sections import mean_sd


def by_seed(paths: list[Path], split: str, protocol: str, metric: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for p in paths:
        run = load_result(p)
        seed = run.seed
        if seed in out:
            sys.exit(f"error: two runs with seed {seed} in one setting ({p}); give one run per seed")
        value = run.metric(metric, protocol, split)
        if value is None:
            sys.exit(f"error: {p} has no {split}-{protocol} evaluation; run `slmrec evaluate {p}` first")
        out[seed] = 100 * value
    return out


def table(a: dict[int, float], b: dict[int, float], names: tuple[str, str], metric: str) -> list[str]:
    seeds = sorted(a)
    diffs = [a[s] - b[s] for s in seeds]
    rows = [f"| seed | {names[0]} | {names[1]} | difference |", "|---:|---:|---:|---:|"]
    rows += [f"| {s} | {a[s]:.2f} | {b[s]:.2f} | {d:+.2f} |" for s, d in zip(seeds, diffs, strict=True)]
    rows.append(f"| mean ± sd | {mean_sd([a[s] for s in seeds])} | {mean_sd([b[s] for s in seeds])} | "
                f"{mean_sd(diffs)} |")
    wins = sum(d > 0 for d in diffs)
    rows.append(f"\n{metric} %; A ahead in {wins} of {len(seeds)} seeds.")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", nargs="+", type=Path, required=True, help="runs of setting A, one per seed")
    ap.add_argument("--b", nargs="+", type=Path, required=True, help="runs of setting B, the same seeds")
    ap.add_argument("--split", choices=("valid", "test"), default="test")
    ap.add_argument("--protocol", choices=("sampled", "full"), default="sampled")
    ap.add_argument("--metric", choices=METRIC_NAMES, default="MRR")
    args = ap.parse_args(argv)
    a = by_seed(args.a, args.split, args.protocol, args.metric)
    b = by_seed(args.b, args.split, args.protocol, args.metric)
    if set(a) != set(b):
        sys.exit(f"error: the settings hold different seeds (A {sorted(a)}, B {sorted(b)}); pair every seed")
    names = (f"A: {label(load_result(args.a[0]))}", f"B: {label(load_result(args.b[0]))}")
    print(f"{args.split} split, {args.protocol} protocol (PROTOCOL.md), runs' own eval files\n")
    print("\n".join(table(a, b, names, args.metric)))


if __name__ == "__main__":
    main()
