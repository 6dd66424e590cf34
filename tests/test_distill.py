import json
import shutil

import numpy as np
import pytest
import torch

from slmrec_cli.config.distill import DistillOptions
from slmrec_cli.config.models import LLMRecConfig
from slmrec_cli.data import load_dataset
from slmrec_cli.distill.blocks import block_layers
from slmrec_cli.distill.cache import cache_key, load_or_build, teacher_fingerprint
from slmrec_cli.distill.model import Distiller
from slmrec_cli.models.build import build_model
from slmrec_cli.runs import Run, RunKind
from slmrec_cli.stages.distill import DistillTask
from tests.helpers import (
    distill_args,
    distiller,
    eval_records,
    features_of,
    make_dataset,
    run_cli,
    student_run,
)


@pytest.fixture(scope="module")
def teacher(tiny_runs):
    return tiny_runs


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_distillation_runs_end_to_end(teacher, tmp_path, mode):
    _, _, t4 = teacher
    out = tmp_path / f"s2-{mode}"
    summary = student_run(t4, out, 2, distill_args(), blocks=2, mode=mode)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "student" and cfg["model"]["layers"] == 2
    assert cfg["distill"]["teacher"] == str(t4) and len(cfg["distill"]["teacher_hash"]) >= 16
    assert cfg["distill"]["pairs"] == [[2, 1], [4, 2]] and cfg["distill"]["mode"] == mode
    for f in ("adapter/adapter_model.safetensors", "projections.safetensors", "ms_adapters.safetensors",
              "eval/test-sampled.json", "eval/test-full.json", "efficiency.json"):
        assert (out / f).exists(), f
    logs = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    train = [x for x in logs if x["event"] == "train"]
    assert {"ce", "d_cos", "d_norm", "l_ms"} <= set(train[0])
    if mode == "online":
        assert "teacher_ce" in train[0]
    assert summary["fit"]["best_step"] > 0


