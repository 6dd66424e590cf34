"""8-bit and 4-bit runs (bitsandbytes, here on the CPU and tiny-random): every later stage loads the base as the run
trained, unless told otherwise, and says so."""

from __future__ import annotations

import json

import pytest

from slmrec_cli.config.train import TrainArgs
from slmrec_cli.distill.cache import META
from slmrec_cli.io import read_json
from tests.helpers import TEACHER_TINY, run_cli, student_run, teacher_run

pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def quantized_teacher(tiny_runs, tmp_path_factory):
    data, ids, _ = tiny_runs
    out = tmp_path_factory.mktemp("q") / "t4bit"
    teacher_run(data, ids, "tiny-random", out, TEACHER_TINY, TrainArgs(epochs=2, batch_size=16, lr=5e-3),
                load_in_4bit=True)
    return out


def test_a_4bit_run_is_scored_in_4bit_by_every_later_stage(quantized_teacher, capsys, tmp_path):
    run = quantized_teacher
    cfg = read_json(run / "config.json")
    assert cfg["quantized"] == {"load_in_8bit": False, "load_in_4bit": True}
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    best = [r for r in log if r["event"] == "valid" and r["best"]][-1]["valid_MRR"]
    final = read_json(run / "eval" / "valid-sampled.json")["metrics"]["MRR"]
    code, out, err = run_cli(["evaluate", run, "--split", "valid", "--protocol", "sampled", "--json"], capsys)
    assert code == 0, err
    later = json.loads(out)[0]
    assert best == final == later["metrics"]["MRR"]  # exactly: selected, recorded and rescored in 4-bit
    assert later["quantization"] == "4bit"
    # an explicit override is recorded in the output and leaves the run's own files alone
    before = (run / "eval" / "valid-sampled.json").read_text()
    code, out, err = run_cli(["evaluate", run, "--split", "valid", "--protocol", "sampled", "--json",
                              "--quantization", "none"], capsys)
    assert code == 0, err
    assert json.loads(out)[0]["quantization"] == "none"
    assert (run / "eval" / "valid-sampled.json").read_text() == before
    code, _, err = run_cli(["prune-probe", run, "--split", "valid", "--layers", "4"], capsys)
    assert code == 0, err
    probe = read_json(run / "probe" / "valid.json")
    assert probe["layers"][0]["metrics"]["MRR"] == pytest.approx(final, abs=1e-12)  # the last layer is the model


def test_distill_loads_the_teacher_as_it_trained_or_as_told(quantized_teacher, tmp_path):
    student_run(quantized_teacher, tmp_path / "s", 2, TrainArgs(epochs=1, batch_size=16, lr=5e-3), blocks=2,
                teacher_cache=tmp_path / "cache")
    section = read_json(tmp_path / "s" / "config.json")["distill"]
    assert section["teacher_quantization"] == "4bit"
    assert read_json(tmp_path / "cache" / META)["teacher_quantization"] == "4bit"


def test_a_4bit_run_exports_from_the_full_precision_base_and_is_compared_with_its_4bit_self(quantized_teacher,
                                                                                             tmp_path, capsys):
    out = tmp_path / "export"
    code, _, err = run_cli(["export", "--run", quantized_teacher, "--out", out, "--format", "onnx", "--eval-batch",
                            "64"], capsys)
    assert code == 0, err  # not refused: the QLoRA convention
    quality = read_json(out / "quality.json")
    assert quality["merge"]["run_quantization"] == "4bit"
    trained = quality["as_trained"]
    assert trained["name"] == "torch-4bit"
    final = read_json(quantized_teacher / "eval" / "test-sampled.json")["metrics"]["MRR"]
    assert trained["metrics"]["sampled"]["MRR"] == pytest.approx(final, abs=1e-12)  # the run as it trained
    for v in quality["variants"]:
        assert v["relative_mrr_to_as_trained"] == pytest.approx(v["metrics"]["sampled"]["MRR"] / final)
