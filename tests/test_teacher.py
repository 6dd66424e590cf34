import json

import numpy as np
import pytest
import torch

from slmrec_cli.config.evaluate import ProbeConfig
from slmrec_cli.config.train import TrainArgs
from slmrec_cli.errors import SlmrecError
from slmrec_cli.runs import Run
from slmrec_cli.stages.prune_probe import prune_probe
from tests.helpers import TEACHER_TINY, copy_runs, make_dataset, run_cli, teacher_run


@pytest.fixture(scope="module")
def teacher(tiny_runs, tmp_path_factory):
    return copy_runs(tiny_runs, tmp_path_factory.mktemp("teacher"))


def test_teacher_trains_and_writes_its_run(teacher):
    _, _, run = teacher
    for f in ("config.json", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
              "projections.safetensors", "item_embeddings.safetensors", "efficiency.json", "eval/test-sampled.json",
              "eval/test-full.json"):
        assert (run / f).exists(), f
    logs = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in logs if x["event"] == "train"]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["kind"] == "teacher" and cfg["base_model"]["pretrained"] is False
    assert cfg["targets"] == "causal" and cfg["model"]["layers"] == 4
    eff = json.loads((run / "efficiency.json").read_text())
    assert set(eff) >= {"params", "train_seconds_per_epoch", "inference_seconds", "inference_users",
                        "peak_memory_bytes", "device"}
    assert 0 < eff["params"]["trainable"] < eff["params"]["total"]


def test_padding_invariance(teacher):
    data_dir, _, run = teacher
    model = Run.load(run).load_model()
    items = [3, 7, 9, 2]
    with torch.no_grad():
        vecs = [model.user_vectors(torch.tensor([[0] * pad + items])) for pad in (0, 1, 4)]
        batch = model.user_vectors(torch.tensor([[0, 0, 0, 0, 3, 7, 9, 2], [5, 6, 1, 8, 3, 7, 9, 2]]))
    for v in vecs[1:]:
        assert torch.allclose(vecs[0], v, atol=1e-5)
    assert torch.allclose(batch[0], vecs[0][0], atol=1e-5)


@pytest.mark.parametrize("split", ["test", "valid"])
def test_reload_reproduces_the_eval_file(teacher, capsys, split):
    """The run's eval files equal a fresh evaluation of the reloaded run; valid's were written from the selected
    validation during training (not scored again), so this also checks that they are the selected weights' own."""
    _, _, run = teacher
    for protocol in ("sampled", "full"):
        before = json.loads((run / f"eval/{split}-{protocol}.json").read_text())["metrics"]
        code, out, err = run_cli(["evaluate", run, "--split", split, "--protocol", protocol, "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)[0]["metrics"] == pytest.approx(before, abs=1e-12)


def test_probe_last_layer_equals_model_output(teacher):
    _, _, run = teacher
    record = prune_probe(ProbeConfig(run, split="test", final_norm=True))
    assert [x["layer"] for x in record["layers"]] == [1, 2, 3, 4]
    own = json.loads((run / "eval/test-sampled.json").read_text())["metrics"]
    assert record["layers"][-1]["metrics"] == pytest.approx(own, abs=1e-12)
    assert (run / "probe/test.json").exists() and (run / "probe/test.png").stat().st_size > 1000
    partial = prune_probe(ProbeConfig(run, split="valid", layers="1,3", final_norm=False))
    assert [x["layer"] for x in partial["layers"]] == [1, 3] and partial["final_norm"] is False


def test_probe_bad_input(teacher, capsys):
    _, sasrec, run = teacher
    assert run_cli(["prune-probe", run, "--layers", "9"], capsys)[0] == 2
    code, _, err = run_cli(["prune-probe", sasrec], capsys)
    assert code == 2 and "sasrec" in err


@pytest.mark.parametrize("change, word", [
    ({"base_model": "no-such-model"}, "no-such-model"),
    ({"base_model": "/nonexistent/folder"}, "/nonexistent/folder"),
    ({"layers": "0"}, "layers"),
    ({"layers": "9"}, "layers"),
    ({"targets": "some"}, "targets"),
    ({"prompt": "no placeholder"}, "{history}"),
])
def test_teacher_bad_input(teacher, tmp_path, capsys, change, word):
    data, sasrec, _ = teacher
    opts = {"base_model": "tiny-random", "layers": "2", "targets": "last", **change}
    argv = ["train-teacher", "--data", data, "--ids", sasrec, "--out", tmp_path / "t", "--epochs", "1",
            *[x for k, v in opts.items() for x in (f"--{k.replace('_', '-')}", v)]]
    code, _, err = run_cli(argv, capsys)
    assert code == 2, err
    assert word in err and "Traceback" not in err
    assert not (tmp_path / "t").exists()


def test_ids_from_other_data_or_kind_are_refused(teacher, tmp_path):
    data, sasrec, run = teacher
    other = make_dataset(tmp_path, name="other", seed=9)
    with pytest.raises(SlmrecError, match="trained on data"):
        teacher_run(other, sasrec, "tiny-random", tmp_path / "x", TEACHER_TINY, TrainArgs(epochs=1))
    with pytest.raises(SlmrecError, match="pretrain-ids"):
        teacher_run(data, run, "tiny-random", tmp_path / "y", TEACHER_TINY, TrainArgs(epochs=1))


@pytest.mark.parametrize("stage", ["teacher", "student"])
def test_the_training_model_is_freed_before_the_selected_weights_are_reloaded(tiny_runs, tmp_path, monkeypatch,
                                                                             stage):
    """No stage holds two copies of its model: when the best weights are reloaded for the final evaluation, the
    model that trained (and, for a student, its Distiller and teacher) is gone."""
    import gc
    import weakref

    import slmrec_cli.models.build as build
    from tests.helpers import student_run

    data, ids, t4 = tiny_runs
    built, alive_at_reload = [], []
    real_build, real_load = build.build_model, Run.load_model

    def spy_build(*a, **k):
        model, ref = real_build(*a, **k)
        built.append(weakref.ref(model))
        return model, ref

    def spy_load(run, *a, **k):
        if run.path in (tmp_path / "t", tmp_path / "s"):  # the stage reloading its own selected weights
            gc.collect()
            alive_at_reload.append([r() is not None for r in built])
        return real_load(run, *a, **k)

    for module in ("slmrec_cli.stages.train_teacher", "slmrec_cli.stages.distill", "slmrec_cli.runs"):
        monkeypatch.setattr(f"{module}.build_model", spy_build)
    monkeypatch.setattr(Run, "load_model", spy_load)
    train = TrainArgs(epochs=1, batch_size=16, lr=5e-3)
    if stage == "teacher":
        teacher_run(data, ids, "tiny-random", tmp_path / "t", TEACHER_TINY, train)
    else:
        student_run(t4, tmp_path / "s", 2, train, blocks=2)  # live teacher: it is loaded (built) too
    assert len(alive_at_reload) == 1  # one reload, after training
    assert len(alive_at_reload[0]) == (1 if stage == "teacher" else 2) and not any(alive_at_reload[0])