def test_student_works_with_evaluate_and_probe(teacher, tmp_path, capsys):
    _, _, t4 = teacher
    out = tmp_path / "s2"
    student_run(t4, out, 2, distill_args(epochs=1), blocks=2)
    code, stdout, err = run_cli(["evaluate", out, "--protocol", "sampled", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)[0]["metrics"] == json.loads((out / "eval/test-sampled.json").read_text())["metrics"]
    assert run_cli(["prune-probe", out], capsys)[0] == 0


def test_an_interrupted_student_resumes_to_the_same_numbers(teacher, tmp_path):
    """Stop mid-run, resume (the recorded block pairs read back from JSON as lists), same metrics and log."""
    from slmrec_cli.errors import Interrupted
    from slmrec_cli.train import engine

    _, _, t4 = teacher
    student_run(t4, tmp_path / "full", 2, distill_args(), blocks=2)

    def stop(step):
        if step == 3:
            engine.request_stop()

    with pytest.raises(Interrupted):
        student_run(t4, tmp_path / "cut", 2, distill_args(), blocks=2, on_step=stop)
    student_run(t4, tmp_path / "cut", 2, distill_args(), blocks=2, resume=True)
    assert eval_records(tmp_path / "cut") == eval_records(tmp_path / "full")
    assert (tmp_path / "cut" / "train_log.jsonl").read_text() == (tmp_path / "full" / "train_log.jsonl").read_text()


def test_l_kd_reads_the_teachers_own_scores_from_its_last_block_feature(teacher, tmp_path):
    model, data, t4 = distiller(teacher, lambda_kd=1.0, kd_temperature=2.0)
    model.eval()
    task = DistillTask(model, data, "last", 16, None)
    batch = task.batch(np.arange(8))
    feats, _ = model.teacher_features(batch["items"])
    with torch.no_grad():
        from_feats = model.teacher_head(feats[-1]) @ model.student.id_table.T
        assert torch.allclose(from_feats, model.teacher.score_all(batch["items"]), atol=1e-5)
        live = model(batch["items"], batch["targets"])
        key = cache_key(teacher_fingerprint(t4), data.content_hash, "last", 8, model.pairs, dtype="fp32")
        task.features = load_or_build(tmp_path / "cache", key, task, features_of(model, key), 16, "cpu")
        model.teacher = None  # as a cached run does: L_kd needs only the cache and the copied head
        cached = model(batch["items"], batch["targets"], task.batch(np.arange(8))["teacher_feats"])
    assert live[1]["l_kd"].item() > 0
    assert live[1]["l_kd"].item() == pytest.approx(cached[1]["l_kd"].item(), rel=1e-5)
    assert live[0].item() == pytest.approx(cached[0].item(), rel=1e-5)


def test_l_kd_trains_offline_and_online_and_is_recorded(teacher, tmp_path):
    _, _, t4 = teacher
    for mode, cache in (("offline", tmp_path / "cache"), ("online", None)):
        out = tmp_path / f"kd-{mode}"
        student_run(t4, out, 2, distill_args(epochs=1), blocks=2, mode=mode, lambda_kd=0.5, kd_temperature=2.0,
                teacher_cache=cache)
        cfg = json.loads((out / "config.json").read_text())["distill"]
        assert (cfg["lambda_kd"], cfg["kd_temperature"]) == (0.5, 2.0)
        train = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
        assert all(r["l_kd"] > 0 for r in train if r["event"] == "train")
    plain = tmp_path / "plain"
    student_run(t4, plain, 2, distill_args(epochs=1, max_steps=1), blocks=2)
    assert json.loads((plain / "config.json").read_text())["distill"]["lambda_kd"] == 0.0  # the paper's loss


def test_a_student_identical_to_its_live_teacher_is_perfectly_aligned(teacher):
    """The teacher run loaded twice, once as the student: the live teacher path and the student's block states must
    meet at the same layers and positions, so D_cos is 1 and D_norm 0; any other layer pairing breaks that."""
    data_dir, _, t4 = teacher
    opts = DistillOptions(student_layers=4, blocks=2, lambda_ms=0.0, norm_loss="squared")
    model = Distiller(Run.load(t4).load_model(), Run.load(t4).load_model(), [(2, 2), (4, 4)], opts).eval()
    batch = DistillTask(model, load_dataset(data_dir), "last", 16, None).batch(np.arange(8))
    with torch.no_grad():
        _, terms = model(batch["items"], batch["targets"])
        assert terms["d_cos"].item() == pytest.approx(1.0, abs=1e-5)
        assert terms["d_norm"].item() == pytest.approx(0.0, abs=1e-5)
        model.pairs = [(2, 4), (4, 2)]  # crossed layers: no longer the same states
        _, crossed = model(batch["items"], batch["targets"])
    assert crossed["d_cos"].item() < 0.99 and crossed["d_norm"].item() > 1e-3


def _student_grads(loss: torch.Tensor, model) -> torch.Tensor:
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.student.parameters() if p.grad is not None])


@pytest.mark.parametrize("which", ["lambda_cos", "lambda_norm", "lambda_ms", "lambda_kd"])
def test_each_term_reaches_the_student_and_a_zero_lambda_removes_it(teacher, which):
    """The student's gradient with one term on differs from CE's alone (the term reaches the student, never the
    frozen teacher); with that λ at 0 it is CE's alone."""
    off = {"lambda_cos": 0.0, "lambda_norm": 0.0, "lambda_ms": 0.0, "lambda_kd": 0.0}
    model, data, _ = distiller(teacher, **{**off, which: 1.0})
    model.eval()  # no dropout: every pass sees the same network
    batch = DistillTask(model, data, "last", 16, None).batch(np.arange(8))
    ce_alone = _student_grads(model.student(batch["items"], batch["targets"]), model)
    with_term = _student_grads(model(batch["items"], batch["targets"])[0], model)
    assert (with_term - ce_alone).abs().max() > 1e-6, f"{which} does not reach the student"
    assert all(p.grad is None for p in model.teacher.parameters())
    setattr(model.opts, which, 0.0)
    without = _student_grads(model(batch["items"], batch["targets"])[0], model)
    assert torch.allclose(without, ce_alone, atol=1e-7, rtol=1e-6)


