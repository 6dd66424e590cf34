"""The reloaded selected weights must reproduce the selected validation MRR before the test split is read."""

from dataclasses import replace

import numpy as np
import pytest

from slmrec_cli.config.train import TrainArgs
from slmrec_cli.data import load_dataset
from slmrec_cli.errors import SlmrecError
from slmrec_cli.evaluation.evaluate import eval_batches
from slmrec_cli.train.reload_check import check_users
from tests.helpers import SASREC_TINY, TEACHER_TINY, make_dataset, run_cli, sasrec_run, teacher_run

ARGS = TrainArgs(epochs=2, batch_size=32, lr=5e-3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"))


def negate(weights: dict, name: str) -> dict:
    return {**weights, name: -weights[name]}


def test_the_checked_users_are_whole_batches_of_the_live_validation(tiny):
    data = load_dataset(tiny)
    full = eval_batches(data, "valid", np.arange(data.n_users), 8, 8)
    users = check_users(data, 8, 8, n=20)
    chosen = eval_batches(data, "valid", users, 8, 8)
    assert len(chosen) == 3 and len(users) == 8 + 8 + 4  # the first, a middle and the last (short) batch
    assert all(any(np.array_equal(b, f) for f in full) for b in chosen)  # the very batches the live model scored
    assert len(check_users(data, 8, 8, n=10_000)) == data.n_users


def test_a_corrupted_reload_stops_the_run_before_test(tiny, tmp_path, capsys, monkeypatch):
    import slmrec_cli.stages.pretrain_ids as stage

    load = stage.load_run_weights
    monkeypatch.setattr(stage, "load_run_weights", lambda run, name: negate(load(run, name), "norm.weight"))
    out = tmp_path / "sasrec"
    code, _, err = run_cli(["pretrain-ids", "--data", tiny, "--out", out, "--dim", "16", "--layers", "1", "--heads",
                            "2", "--max-len", "8", "--epochs", "2", "--batch-size", "32"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # after the training's progress lines
    assert code == 2 and len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    assert "reloaded weights give validation MRR" in errors[0] and "not the one validated" in errors[0]
    assert not (out / "eval" / "test-sampled.json").exists()  # not finished: a study runs it again


def test_a_resumed_run_checks_the_whole_split_against_the_recorded_mrr(tiny, tmp_path, monkeypatch):
    """When the selected step was validated before a --resume, the live ranks are gone: the reload is scored on the
    whole validation split (the run's valid record) and compared with the MRR the checkpoint recorded."""
    import slmrec_cli.stages.pretrain_ids as stage
    import slmrec_cli.train.lifecycle as lifecycle

    fit = lifecycle.fit
    monkeypatch.setattr(lifecycle, "fit", lambda *a, **k: replace(fit(*a, **k), best_valid=None))
    summary = sasrec_run(tiny, tmp_path / "ok", SASREC_TINY, ARGS)
    valid = next(r for r in summary["records"] if (r["split"], r["protocol"]) == ("valid", "sampled"))
    assert valid["metrics"]["MRR"] == pytest.approx(summary["fit"]["best_mrr"], abs=1e-12)
    load = stage.load_run_weights
    monkeypatch.setattr(stage, "load_run_weights", lambda run, name: negate(load(run, name), "norm.weight"))
    with pytest.raises(SlmrecError, match="reloaded weights give validation MRR"):
        sasrec_run(tiny, tmp_path / "bad", SASREC_TINY, ARGS)


def test_a_teacher_whose_reload_differs_fails(tiny_runs, tmp_path, monkeypatch):
    from slmrec_cli.runs import Run

    data, sasrec, _ = tiny_runs
    load = Run.load_model

    def corrupted(run, *a, **k):
        model = load(run, *a, **k)
        model.down.weight.data.neg_()
        return model

    monkeypatch.setattr(Run, "load_model", corrupted)
    out = tmp_path / "t"
    with pytest.raises(SlmrecError, match="reloaded weights give validation MRR"):
        teacher_run(data, sasrec, "tiny-random", out, TEACHER_TINY, TrainArgs(epochs=1, batch_size=16, lr=5e-3))
    assert not (out / "eval" / "test-sampled.json").exists()
