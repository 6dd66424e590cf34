"""Training precision: on CPU, auto is fp32 except for the LLM stages on a CPU that computes bf16 natively; bf16 only
where the CPU has it; config.json says which."""

import json

import pytest

from slmrec_cli.config.train import TrainArgs
from slmrec_cli.train import accelerator
from tests.helpers import SASREC_TINY, TEACHER_TINY, make_dataset, run_cli, sasrec_run, teacher_run


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one precision per process (the CLI runs one stage per process); tests change it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def train(tmp_path, name, precision):
    out = tmp_path / name / "run"
    args = TrainArgs(epochs=1, batch_size=64, mixed_precision=precision)
    sasrec_run(make_dataset(tmp_path / name), out, SASREC_TINY, args)
    return json.loads((out / "config.json").read_text())["precision"]


def test_sasrec_at_auto_trains_in_fp32_even_on_a_bf16_cpu_and_records_it(tmp_path, monkeypatch):
    """SASRec, the fixed baseline, never asks auto for bf16: on a CPU that has it, with auto bf16 allowed (the conftest
    turns it off, which would keep any stage at fp32), it still trains in fp32."""
    monkeypatch.setattr(accelerator, "cpu_bf16_supported", lambda: True)
    monkeypatch.setenv("SLMREC_CPU_AUTO_BF16", "1")
    assert train(tmp_path, "auto", "auto") == "fp32"
    assert train(tmp_path, "no", "no") == "fp32"


@pytest.mark.parametrize("native, allowed, llm, expected", [
    (True, "1", True, "bf16"), (True, "1", False, "no"), (True, "0", True, "no"), (False, "1", True, "no")])
def test_auto_on_cpu_is_bf16_only_for_llm_stages_where_native(monkeypatch, native, allowed, llm, expected):
    monkeypatch.setattr(accelerator, "cpu_bf16_supported", lambda: native)
    monkeypatch.setenv("SLMREC_CPU_AUTO_BF16", allowed)
    assert accelerator.resolve_precision("auto", auto_bf16=llm) == expected


@pytest.mark.parametrize("llm, expected", [(True, "bf16"), (False, "no")])
def test_auto_on_cuda_is_bf16_for_llm_stages_and_fp32_for_sasrec(monkeypatch, llm, expected):
    """Defect 9 of issue 29: SASRec, the fixed baseline, trained in bf16 on CUDA at auto while the study's was fp32."""
    monkeypatch.setattr(accelerator.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(accelerator.torch.cuda, "is_bf16_supported", lambda: True)
    assert accelerator.resolve_precision("auto", auto_bf16=llm) == expected


def test_a_teacher_at_auto_on_a_bf16_cpu_trains_in_bf16_and_records_it(tiny_runs, tmp_path, monkeypatch):
    monkeypatch.setattr(accelerator, "cpu_bf16_supported", lambda: True)
    monkeypatch.setenv("SLMREC_CPU_AUTO_BF16", "1")
    data, sasrec, _ = tiny_runs
    out = tmp_path / "t"
    teacher_run(data, sasrec, "tiny-random", out, {**TEACHER_TINY, "layers": 1},
                TrainArgs(epochs=1, max_steps=1, batch_size=16))
    assert json.loads((out / "config.json").read_text())["precision"] == "bf16"


def test_bf16_on_a_cpu_that_has_it_is_used_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(accelerator, "cpu_bf16_supported", lambda: True)
    assert train(tmp_path, "bf16", "bf16") == "bf16"


def test_bf16_on_a_cpu_without_it_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(accelerator, "cpu_bf16_supported", lambda: False)
    data = make_dataset(tmp_path)
    for mp, word in (("bf16", "no native bf16"), ("fp16", "needs a CUDA GPU")):
        code, _, err = run_cli(["pretrain-ids", "--data", data, "--out", tmp_path / "s", "--epochs", "1",
                                "--mixed-precision", mp], capsys)
        assert code == 2 and word in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("flags, expected", [((False, False), False), ((True, False), True), ((False, True), True)])
def test_cpu_bf16_detection_reads_torchs_probes(monkeypatch, flags, expected):
    monkeypatch.setattr(accelerator.torch.cpu, "_is_avx512_bf16_supported", lambda: flags[0], raising=False)
    monkeypatch.setattr(accelerator.torch.cpu, "_is_amx_tile_supported", lambda: flags[1], raising=False)
    assert accelerator.cpu_bf16_supported() is expected