def test_distill_bad_input(teacher, tmp_path, capsys):
    data_dir, sasrec, t4 = teacher
    base = ["distill", "--teacher", t4, "--out", tmp_path / "s", "--epochs", "1", "--student-layers", "2",
            "--blocks", "2"]
    cases = [
        (["--teacher", tmp_path / "missing"], "does not exist"),
        (["--teacher", sasrec], "train-teacher"),
        (["--student-layers", "4"], "fewer"),
        (["--student-layers", "3"], "divide"),
        (["--lambda-cos", "-1"], "lambda-cos"),
        (["--lambda-kd", "-0.5"], "lambda-kd"),
        (["--lambda-kd", "1", "--kd-temperature", "0"], "kd-temperature"),
        (["--norm-loss", "cosine"], "norm-loss"),
        (["--mode", "online", "--teacher-cache", tmp_path / "c"], "offline"),
    ]
    for extra, word in cases:
        code, _, err = run_cli([*base, *extra], capsys)
        assert code == 2 and word in err and "Traceback" not in err, (extra, err)
        assert not (tmp_path / "s").exists()
    other = make_dataset(tmp_path, name="other", seed=4)
    code, _, err = run_cli([*base, "--data", other], capsys)
    assert code == 2 and "trained on data" in err
    fake = tmp_path / "half"
    shutil.copytree(t4, fake)
    (fake / "projections.safetensors").unlink()
    code, _, err = run_cli(["distill", "--teacher", fake, "--out", tmp_path / "s", "--student-layers", "2",
                            "--blocks", "2"], capsys)
    assert code == 2 and "projections" in err


def test_align_all_reads_every_real_position(teacher):
    """The student as its own teacher is aligned at every slot; a teacher that differs at an early slot only moves
    the all-positions terms, never the last-position ones."""
    model, data, _ = distiller(teacher)
    batch = DistillTask(model, data, "causal", 16, None).batch(np.arange(8))
    with torch.no_grad():
        _, states = model.student.hidden(batch["items"], all_layers=True, positions="history")
        feats = states[[s - 1 for _, s in model.pairs]].clone()
        feats[:, :, -3] += 1.0  # third-last slot, real in every window of the tiny data
        terms = {}
        for align in ("last", "all"):
            model.opts.align = align
            terms[align] = model(batch["items"], batch["targets"], feats)[1]
    assert terms["last"]["d_cos"].item() == pytest.approx(1.0, abs=1e-5)
    assert terms["last"]["d_norm"].item() == pytest.approx(0.0, abs=1e-5)
    assert terms["all"]["d_cos"].item() < 1 - 1e-4 and terms["all"]["d_norm"].item() > 1e-4
    assert terms["all"]["ce"].item() == pytest.approx(terms["last"]["ce"].item(), abs=1e-6)  # CE is dense both ways


def test_align_all_needs_causal_targets(teacher, tmp_path, capsys):
    _, _, t4 = teacher
    code, _, err = run_cli(["distill", "--teacher", t4, "--out", tmp_path / "s", "--student-layers", "2",
                            "--blocks", "2", "--targets", "last", "--align", "all"], capsys)
    assert code == 2 and "--align all needs --targets causal" in err and not (tmp_path / "s").exists()
    code, _, err = run_cli(["distill", "--teacher", t4, "--out", tmp_path / "s", "--student-layers", "2",
                            "--blocks", "2", "--align", "middle"], capsys)
    assert code == 2 and "--align" in err


