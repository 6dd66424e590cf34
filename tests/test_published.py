"""Published numbers beside ours in `slmrec report`: printed with the ratio only where the protocol matches (same
dataset, same number of uniform negatives, same history masking), listed as not comparable with why otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmrec_cli.errors import SlmrecError
from slmrec_cli.evaluation.ranking import METRIC_NAMES
from slmrec_cli.report.collect import Result, fold_replicates
from slmrec_cli.report.published import HOME, load_published, published_files, published_section
from tests.helpers import fake_result, fake_run_config, run_cli

STATS = {"users": 50, "items": 40, "interactions": 600}
META = {"stats": STATS}


def record(protocol: str, value: float, candidates: int = 100, mask: bool = True) -> dict:
    """A test metrics record with every metric at `value`."""
    return {"dataset": "tiny", "data_hash": "h", "split": "test", "protocol": protocol, "users": STATS["users"],
            "candidates": candidates if protocol == "sampled" else STATS["items"],
            "mask_history": mask if protocol == "full" else False, "metrics": dict.fromkeys(METRIC_NAMES, value)}


def fake_run(root: Path, name: str, kind: str, value: float, seed: int = 42, n_items: int = STATS["items"],
             **rec) -> Result:
    run = fake_result(root / name, kind, seed, model={"n_items": n_items})
    run.evals = {("test", p): record(p, value, **rec) for p in ("sampled", "full")}
    return run


def published(root: Path, *entries: dict, stats: dict = STATS) -> Path:
    path = root / "pub.json"
    path.write_text(json.dumps({"format": "slmrec-published", "format_version": 1,
                                "dataset": {"name": "Tiny bench", "stats": stats}, "entries": list(entries)}))
    return path


def sampled(model: str = "SASRec", negatives: int = 99, **metrics: float) -> dict:
    return {"model": model, "source": "a paper, Table 2", "split": "test", "protocol": "sampled",
            "negatives": negatives, "sampling": "uniform-unseen", "ties": "sort order",
            "metrics": metrics or {"MRR": 0.25, "HR@10": 0.5}}


def full(model: str, mask) -> dict:
    return {"model": model, "source": "a repo's README", "split": "test", "protocol": "full", "mask_history": mask,
            "metrics": {"HR@10": 0.2, "NDCG@10": 0.1}}


def section(tmp_path: Path, runs: list[Result], *entries: dict, meta: dict | None = META, **kw) -> str:
    return published_section(fold_replicates(runs), meta, [load_published(published(tmp_path, *entries, **kw))])


def test_matching_protocol_shows_the_ratio_on_the_seed_mean(tmp_path):
    runs = [fake_run(tmp_path, "sasrec", "sasrec", 0.30), fake_run(tmp_path, "sasrec-seed1", "sasrec", 0.20, seed=1)]
    text = section(tmp_path, runs, sampled())
    # seeds 0.30 and 0.20: the mean 0.25 against the published 0.25 (the first seed alone would read 1.20)
    assert "| SASRec `sasrec` | 2 | SASRec | 25.00 / 25.00 | 1.00 | 25.00 / 50.00 | 0.50 | 25.00 / — | — |" in text
    assert "ties by sort order" in text and "can only favour them" in text
    assert "not comparable" not in text and "a paper, Table 2" in text


def test_records_with_999_negatives_are_not_comparable_with_99(tmp_path):
    runs = [fake_run(tmp_path, "sasrec", "sasrec", 0.30, candidates=1000)]
    text = section(tmp_path, runs, sampled())
    line = next(x for x in text.splitlines() if x.startswith("- SASRec (sampled, 99 negatives): **not comparable**"))
    assert "99 negatives per user, ours 999" in line and "--num-negatives 99" in line
    assert "| SASRec `sasrec` |" not in text


def test_full_ranking_needs_the_same_history_masking(tmp_path):
    runs = [fake_run(tmp_path, "sasrec", "sasrec", 0.10), fake_run(tmp_path, "t2", "teacher", 0.20)]
    text = section(tmp_path, runs, full("Masked", True), full("Unmasked", False), full("Unknown", "unknown"))
    assert "| SASRec `sasrec` | 1 | Masked | 10.00 / — | — | 10.00 / 20.00 | 0.50 | 10.00 / 10.00 | 1.00 |" in text
    assert "| E4SRec-2 `t2` | 1 | Masked |" in text  # the best LLM model beside SASRec
    assert "- Unmasked (full): **not comparable** — mask_history false, ours true" in text
    assert "- Unknown (full): **not comparable** — its history masking is unknown." in text
    assert "| Unmasked |" not in text and "| Unknown |" not in text


def test_each_row_is_compared_on_its_own_record(tmp_path):
    """A run evaluated again without the history mask sits beside the unmasked entry only."""
    runs = [fake_run(tmp_path, "sasrec", "sasrec", 0.10), fake_run(tmp_path, "t2", "teacher", 0.20, mask=False)]
    text = section(tmp_path, runs, full("Masked", True), full("Unmasked", False))
    assert "| SASRec `sasrec` | 1 | Masked |" in text and "| E4SRec-2 `t2` | 1 | Unmasked |" in text
    assert "| E4SRec-2 `t2` | 1 | Masked |" not in text and "| SASRec `sasrec` | 1 | Unmasked |" not in text
    assert "not comparable" not in text


def test_another_dataset_is_one_line(tmp_path):
    runs = [fake_run(tmp_path, "sasrec", "sasrec", 0.30)]
    text = section(tmp_path, runs, sampled(), stats={**STATS, "interactions": 601})
    assert text.startswith("_No published numbers for this dataset._")
    assert "Tiny bench (`" in text and "another dataset (50 users · 40 items · 601 interactions; this one" in text
    # without meta.json the runs' records give users and items; the interactions go unchecked, and the report says so
    text = section(tmp_path, runs, sampled(), stats={**STATS, "interactions": 601}, meta=None)
    assert "| SASRec `sasrec` | 1 | SASRec |" in text and "interactions not checked: pass --data" in text
    text = section(tmp_path, runs, sampled(), stats={**STATS, "items": 41}, meta=None)
    assert "another dataset (50 users · 41 items · 600 interactions; this one 50 users · 40 items)" in text


@pytest.mark.parametrize("change, message", [
    ({"metrics": {"MRR": 28.52}}, "MRR = 28.52 is not a fraction in [0, 1]"),
    ({"metrics": {"Recall@10": 0.2}}, "unknown metric 'Recall@10'"),
    ({"negatives": None}, "sampled needs 'negatives'"),
    ({"protocol": "popular"}, "protocol is 'popular', not sampled or full"),
    ({"tie": "sort order"}, "unknown key(s) tie"),
])
def test_a_malformed_published_file_is_one_line(tmp_path, change, message):
    path = published(tmp_path, {**sampled(), **change})
    with pytest.raises(SlmrecError) as e:
        load_published(path)
    assert message in str(e.value) and "entry 1" in str(e.value) and "\n" not in str(e.value)


def test_published_file_that_is_not_json_or_not_ours(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(SlmrecError, match="is not valid JSON"):
        load_published(bad)
    bad.write_text(json.dumps({"entries": []}))
    with pytest.raises(SlmrecError, match='needs "format": "slmrec-published"'):
        load_published(bad)


def test_the_packaged_beauty_numbers(tmp_path):
    """S3-Rec's Beauty (22,363 users, 12,101 items, 198,502 interactions): the sampled tables need 99 negatives, the
    benchmark's full ranking masks the history as ours does."""
    (beauty,) = published_files()
    assert beauty.shown == "slmrec_cli/report/published/beauty.json" and (HOME / "beauty.json").is_file()
    assert beauty.stats == {"users": 22363, "items": 12101, "interactions": 198502}
    by_model = {e.model: e for e in beauty.entries}
    assert by_model["SASRec"].metrics == {"HR@1": 0.1870, "HR@5": 0.3741, "NDCG@5": 0.2848, "HR@10": 0.4696,
                                          "NDCG@10": 0.3156, "MRR": 0.2852}
    assert by_model["S3-Rec"].metrics["MRR"] == 0.3340 and by_model["S3-Rec"].negatives == 99
    assert by_model["SASRec + sampled softmax"].metrics == {"HR@10": 0.0921, "NDCG@10": 0.0531}
    assert by_model["eSASRec"].metrics == {"HR@10": 0.0928, "NDCG@10": 0.0523}
    assert all(e.mask_history is True for e in beauty.entries if e.protocol == "full")
    run = fake_run(tmp_path, "sasrec", "sasrec", 0.3340, n_items=12101)
    for rec in run.evals.values():
        rec["users"] = 22363
    text = published_section([run], {"stats": beauty.stats}, [beauty])
    assert "| SASRec `sasrec` | 1 | S3-Rec | 33.40 / 33.40 | 1.00 |" in text
    assert "| SASRec `sasrec` | 1 | eSASRec |" in text and "Mean over 22,311 users, ours over 22,363." in text


