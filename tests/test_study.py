"""benchmarks/paper_study.sh at toy size (tiny-random base). Its plan (DRY_RUN) with every stage: each run once, each
command one the CLI resolves (--print-config, in this process: nothing trains), finished runs skipped and interrupted
ones resumed. Then the core stage for real (a Python start per command would cost most of the test, so its plan runs
command by command in this process), and the script over it, which must skip every run and write the report."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from tests.helpers import REPO, cli_env, make_dataset, run_cli

TOY = {"BASE": "tiny-random", "TEACHER": "4", "STUDENT": "2", "FULL": "4", "BLOCKS": "2", "B_SWEEP": "1",
       "SWEEP": "1", "PAIRS": "2:1", "SEEDS": "1", "EPOCHS": "1", "EVAL_BATCH": "32", "SASREC_PATIENCE": "1",
       "OMP_NUM_THREADS": "1"}
EVERY = {"STAGES": "core align ablation blocks online full sweep pairs seeds kd levers", "KD_TAU": "2",
         "LEVER_LRS": "2e-3", "MS_SWEEP": "1", "SEED_STUDENTS": "paper cos ms1"}
RUNS = ["sasrec", "t4", "t2", "t1", "s2", "s2-align-all", "t4-seed1", "s2-cos", "s2-cos-norm", "s2-cos-ms", "s2-ms1",
        "s2-cos-seed1", "s2-ms1-seed1", "s2-b1", "s2-online", "s1-from-t2", "t2-seed1", "s2-seed1", "t1-seed1",
        "s1-from-t2-seed1", "s1-from-t2-kd", "s1-from-t2-kdonly", "s1-from-t2-kd-seed1", "s1-from-t2-kdonly-seed1"]
LEVERS = ["t4-lr2e-3", "t2-lr2e-3", "t4-last", "t2-last", "t4-all", "t2-all"]


def study(data, root, **env):
    return subprocess.run(["bash", str(REPO / "benchmarks" / "paper_study.sh"), str(data), str(root),
                           "--batch-size", "16"], env={**cli_env(), **TOY, **env}, capture_output=True, text=True,
                          timeout=600)


def plan(data, root, **env) -> tuple[str, list[list[str]]]:
    """The script's log and the slmrec commands it would run, in order."""
    res = study(data, root, DRY_RUN="1", **env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res.stdout, [shlex.split(line) for line in res.stdout.splitlines() if line.startswith("slmrec ")]


def trained(commands: list[list[str]]) -> dict[str, list[str]]:
    """The training commands by run path."""
    return {a[a.index("--out") + 1]: a for a in commands if a[1] not in ("prune-probe", "report")}


def test_the_plan_has_every_part_once_and_each_command_resolves(tmp_path, capsys):
    data, root = make_dataset(tmp_path), tmp_path / "study"
    _, commands = plan(data, root, **EVERY)
    assert not list((root / "runs").iterdir())  # planned, not run
    runs = trained(commands)
    assert sorted(Path(p).relative_to(root).as_posix() for p in runs) == sorted(
        [f"runs/{n}" for n in RUNS] + [f"levers/{n}" for n in LEVERS])
    assert [a for a in commands if a[1] == "prune-probe"] == [
        ["slmrec", "prune-probe", str(root / "runs" / "t4"), "--baseline", str(root / "runs" / "sasrec"),
         "--eval-batch", "32"]]
    # the report reads runs/ only: the levers stay out of its tables
    assert commands[-1] == ["slmrec", "report", f"{root}/runs/*", "--out", str(root / "results.md")]
    assert len(commands) == len(RUNS) + len(LEVERS) + 2  # every run once, the probe and the report
    cfg = {}
    for path, argv in runs.items():
        code, out, err = run_cli([*argv[1:], "--print-config"], capsys)
        assert code == 0, f"{shlex.join(argv)}: {err[-2000:]}"
        cfg[Path(path).name] = json.loads(out)
    assert all(c["train"]["seed"] == (1 if name.endswith("-seed1") else 42) for name, c in cfg.items())
    # the ablation, the λ_ms sweep and --align all
    assert [cfg["s2-cos"]["distill"][k] for k in ("lambda_cos", "lambda_norm", "lambda_ms")] == [1.0, 0.0, 0.0]
    assert cfg["s2"]["distill"]["lambda_ms"] == 0.1 and cfg["s2-ms1"]["distill"]["lambda_ms"] == 1.0
    assert cfg["s2-ms1-seed1"]["distill"]["lambda_ms"] == 1.0
    assert cfg["s2-align-all"]["distill"]["align"] == "all" and cfg["s2"]["distill"]["align"] == "last"
    # the kd stage (opt-in): L_kd added to the paper's loss and alone
    added, alone = cfg["s1-from-t2-kd-seed1"]["distill"], cfg["s1-from-t2-kdonly"]["distill"]
    assert (added["lambda_cos"], added["lambda_kd"], added["kd_temperature"]) == (1.0, 1.0, 2.0)
    assert (alone["lambda_cos"], alone["lambda_norm"], alone["lambda_ms"], alone["lambda_kd"]) == (0.0, 0.0, 0.0, 1.0)
    # the levers stage (opt-in): each depth retrained with one lever changed
    n_users = json.loads((data / "meta.json").read_text())["n_users"]
    assert cfg["t2-all"]["targets"] == "all" and cfg["t2-all"]["train"]["max_steps"] == -(-n_users // 32)
    assert cfg["t2-lr2e-3"]["train"]["lr"] == 2e-3 and cfg["t2-last"]["targets"] == "last"


def test_the_plan_skips_finished_runs_and_resumes_interrupted_ones(tmp_path):
    data, root = make_dataset(tmp_path), tmp_path / "study"
    runs = root / "runs"
    (runs / "sasrec" / "eval").mkdir(parents=True)
    (runs / "sasrec" / "eval" / "test-sampled.json").write_text("{}")  # finished
    (runs / "t4" / "checkpoint").mkdir(parents=True)  # interrupted
    log, commands = plan(data, root, STAGES="core")
    assert f"{runs / 'sasrec'}: done" in log
    todo = trained(commands)
    assert sorted(todo) == [str(runs / n) for n in ("s2", "t2", "t4")]
    assert todo[str(runs / "t4")][-1] == "--resume" and "--force" not in todo[str(runs / "t4")]
    assert todo[str(runs / "t2")][-1] == "--force" and todo[str(runs / "s2")][-1] == "--force"


def test_the_core_stage_runs_and_the_script_then_skips_every_run(tmp_path, capsys):
    data, root = make_dataset(tmp_path), tmp_path / "study"
    _, commands = plan(data, root, STAGES="core")
    for argv in commands[:-1]:
        code, _, err = run_cli(argv[1:], capsys)
        assert code == 0, f"{shlex.join(argv)}: {err[-2000:]}"
    runs = root / "runs"
    names = ["sasrec", "t4", "t2", "s2"]
    assert all((runs / n / "eval" / "test-sampled.json").exists() for n in names)
    assert (runs / "t4" / "probe" / "test.json").exists()
    files = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    res = study(data, root, STAGES="core")  # the script over the finished study: every run skipped, the report written
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert res.stdout.count(": done") == len(names) and ": slmrec " not in res.stdout
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()} == files  # nothing rerun or rewritten
    report = (root / "results.md").read_text()
    assert all(f"`{n}`" in report for n in names) and "![learning curves]" in report
