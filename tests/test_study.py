"""benchmarks/paper_study.sh end to end at toy size (tiny-random base), then again to show it resumes/skips."""

from __future__ import annotations

import subprocess

from helpers import REPO, cli_env, make_dataset

TOY = {"BASE": "tiny-random", "TEACHER": "4", "STUDENT": "2", "FULL": "4", "BLOCKS": "2", "B_SWEEP": "1",
       "SWEEP": "1", "PAIRS": "2:1", "SEEDS": "1", "EPOCHS": "1", "EVAL_BATCH": "32", "SASREC_PATIENCE": "1",
       "OMP_NUM_THREADS": "1"}


def study(data, root):
    return subprocess.run(["bash", str(REPO / "benchmarks" / "paper_study.sh"), str(data), str(root),
                           "--batch-size", "16"], env={**cli_env(), **TOY}, capture_output=True, text=True,
                          timeout=600)


def test_paper_study_runs_every_part_and_resumes(tmp_path):
    data, root = make_dataset(tmp_path), tmp_path / "study"
    res = study(data, root)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    runs = root / "runs"
    expected = ["sasrec", "t4", "t2", "t1", "s2", "s2-cos", "s2-cos-norm", "s2-cos-ms", "s2-b1", "s2-online",
                "s1-from-t2", "t2-seed1", "s2-seed1"]
    for name in expected:
        assert (runs / name / "eval" / "test-sampled.json").exists(), name
    assert (runs / "t4" / "probe" / "test.json").exists()
    report = (root / "results.md").read_text()
    assert all(f"`{name}`" in report for name in expected)
    assert "| E4SRec-2 | `t2`, `t2-seed1` | 42, 1 |" in report  # the extra seed is folded into its setting's row
    assert "No runs for this" not in report
    again = study(data, root)  # everything finished: every stage is skipped, the report is rewritten
    assert again.returncode == 0, again.stderr[-3000:]
    # t4 is both the teacher and the full depth; t2 and t1 are also the pair stage's teacher and baseline
    assert again.stdout.count(": done") == len(expected) + 3