def test_report_option_adds_a_users_file(tmp_path, capsys):
    """`slmrec report --published FILE`: the user's file beside the package's, in the report's own section; a bad
    file stops the report with one line."""
    for name, seed, value in (("sasrec", 42, 0.30), ("sasrec-seed1", 1, 0.20)):
        run = tmp_path / name
        (run / "eval").mkdir(parents=True)
        (run / "config.json").write_text(json.dumps(fake_run_config("sasrec", seed, model={"n_items": STATS["items"]})))
        (run / "eval" / "test-sampled.json").write_text(json.dumps(record("sampled", value)))
    out = tmp_path / "results.md"
    code, _, err = run_cli(["report", tmp_path / "sasrec", tmp_path / "sasrec-seed1", "--out", out,
                            "--published", published(tmp_path, sampled())], capsys)
    assert code == 0, err
    body = out.read_text().split("### Published numbers beside ours\n", 1)[1].split("\n### ", 1)[0]
    assert "| SASRec `sasrec` | 2 | SASRec | 25.00 / 25.00 | 1.00 |" in body
    assert "Amazon Beauty (S3-Rec's data/Beauty.txt)" in body and "another dataset" in body
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "slmrec-published", "format_version": 1}))
    code, _, err = run_cli(["report", tmp_path / "sasrec", "--out", tmp_path / "r.md", "--published", bad], capsys)
    assert code == 2 and "published file" in err and "needs 'dataset'" in err and "Traceback" not in err
    assert not (tmp_path / "r.md").exists()
