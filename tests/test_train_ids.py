"""--train-ids: the id table trains with the model, is saved with the weights it goes with, and is what the run
reloads, resumes, evaluates, distills and exports from. Without it the table stays SASRec's, bit for bit."""

import json

import pytest
import torch
from safetensors.torch import load_file

from slmrec_cli.config.train import TrainArgs
from slmrec_cli.models.build import ID_TABLE as TABLE
from slmrec_cli.runs import Run
from tests.helpers import TEACHER_TINY, distill_args, eval_records, run_cli, student_run, teacher_run


def table(run):
    return load_file(str(run / TABLE))["item_embeddings"]


def args(**kw):
    return TrainArgs(**{"epochs": 2, "batch_size": 16, "lr": 5e-3, "log_every": 1, **kw})


@pytest.fixture(scope="module")
def trained(tiny_runs, tmp_path_factory):
    data, sasrec, _ = tiny_runs
    out = tmp_path_factory.mktemp("ids") / "t4-ids"
    teacher_run(data, sasrec, "tiny-random", out, {**TEACHER_TINY, "train_ids": True}, args())
    return data, sasrec, out


def test_the_default_keeps_sasrecs_table_bit_for_bit(tiny_runs):
    _, sasrec, t4 = tiny_runs
    assert torch.equal(table(t4), table(sasrec))
    assert json.loads((t4 / "config.json").read_text())["model"]["train_ids"] is False


def test_a_trained_table_is_saved_counted_and_read_back(trained, tiny_runs, capsys):
    _, sasrec, run = trained
    saved = table(run)
    assert saved.shape == table(sasrec).shape and not torch.allclose(saved, table(sasrec))
    assert torch.equal(saved[0], table(sasrec)[0])  # row 0 is padding: never read, never scored, never moved
    assert TABLE in json.loads((run / "checksums.json").read_text())["sha256"]
    model = Run.load(run).load_model()
    assert isinstance(model.id_table, torch.nn.Parameter) and torch.equal(model.id_table.detach(), saved)
    frozen = json.loads((tiny_runs[2] / "efficiency.json").read_text())["params"]
    params = json.loads((run / "efficiency.json").read_text())["params"]
    assert params["trainable"] == frozen["trainable"] + saved.numel()
    assert params["total"] == frozen["total"] and params["inference"] == frozen["inference"]
    code, out, err = run_cli(["evaluate", run, "--protocol", "sampled", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)[0]["metrics"] == json.loads((run / "eval/test-sampled.json").read_text())["metrics"]


def test_the_export_carries_the_trained_table(trained, tmp_path, capsys):
    _, _, run = trained
    code, _, err = run_cli(["export", "--run", run, "--out", tmp_path / "exp", "--format", "safetensors"], capsys)
    assert code == 0, err
    heads = [load_file(str(f)) for f in (tmp_path / "exp").rglob("*.safetensors") if "id_table" in load_file(str(f))]
    assert heads and all(torch.equal(h["id_table"], table(run)) for h in heads)


def test_a_resumed_run_keeps_its_trained_table_and_ends_as_an_uninterrupted_one(trained, tmp_path):
    """The run's start writes a frozen table's copy; a trained one must not be put back to SASRec's on --resume."""
    from slmrec_cli.errors import Interrupted
    from slmrec_cli.train import engine

    data, sasrec, full = trained
    cut = tmp_path / "cut"
    model = {**TEACHER_TINY, "train_ids": True}

    def stop(step):
        if step == 10:  # epoch 2 (8 steps an epoch): epoch 1's weights and table are saved as the best so far
            engine.request_stop()

    with pytest.raises(Interrupted):
        teacher_run(data, sasrec, "tiny-random", cut, model, args(), on_step=stop)
    before = table(cut)
    assert not torch.allclose(before, table(sasrec))
    seen = []
    teacher_run(data, sasrec, "tiny-random", cut, model, args(), resume=True,
                on_step=lambda step: seen.append(torch.equal(table(cut), before)))
    assert seen and seen[0]  # training went on with the best table on disk, not SASRec's
    assert eval_records(cut) == eval_records(full)
    assert torch.equal(table(cut), table(full))


def test_a_student_of_a_trained_table_starts_from_it_and_trains_it(trained, tmp_path):
    _, _, run = trained
    out = tmp_path / "s2"
    student_run(run, out, 2, distill_args(epochs=1), blocks=2)
    assert json.loads((out / "config.json").read_text())["model"]["train_ids"] is True
    assert table(out).shape == table(run).shape and not torch.equal(table(out), table(run))
