"""`slmrec report` on tiny runs: every section of the paper's study is produced, with its plots."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from slmrec_cli.config.evaluate import ProbeConfig
from slmrec_cli.config.train import TrainArgs
from slmrec_cli.stages.prune_probe import prune_probe
from tests.helpers import REPO, TEACHER_TINY, copy_runs, run_cli, student_run, teacher_run

ARGS = TrainArgs(epochs=1, batch_size=16, lr=5e-3)
SECTIONS = ("The paper's claims, checked", "Dataset (paper Table 1)", "Quality (paper Tables 2–3)",
            "Ablation of the distillation terms (paper Table 4)", "Efficiency (paper Table 5)",
            "Per-layer probe (paper Fig. 2a–c)", "Depth sweep (paper Fig. 2d–f)", "Block count B (paper Fig. 4)",
            "Online vs offline distillation (paper RQ4)", "Seeds")


@pytest.fixture(scope="module")
def study(tiny_runs, tmp_path_factory):
    """A miniature paper study: SASRec, teachers of 4 (full depth), 2 and 1 layers, students 2←4 for the ablation,
    the block sweep, online mode and L_kd, a second pair 1←2, and a probe."""
    root = tmp_path_factory.mktemp("study")
    data, sasrec, t4 = copy_runs(tiny_runs, root)
    teacher_run(data, sasrec, "tiny-random", root / "t2", {**TEACHER_TINY, "layers": 2}, ARGS)
    prune_probe(ProbeConfig(t4, baseline=sasrec))
    for name, kw in {"s2": {}, "s2-cos": {"lambda_norm": 0.0, "lambda_ms": 0.0}, "s2-b1": {"blocks": 1},
                     "s2-online": {"mode": "online"}, "s2-kd": {"lambda_kd": 1.0, "kd_temperature": 2.0}}.items():
        student_run(t4, root / name, 2, ARGS, blocks=kw.pop("blocks", 2), **kw)
    teacher_run(data, sasrec, "tiny-random", root / "t1", {**TEACHER_TINY, "layers": 1}, ARGS)
    student_run(root / "t2", root / "s1", 1, ARGS, blocks=1)  # a second (teacher, student) pair: 1←2
    seed1 = TrainArgs(epochs=1, batch_size=16, lr=5e-3, seed=1)  # the main student and its no-KD model again
    teacher_run(data, sasrec, "tiny-random", root / "t2-seed1", {**TEACHER_TINY, "layers": 2}, seed1)
    student_run(t4, root / "s2-seed1", 2, seed1, blocks=2)
    (root / "notes.txt").write_text("a plain file among the runs is skipped")
    return root


def seed_by_seed(study, split: str) -> list[str]:
    """What the claim 's2 beats t2 seed by seed' (seeds 1 and 42) must say, from the runs' eval files: its verdict and,
    per protocol, how many seeds s2 >= t2, the sign test's p for 2 seeds (2 wins: 1/4, 1: 3/4, 0: 1) and each seed's
    difference in points."""
    def mrr(run, protocol):
        f = study / run / "eval" / f"{split}-{protocol}.json"
        return json.loads(f.read_text())["metrics"]["MRR"] if f.exists() else None

    seeds = {1: ("s2-seed1", "t2-seed1"), 42: ("s2", "t2")}
    parts, won = [], set(seeds)
    for protocol in ("sampled", "full"):
        if any(mrr(run, protocol) is None for pair in seeds.values() for run in pair):
            continue
        diffs = {s: 100 * (mrr(a, protocol) - mrr(b, protocol)) for s, (a, b) in seeds.items()}
        ahead = {s for s, d in diffs.items() if d >= 0}
        won &= ahead
        p = {2: "0.25", 1: "0.75", 0: "1.00"}[len(ahead)]
        parts.append(f"{protocol}: ahead in {len(ahead)} of 2 (sign test p = {p}), mean difference ")
        parts.append(" points (" + ", ".join(f"seed {s} {d:+.2f}" for s, d in diffs.items()) + ")")
    assert parts, f"no protocol has both seeds' {split} MRR"
    verdict = {2: "holds in every seed", 1: "holds in 1 of 2 seeds", 0: "does not hold"}[len(won)]
    return [f", seed by seed: **{verdict}** — {split} MRR; ", *parts]


def test_report_has_every_section_and_plot(study, capsys):
    out = study / "docs" / "results.md"
    runs = [study / n for n in ("sasrec", "t4", "t2", "t1", "s2-kd", "s2", "s2-cos", "s2-b1", "s2-online", "s1",
                                "t2-seed1", "s2-seed1", "notes.txt")]
    code, _, err = run_cli(["report", *runs, "--out", out], capsys)
    assert code == 0, err
    text = out.read_text()
    for title in SECTIONS:
        body = text.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]
        assert "No runs for this" not in body and "Not enough runs" not in body, title
    for img in ("tiny-probe-t4.png", "tiny-depth-sweep.png", "tiny-blocks.png"):
        assert (study / "docs" / "img" / img).stat().st_size > 1000
        assert f"](img/{img})" in text
    # every quality row, and the popularity baseline scored from the dataset, under both protocols
    assert text.count("| most popular |") == 2 and text.count("`s2-online` |") >= 2
    assert "**sampled** protocol" in text and "**full** protocol" in text
    assert "| + d_cos `s2-cos` |" in text and "| CE only: E4SRec-2, no distillation `t2` |" in text
    assert "SLMRec 2←4 (B=1)" in text and "| online: SLMRec 2←4 (B=2; online) `s2-online` |" in text
    assert "is at least as good as its teacher E4SRec-4 (full depth)" in text
    claims = text.split("### The paper's claims, checked\n", 1)[1].split("\n### ", 1)[0]
    assert "Precondition: the teacher E4SRec-4 (full depth) is stronger than the student's depth" in claims
    # the second pair gets its own checks: against its teacher, the precondition, and the same depth without KD
    assert "`s1` vs `t2`" in claims and "`t2` vs `t1`" in claims and "`s1` vs `t1`" in claims
    # runs that differ only by seed are one row, and the student vs no-KD claim is also checked seed by seed
    assert "`t2-seed1`" not in text.split("### Seeds\n", 1)[0]
    assert "| E4SRec-2 | `t2`, `t2-seed1` | 42, 1 |" in text
    assert "| SLMRec 2←4 (B=2) | `s2`, `s2-seed1` | 42, 1 |" in text
    assert "(E4SRec-2), seed by seed: **" in claims and "seed 1 " in claims and "seed 42 " in claims
    assert claims.count("(E4SRec-2), seed by seed: **") == 2
    for split in ("test", "valid"):
        line = next(x for x in claims.splitlines() if "(E4SRec-2), seed by seed: **" in x and f"— {split} MRR;" in x)
        missing = [part for part in seed_by_seed(study, split) if part not in line]
        assert not missing, f"{split}: {line!r} lacks {missing}"
    # the student's seeds against its one teacher, on their means
    assert "its teacher E4SRec-4 (full depth), test MRR % (mean over seeds): **" in claims and "(1 seed)" in claims
    # the precondition on validation, over seeds, and each LLM model against SASRec
    assert "(E4SRec-2), valid MRR % (mean over seeds): **" in claims and "(2 seeds)" in claims
    assert "E4SRec-2 is at least as good as SASRec, test MRR % (mean over seeds): **" in claims
    # a student with L_kd (beyond the paper) is its own row and gets its own checks, never the paper's main student
    assert "| SLMRec 2←4 (B=2; + L_kd λ=1, τ=2) `s2-kd` |" in text
    assert "`s2-kd` vs `t4`" in claims and "`s2-kd` vs `t2`" in claims
    assert "| offline: SLMRec 2←4 (B=2) `s2` |" in text and "| + d_cos `s2-cos` |" in text


def test_report_refuses_a_dir_that_is_not_a_run(study, tmp_path, capsys):
    code, _, err = run_cli(["report", study / "sasrec", tmp_path, "--out", tmp_path / "r.md"], capsys)
    assert code == 2 and "is not a run directory" in err and "Traceback" not in err
    assert not (tmp_path / "r.md").exists()


def test_report_without_finished_runs(tmp_path, capsys):
    code, _, err = run_cli(["report", "--out", tmp_path / "r.md", tmp_path / "missing"], capsys)
    assert code == 2 and "does not exist" in err


def test_a_later_option_at_its_default_does_not_split_a_setting(tmp_path):
    """Runs made before --max-steps existed have no such key; at its default (0) they are the same setting."""
    from slmrec_cli.report.collect import setting_key
    from tests.helpers import fake_result

    old = {"train": {"seed": 42, "lr": 1e-3}}
    new = {"train": {"seed": 1, "lr": 1e-3, "max_steps": 0}}
    capped = {"train": {"seed": 1, "lr": 1e-3, "max_steps": 90}}
    key = [setting_key(fake_result(tmp_path / n, "teacher", **c)) for n, c in (("a", old), ("b", new), ("c", capped))]
    assert key[0] == key[1] != key[2]
    # precision (recorded since bf16 on CPU) and --align (since causal targets) at their defaults, too
    s_old = {"train": {"seed": 42}, "distill": {"blocks": 4}}
    s_new = {"train": {"seed": 1}, "precision": "fp32", "distill": {"blocks": 4, "align": "last"}}
    s_bf16 = {**s_new, "precision": "bf16"}
    s_all = {**s_new, "distill": {"blocks": 4, "align": "all"}}
    keys = [setting_key(fake_result(tmp_path / n, "student", **c))
            for n, c in (("d", s_old), ("e", s_new), ("f", s_bf16), ("g", s_all))]
    assert keys[0] == keys[1] and len(set(keys[1:])) == 3


def test_students_with_l_kd_are_labelled_apart_from_the_papers_loss():
    from slmrec_cli.config.distill import DistillOptions
    from slmrec_cli.report.collect import kd_label

    paper = {"lambda_cos": 1.0, "lambda_norm": 0.1, "lambda_ms": 0.1}
    assert kd_label(DistillOptions(**paper)) == ""
    assert kd_label(DistillOptions(**paper, lambda_kd=1.0, kd_temperature=2.0)) == "+ L_kd λ=1, τ=2"
    alone = {"lambda_cos": 0.0, "lambda_norm": 0.0, "lambda_ms": 0.0, "lambda_kd": 0.5, "kd_temperature": 1.0}
    assert kd_label(DistillOptions(**alone)) == "L_kd only, λ=0.5, τ=1"


def test_student_labels_name_what_differs_from_the_papers_setup(tmp_path):
    """The study's variants each get their own row name: a λ_ms sweep is never read as the paper's loss."""
    from slmrec_cli.report.collect import label
    from tests.helpers import fake_result

    paper = {"student_layers": 2, "teacher_layers": 4, "blocks": 2, "lambda_cos": 1.0, "lambda_norm": 0.1,
             "lambda_ms": 0.1}

    def named(**d):
        return label(fake_result(tmp_path, "student", distill={**paper, **d}))

    assert named() == "SLMRec 2←4 (B=2)"
    assert named(lambda_ms=1.0) == "SLMRec 2←4 (all three, λ_ms=1; B=2)"
    assert named(align="all") == "SLMRec 2←4 (B=2; aligned at every position)"
    assert named(lambda_cos=0.0, lambda_norm=0.0, lambda_ms=0.0, lambda_kd=1.0, kd_temperature=2.0) == \
        "SLMRec 2←4 (B=2; L_kd only, λ=1, τ=2)"


def test_learning_curves_read_every_validation(tmp_path):
    from slmrec_cli.report.curves import learning_curves, valid_points
    from tests.helpers import fake_result

    run = fake_result(tmp_path / "t8", "teacher", model={"layers": 8}, base_model={"layers_total": 30})
    run.path.mkdir()
    lines = [{"event": "train", "step": 10, "loss": 5.0},
             {"event": "valid", "step": 30, "epoch": 1, "epochs": 0.5, "valid_MRR": 0.05},
             {"event": "valid", "step": 60, "epoch": 1, "epochs": 1.0, "valid_MRR": 0.07}]
    (run.path / "train_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"cut')
    assert valid_points(run) == [(0.5, 30, 0.05), (1.0, 60, 0.07)]
    text = learning_curves([run], lambda slug: (tmp_path / f"{slug}.png", f"{slug}.png"))
    assert "| E4SRec-8 `t8` | 0.5: 5.00, 1.0: 7.00 | 7.00 |" in text
    assert (tmp_path / "learning-curves.png").stat().st_size > 1000


def test_sign_test_is_the_binomial_tail():
    from slmrec_cli.report.claims import sign_test

    assert sign_test(5, 5) == pytest.approx(1 / 32)
    assert sign_test(4, 5) == pytest.approx(6 / 32)
    assert sign_test(3, 3) == pytest.approx(1 / 8)
    assert sign_test(0, 4) == pytest.approx(1.0)


def test_kept_records_regenerate_the_same_report(study, tmp_path, capsys):
    """benchmarks/keep_records.py keeps only JSON (no weights), and the report from those records equals the one
    from the run directories, line for line but the header that names them."""
    dest = tmp_path / "records"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "keep_records.py"), str(study), str(dest)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    names = ("sasrec", "t4", "t2", "s2", "s2-cos", "t2-seed1", "s2-seed1")
    assert all((dest / n / "config.json").exists() for n in names)
    kept = {p.suffix for p in dest.rglob("*") if p.is_file()}
    assert kept <= {".json", ".jsonl"}, kept  # no weights, checkpoints or caches
    reports = []
    for where in (study, dest):
        out = tmp_path / where.name / "results.md"
        code, _, err = run_cli(["report", *(where / n for n in names), "--out", out], capsys)
        assert code == 0, err
        reports.append(out.read_text().split("\n", 3)[3])
    assert reports[0] == reports[1]


def test_inference_cost_is_not_compared_across_thread_counts(study, tmp_path, capsys):
    """A student and teacher timed under different settings (their training processes' threads) get no ratio."""
    for name in ("sasrec", "t4", "s2"):
        shutil.copytree(study / name, tmp_path / name)
    eff = tmp_path / "s2" / "efficiency.json"
    eff.write_text(json.dumps({**json.loads(eff.read_text()), "device": "cpu (7 threads)"}))
    out = tmp_path / "results.md"
    code, _, err = run_cli(["report", *(tmp_path / n for n in ("sasrec", "t4", "s2")), "--out", out], capsys)
    assert code == 0, err
    line = next(x for x in out.read_text().splitlines() if "costs about half its teacher" in x)
    assert "**not compared**" in line and "cpu (7 threads)" in line and "×" not in line


def test_dataset_row_says_when_the_log_had_no_ratings():
    from slmrec_cli.report.sections import datasets

    stats = {"users": 3, "items": 4, "interactions": 12, "density": 1.0, "mean_length": 4.0}
    options = {"min_rating": 3.0, "k_core": 5, "num_negatives": 99, "seed": 1}
    meta = {"name": "d", "content_hash": "h", "options": options}
    assert "no ratings (every row kept)" in datasets({**meta, "stats": {**stats, "implicit": True}})
    assert "rating > 3" in datasets({**meta, "stats": {**stats, "implicit": False}})


def test_sasrec_seeds_fold_into_one_row(tmp_path):
    """A SASRec run's checksums name its own trained table (other for every seed): it must not split its seeds."""
    import json

    from slmrec_cli.report.collect import fold_replicates
    from tests.helpers import fake_result

    runs = []
    for name, seed in (("sasrec", 42), ("sasrec-seed1", 1)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "checksums.json").write_text(json.dumps(
            {"sha256": {"item_embeddings.safetensors": f"table-of-seed-{seed}"}}))
        runs.append(fake_result(tmp_path / name, "sasrec", seed))
    rows = fold_replicates(runs)
    assert [r.name for r in rows] == ["sasrec"] and [r.name for r in rows[0].replicates] == ["sasrec-seed1"]
