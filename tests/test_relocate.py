"""Run directories travel: made with relative paths, moved whole, then used from another working directory."""

import json
import shutil
from pathlib import Path

from tests.helpers import make_dataset, run_cli

ONE_STEP = ["--epochs", "1", "--max-steps", "1", "--eval-batch", "64"]


def _study(root: Path, capsys, monkeypatch) -> None:
    """data/tiny and runs/{sasrec,t2,s1} under root, every path given relative to root (the working directory)."""
    root.mkdir()
    monkeypatch.chdir(root)
    make_dataset(Path("data"))
    stages = [["pretrain-ids", "--data", "data/tiny", "--out", "runs/sasrec", "--epochs", "1", "--max-steps", "1"],
              ["train-teacher", "--data", "data/tiny", "--ids", "runs/sasrec", "--base-model", "tiny-random",
               "--layers", "2", "--max-len", "8", "--out", "runs/t2", *ONE_STEP],
              ["distill", "--teacher", "runs/t2", "--student-layers", "1", "--blocks", "1", "--out", "runs/s1",
               *ONE_STEP]]
    for args in stages:
        code, _, err = run_cli(args, capsys)
        assert code == 0, err


def test_a_study_moved_whole_works_from_another_directory(tmp_path, capsys, monkeypatch):
    _study(tmp_path / "a", capsys, monkeypatch)
    cfg = json.loads((tmp_path / "a/runs/s1/config.json").read_text())
    assert cfg["paths_from_run"] == {"data.path": "../../data/tiny", "ids.run": "../sasrec",
                                     "distill.teacher": "../t2"}
    # a run copied alone keeps finding its data where it was recorded (the absolute path)
    shutil.copytree(tmp_path / "a/runs/t2", tmp_path / "t2-copy")
    code, _, err = run_cli(["evaluate", tmp_path / "t2-copy", "--protocol", "sampled", "--split", "valid"], capsys)
    assert code == 0, err
    shutil.move(tmp_path / "a", tmp_path / "b")
    (tmp_path / "c").mkdir()
    monkeypatch.chdir(tmp_path / "c")
    runs = tmp_path / "b" / "runs"
    code, _, err = run_cli(["evaluate", runs / "sasrec", runs / "t2", runs / "s1", "--protocol", "sampled"], capsys)
    assert code == 0, err
    assert (runs / "s1/eval/test-sampled.json").exists()
    code, _, err = run_cli(["export", "--run", runs / "s1", "--out", "exports/s1", "--format", "safetensors"],
                           capsys)
    assert code == 0, err
    assert json.loads((Path("exports/s1/quality.json")).read_text())["dataset"] == "tiny"
    code, _, err = run_cli(["report", runs / "sasrec", runs / "t2", runs / "s1", "--out", "report.md"], capsys)
    assert code == 0, err
    assert "| tiny |" in Path("report.md").read_text()  # the dataset table found the moved data by itself

    # with the data gone, export checks its inputs before it writes anything
    shutil.rmtree(tmp_path / "b" / "data")
    code, _, err = run_cli(["export", "--run", runs / "s1", "--out", "exports/gone", "--format", "safetensors"],
                           capsys)
    assert code != 0 and "data" in err and "Traceback" not in err
    assert not Path("exports/gone").exists() and not list(Path("exports").glob(".gone*"))
