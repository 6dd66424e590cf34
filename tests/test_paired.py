"""benchmarks/paired.py: two runs scored on the same test users, their MRR difference with a paired bootstrap."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "paired.py"
SPEC = importlib.util.spec_from_file_location("paired", SCRIPT)
paired = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(paired)


def test_the_interval_is_paired_and_in_points():
    ranks = np.random.default_rng(0).integers(0, 100, size=500)
    same = paired.paired(ranks, ranks)
    assert same["diff"] == 0 and same["lo"] == same["hi"] == 0 and same["se"] == 0
    better = paired.paired(np.maximum(ranks - 1, 0), ranks)  # never worse, often better: ahead in every resample
    assert better["diff"] > 0 and better["lo"] > 0 and better["ahead"] == 1.0
    assert better["mrr_a"] == 100 * (1 / (np.maximum(ranks - 1, 0) + 1)).mean()


def test_scores_the_runs_as_their_metrics_files(tiny_runs):
    _, sasrec, teacher = tiny_runs
    done = subprocess.run([sys.executable, str(SCRIPT), str(teacher), str(sasrec)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    mrr = {r: 100 * json.loads((r / "eval" / "test-sampled.json").read_text())["metrics"]["MRR"]
           for r in (sasrec, teacher)}
    assert f"A {teacher} {mrr[teacher]:.2f}, B {sasrec} {mrr[sasrec]:.2f}" in done.stdout
    diff = float(done.stdout.split("A − B = ", 1)[1].split(" points", 1)[0])
    assert abs(diff - (mrr[teacher] - mrr[sasrec])) < 0.006