def test_gradient_checkpointing_changes_neither_loss_nor_gradients(teacher):
    """The student's block states are read inside recomputed (checkpointed) layers: the loss, every term and the
    student's gradients must be those of the plain run."""
    data_dir, _, t4 = teacher
    tcfg = json.loads((t4 / "config.json").read_text())
    t = Run.load(t4).load_model()
    data = load_dataset(data_dir)
    runs = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        cfg = LLMRecConfig(**{**tcfg["model"], "layers": 2, "lora_dropout": 0.0})
        s, _ = build_model(cfg, "tiny-random", t.id_table, gradient_checkpointing=checkpointing)
        base = s._base()
        on = getattr(base, "is_activation_checkpointing", None)  # transformers >= 5.2x renamed it
        assert (on if on is not None else base.is_gradient_checkpointing) == checkpointing
        model = Distiller(s, t, block_layers(4, 2, 2), DistillOptions(student_layers=2, blocks=2, lambda_kd=0.5))
        model.train()  # checkpointing only recomputes in training mode
        batch = DistillTask(model, data, "causal", 16, None).batch(np.arange(8))
        loss, terms = model(batch["items"], batch["targets"])
        runs[checkpointing] = (loss, terms, _student_grads(loss, model))
    (loss0, terms0, grads0), (loss1, terms1, grads1) = runs[False], runs[True]
    assert loss1.item() == pytest.approx(loss0.item(), rel=1e-6)
    assert all(terms1[k].item() == pytest.approx(v.item(), rel=1e-5, abs=1e-7) for k, v in terms0.items())
    assert torch.allclose(grads1, grads0, rtol=1e-4, atol=1e-7)


def test_online_student_starts_from_the_trained_teachers_projections(teacher, tmp_path, monkeypatch):
    """--mode online --init-projections teacher: the student copies the trained teacher's up/down projections, not
    those of the fresh online teacher that replaces it; efficiency.json counts the student's own trainable
    parameters, with the L_ms adapters and the online teacher apart."""
    import slmrec_cli.stages.distill as stage

    _, _, t4 = teacher
    trained = Run.load(t4).load_model()
    seen = {}

    class Spy(Distiller):
        def __init__(self, student, *a, **k):
            seen["up"] = student.up.weight.detach().clone()
            super().__init__(student, *a, **k)

    monkeypatch.setattr(stage, "Distiller", Spy)
    out = tmp_path / "online"
    student_run(t4, out, 2, distill_args(epochs=1, max_steps=1), blocks=2, mode="online", init_projections="teacher")
    assert torch.equal(seen["up"], trained.up.weight)
    params = json.loads((out / "efficiency.json").read_text())["params"]
    student = Run.load(out).load_model()
    lora_and_projections = sum(p.numel() for n, p in student.named_parameters() if "lora_" in n or n.startswith(
        ("up.", "down.")))
    assert params["trainable"] == lora_and_projections
    assert params["ms_adapters_trainable"] > 0 and params["online_teacher_trainable"] > 0


def test_trackers_write_into_the_run_directory(teacher, tmp_path, monkeypatch):
    import slmrec_cli.stages.distill as stage

    _, _, t4 = teacher
    dirs = []
    real = stage.make_accelerator
    monkeypatch.setattr(stage, "make_accelerator",
                        lambda a, run_dir=None, **kw: dirs.append(run_dir) or real(a, run_dir, **kw))
    student_run(t4, tmp_path / "s", 2, distill_args(epochs=1, max_steps=1), blocks=2)
    assert dirs == [tmp_path / "s"]  # accelerate's project_dir for --log-with, never ./None


def test_with_no_term_reading_the_teacher_it_is_never_loaded(teacher, tmp_path, monkeypatch):

    _, _, t4 = teacher
    real = Run.load_model

    def no_teacher(run, *a, **k):
        assert run.kind is not RunKind.TEACHER, "the teacher was loaded"
        return real(run, *a, **k)

    monkeypatch.setattr(Run, "load_model", no_teacher)
    student_run(t4, tmp_path / "s", 2, distill_args(epochs=1), blocks=2, lambda_cos=0, lambda_norm=0,
                teacher_cache=tmp_path / "cache")
    log = [json.loads(x) for x in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert all(r["d_cos"] == 0 and r["l_ms"] > 0 for r in log if r["event"] == "train")
    assert not (tmp_path / "cache").exists()
