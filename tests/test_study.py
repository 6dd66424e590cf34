"""benchmarks/paper_study.sh at toy size (tiny-random base), every stage: its plan (DRY_RUN) is run command by command
in this process (a Python start per command would cost most of the test), then the script itself runs over the
finished study, which must skip every run and write the report."""

from __future__ import annotations

import json
import shlex
import subprocess

from tests.helpers import REPO, cli_env, make_dataset, run_cli

TOY = {"BASE": "tiny-random", "TEACHER": "4", "STUDENT": "2", "FULL": "4", "BLOCKS": "2", "B_SWEEP": "1",
       "SWEEP": "1", "PAIRS": "2:1", "SEEDS": "1", "EPOCHS": "1", "EVAL_BATCH": "32", "SASREC_PATIENCE": "1",
       "OMP_NUM_THREADS": "1"}


def study(data, root, **env):
    return subprocess.run(["bash", str(REPO / "benchmarks" / "paper_study.sh"), str(data), str(root),
                           "--batch-size", "16"], env={**cli_env(), **TOY, **env}, capture_output=True, text=True,
                          timeout=600)


def test_paper_study_runs_every_part_and_resumes(tmp_path, capsys):
    data, root = make_dataset(tmp_path), tmp_path / "study"
    every = {"STAGES": "core align ablation blocks online full sweep pairs seeds kd levers", "KD_TAU": "2",
             "LEVER_LRS": "2e-3", "MS_SWEEP": "1", "SEED_STUDENTS": "paper cos ms1"}
    plan = study(data, root, DRY_RUN="1", **every)
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr[-3000:]
    commands = [shlex.split(line) for line in plan.stdout.splitlines() if line.startswith("slmrec ")]
    assert commands[-1][:2] == ["slmrec", "report"] and not list((root / "runs").iterdir())  # planned, not run
    for argv in commands[:-1]:
        code, _, err = run_cli(argv[1:], capsys)
        assert code == 0, f"{shlex.join(argv)}: {err[-2000:]}"
    res = study(data, root, **every)  # the script over the finished study: every run is skipped, the report written
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    runs = root / "runs"
    expected = ["sasrec", "t4", "t2", "t1", "s2", "s2-align-all", "t4-seed1", "s2-cos", "s2-cos-norm", "s2-cos-ms",
                "s2-ms1", "s2-cos-seed1", "s2-ms1-seed1", "s2-b1", "s2-online",
                "s1-from-t2", "t2-seed1", "s2-seed1", "t1-seed1", "s1-from-t2-seed1",
                "s1-from-t2-kd", "s1-from-t2-kdonly", "s1-from-t2-kd-seed1", "s1-from-t2-kdonly-seed1"]
    for name in expected:
        assert (runs / name / "eval" / "test-sampled.json").exists(), name
    assert (runs / "t4" / "probe" / "test.json").exists()
    report = (root / "results.md").read_text()
    assert all(f"`{name}`" in report for name in expected)
    assert "| E4SRec-2 | `t2`, `t2-seed1` | 42, 1 |" in report  # the extra seed is folded into its setting's row
    assert "`s1-from-t2`, `s1-from-t2-seed1`" in report  # and so is the pair's
    assert "No runs for this" not in report
    # a λ_ms sweep is labelled by its weight, never read as the paper's loss; the D_cos student's seed joins its row
    assert json.loads((runs / "s2" / "config.json").read_text())["distill"]["lambda_ms"] == 0.1  # the default
    assert json.loads((runs / "s2-ms1" / "config.json").read_text())["distill"]["lambda_ms"] == 1.0
    assert "| SLMRec 2←4 (all three, λ_ms=1; B=2) `s2-ms1` |" in report
    assert "| all three, λ_ms=1 `s2-ms1` |" in report  # its own row of the terms' table
    assert "`s2-cos`, `s2-cos-seed1`" in report
    assert "`s2-ms1`, `s2-ms1-seed1`" in report
    assert "aligned at every position" in report and "![learning curves]" in report
    # the kd stage (opt-in): L_kd added to the paper's loss and alone, each seed folded into its setting's row
    added = json.loads((runs / "s1-from-t2-kd-seed1" / "config.json").read_text())
    alone = json.loads((runs / "s1-from-t2-kdonly" / "config.json").read_text())["distill"]
    assert added["train"]["seed"] == 1 and added["distill"]["lambda_cos"] == 1.0
    assert (added["distill"]["lambda_kd"], added["distill"]["kd_temperature"]) == (1.0, 2.0)
    assert (alone["lambda_cos"], alone["lambda_norm"], alone["lambda_ms"], alone["lambda_kd"]) == (0.0, 0.0, 0.0, 1.0)
    assert "| SLMRec 1←2 (B=1; L_kd only, λ=1, τ=2) | `s1-from-t2-kdonly`, `s1-from-t2-kdonly-seed1` |" in report
    # the levers stage (opt-in): each depth retrained with one lever changed, kept out of the report's tables
    for name in ("t4-lr2e-3", "t2-lr2e-3", "t4-last", "t2-last", "t4-all", "t2-all"):
        assert (root / "levers" / name / "eval" / "test-sampled.json").exists(), name
    cfg = json.loads((root / "levers" / "t2-all" / "config.json").read_text())
    n_users = json.loads((data / "meta.json").read_text())["n_users"]
    assert cfg["targets"] == "all" and cfg["train"]["max_steps"] == -(-n_users // 32)  # one `last` epoch's steps
    assert json.loads((root / "levers" / "t2-lr2e-3" / "config.json").read_text())["train"]["lr"] == 2e-3
    assert json.loads((root / "levers" / "t2-last" / "config.json").read_text())["targets"] == "last"
    assert "`t4-lr2e-3`" not in report
    # t4 is both the teacher and the full depth; t2 and t1 are also the pair and kd stages' teacher and baseline;
    # and the six levers
    assert res.stdout.count(": done") == len(expected) + 5 + 6
    assert len(commands) == len(expected) + 6 + 2  # every run once, the probe and the report
