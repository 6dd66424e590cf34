"""Keep a study's records: copy the JSON files of finished runs (no weights) to a folder that outlives the machine.

    python benchmarks/keep_records.py STUDY/runs DEST        # e.g. docs/records/ml-1m

Each finished run (one with eval/*.json) becomes DEST/<run>/ with config.json, checksums.json, efficiency.json,
train_log.jsonl, eval/*.json and probe/*.json: everything `slmrec report` reads, so
`slmrec report DEST/* --data data/<name> --out results.md` regenerates a study's tables from the records alone
(the dataset is prepared again by `slmrec prepare`, which is deterministic; its content hash is checked). Weights,
checkpoints and teacher caches stay behind. A record is replaced whole: written to a temp folder, then renamed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from slmrec_cli.io import atomic_dir

FILES = ["config.json", "checksums.json", "efficiency.json", "train_log.jsonl"]
GLOBS = ["eval/*.json", "probe/*.json"]


def keep(run: Path, dest: Path) -> bool:
    """Copy one run's records to dest/<run name>; False when the run is not finished (no metrics yet)."""
    if not (run / "config.json").exists() or not list(run.glob("eval/*.json")):
        return False
    with atomic_dir(dest / run.name) as tmp:
        for name in FILES:
            if (run / name).exists():
                shutil.copy2(run / name, tmp / name)
        for pattern in GLOBS:
            for f in sorted(run.glob(pattern)):
                (tmp / f.parent.name).mkdir(exist_ok=True)
                shutil.copy2(f, tmp / f.parent.name / f.name)
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    runs, dest = Path(argv[0]), Path(argv[1])
    if not runs.is_dir():
        print(f"{runs} is not a folder; pass a study's runs folder (STUDY/runs)", file=sys.stderr)
        return 2
    kept = [r.name for r in sorted(runs.iterdir()) if r.is_dir() and keep(r, dest)]
    print(f"kept {len(kept)} runs in {dest}: {' '.join(kept) or '(none finished)'}")
    return 0 if kept else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
