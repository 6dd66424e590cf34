"""One option vocabulary and --json on every command: stdout holds exactly one JSON document (tables and progress go
to stderr), old spellings still work for one release with a deprecation line, choices and flags read well in the
help, and tables written to a log keep their width. The training stages' --json is checked where they already run,
in test_cli_snapshot.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import copy_runs, run_cli

TRAINING = {"pretrain-ids", "train-teacher", "distill"}  # their --json: test_cli_snapshot.py
COVERED = {"prepare", "evaluate", "prune-probe", "export", "recommend", "report", "doctor"}


def one_document(stdout: str):
    """The one JSON document stdout holds, on one line, with nothing else."""
    assert stdout.endswith("\n") and stdout.count("\n") == 1, stdout[-2000:]
    return json.loads(stdout)


@pytest.fixture(scope="module")
def runs(tiny_runs, tmp_path_factory):
    return copy_runs(tiny_runs, tmp_path_factory.mktemp("json"))


def test_every_command_is_covered():
    import typer

    from slmrec_cli.cli import app

    assert set(typer.main.get_command(app).commands) == TRAINING | COVERED


def test_doctor_json(capsys):
    code, out, err = run_cli(["doctor", "--device", "cpu", "--json"], capsys)
    assert code == 0 and one_document(out)["devices"] == ["cpu"] and "slmrec doctor" in err  # its table on stderr


def test_prepare_json(tmp_path, capsys):
    log = tmp_path / "u.data"
    log.write_text("".join(f"{u}\t{(u + t) % 25}\t5\t{1000 * u + t}\n" for u in range(30) for t in range(8)))
    code, out, err = run_cli(["prepare", "--input", log, "--format", "movielens", "--out", tmp_path / "ds",
                              "--num-negatives", "10", "--json"], capsys)
    assert code == 0, err
    doc = one_document(out)
    assert doc["path"] == str(tmp_path / "ds") and doc["stats"]["users"] == 30 and doc["options"]["num_negatives"] == 10
    assert "users" in err  # the summary table went to stderr


def test_scoring_and_serving_commands_json(runs, tmp_path, capsys):
    data, sasrec, teacher = runs
    code, out, err = run_cli(["evaluate", sasrec, teacher, "--split", "valid", "--protocol", "sampled", "--json"],
                             capsys)
    assert code == 0, err
    records = one_document(out)  # several results: one list
    assert [r["run"] for r in records] == [str(sasrec), str(teacher)] and "valid split" in err
    assert {r["eval_precision"] for r in records} == {"fp32"}
    for run in (sasrec, teacher):  # what the training stages wrote says so too
        assert {json.loads(f.read_text())["eval_precision"] for f in (run / "eval").glob("*.json")} == {"fp32"}

    code, out, err = run_cli(["prune-probe", teacher, "--split", "valid", "--layers", "1,2", "--json"], capsys)
    assert code == 0, err
    probe = one_document(out)
    assert [x["layer"] for x in probe["layers"]] == [1, 2] and all(Path(f).exists() for f in probe["files"])
    assert probe["eval_precision"] == "fp32"

    export = tmp_path / "exp"
    code, out, err = run_cli(["export", "--run", teacher, "--out", export, "--format", "safetensors", "--json"],
                             capsys)
    assert code == 0, err
    result = one_document(out)
    assert result["export"] == str(export) and result["bench"] is None
    assert [v["name"] for v in result["quality"]["variants"]] == ["torch-fp32"] and "rel. MRR" in err

    raw = [line.split("\t")[1] for line in (export / "item_map.tsv").read_text().splitlines()[1:]]
    code, out, err = run_cli(["recommend", "--export", export, "--history", ",".join(raw[:3]), "--k", "4", "--json"],
                             capsys)
    assert code == 0, err
    rec = one_document(out)
    assert rec["history"] == raw[:3] and len(rec["items"]) == 4
    histories = tmp_path / "h.txt"
    histories.write_text(f"{raw[0]}\n{raw[1]},{raw[2]}\n")
    code, out, err = run_cli(["recommend", "--export", export, "--input", histories, "--k", "2", "--json"], capsys)
    assert code == 0 and [r["history"] for r in one_document(out)] == [raw[:1], raw[1:3]], err
    code, out, err = run_cli(["recommend", "--export", export, "--input", histories, "--jsonl"], capsys)
    assert code == 0 and [json.loads(line)["history"] for line in out.splitlines()] == [raw[:1], raw[1:3]], err
    code, _, err = run_cli(["recommend", "--export", export, "--input", histories, "--jsonl", "--json"], capsys)
    assert code == 2 and "not both" in err

    code, out, err = run_cli(["report", sasrec, teacher, "--out", tmp_path / "r.md", "--json"], capsys)
    assert code == 0, err
    report = one_document(out)
    assert report["out"] == str(tmp_path / "r.md") and (tmp_path / "r.md").exists()
    assert report["plots"] and all(Path(f).exists() for f in report["plots"])


def test_old_spellings_still_work_once_with_a_warning(runs, tmp_path, capsys):
    _, sasrec, _ = runs
    argv = ["evaluate", sasrec, "--split", "valid", "--protocol", "sampled", "--json"]
    code, out, err = run_cli([*argv, "--batch-size", "16"], capsys)
    assert code == 0 and "--batch-size is deprecated" in err and "--eval-batch" in err, err
    assert one_document(out)[0]["run"] == str(sasrec)
    code, _, err = run_cli([*argv, "--batch-size", "16", "--eval-batch", "8"], capsys)
    assert code == 2 and "old spelling of --eval-batch" in err
    code, _, err = run_cli(["recommend", "--model", tmp_path, "--history", "1"], capsys)  # the alias of a required
    assert code == 2 and "--model is deprecated" in err and "not an slmrec export" in err  # option reaches the stage
    code, _, err = run_cli(["recommend", "--history", "1"], capsys)
    assert code == 2 and "missing option --export" in err


def test_help_lists_choices_hides_old_spellings_and_flags_take_no_placeholder(monkeypatch, capsys):
    import typer

    from slmrec_cli.cli import app

    monkeypatch.setenv("COLUMNS", "200")  # no choice list wrapped

    for name in ["", *typer.main.get_command(app).commands]:
        code, out, _ = run_cli([name, "--help"] if name else ["--help"], capsys)
        assert code == 0 and "<bool>" not in out, name
    code, out, _ = run_cli(["evaluate", "--help"], capsys)
    assert "valid|test" in out and "sampled|full|both" in out and "--eval-batch" in out and "--batch-size" not in out
    code, out, _ = run_cli(["export", "--help"], capsys)
    assert "--run" in out and "--model" not in out and "smooth|block|dynamic" in out


def test_tables_in_a_log_are_not_cut(monkeypatch, capsys):
    """stdout is not a terminal (a log, CI, a pipe): the tables keep their natural width, no cell cut to 80 columns."""
    from slmrec_cli import ui
    from slmrec_cli.evaluation.tables import print_export, print_records

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(ui, "out", ui._Console())  # as the CLI makes it, here on pytest's captured stdout
    variant = {"bytes": 2**20, "metrics": {"sampled": {"MRR": 0.1234}}, "relative_mrr": 0.9876,
               "relative_mrr_ci95": [0.9712, 1.0034]}
    bench = {"device": "cpu (1 threads)", "history_length": 8, "results": [
        {"variant": name, "runtime": "torch", "provider": "cpu", "batch": 512, "p50_ms": 12.3, "users_per_s": 41000}
        for name in ("torch-fp32", "onnx-int8")]}
    print_export({"variants": [{"name": "torch-fp32", **variant}, {"name": "onnx-int8", **variant}]}, bench)
    name = "a-run-directory-with-a-long-name-" * 3
    metrics = dict.fromkeys(("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR"), 0.5)
    print_records([{"run": name, "split": "test", "protocol": "sampled", "candidates": 1000, "metrics": metrics,
                    "dataset": "ml-100k", "data_hash": "f180bf85bcca826b", "users": 938, "mask_history": False}])
    out = capsys.readouterr().out
    for text in ("torch-fp32", "onnx-int8", "rel. MRR", "users/s", "0.971–1.003", "41000", name, "NDCG@10"):
        assert text in out, text
    assert "…" not in out and max(map(len, out.splitlines())) > 80
