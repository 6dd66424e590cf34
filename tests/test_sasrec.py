import json

import numpy as np
import pytest
import torch

from slmrec_cli.config.models import SASRecConfig
from slmrec_cli.config.train import TrainArgs
from slmrec_cli.data import load_dataset, training_windows
from slmrec_cli.errors import Interrupted
from slmrec_cli.evaluation.evaluate import rank_split
from slmrec_cli.evaluation.popularity import popularity_scorer
from slmrec_cli.models.sasrec import SASRec
from slmrec_cli.train import engine
from tests.helpers import make_dataset, sasrec_run

MODEL = {"dim": 32, "layers": 1, "heads": 2, "max_len": 10, "dropout": 0.1}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"))


def args(**kw):
    base = dict(epochs=6, batch_size=16, lr=5e-3, patience=20, seed=3, log_every=1, warmup_ratio=0.1)
    return TrainArgs(**{**base, **kw})


def test_windows_cover_every_training_position(tiny):
    data = load_dataset(tiny)
    w = training_windows(data, max_len=4)
    targets = sum(int(((row[1:] != 0) & (row[:-1] != 0)).sum()) for row in w)
    assert targets == sum(len(data.train_history(u)) - 1 for u in range(data.n_users))


def test_padding_does_not_change_the_user_vector():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=30, dim=16, layers=2, heads=2, max_len=8, dropout=0.0)).eval()
    items = [3, 7, 9]
    vectors = [model.user_vectors(torch.tensor([[0] * pad + items])) for pad in (0, 1, 5)]
    for v in vectors[1:]:
        assert torch.allclose(vectors[0], v, atol=1e-6)


def test_sasrec_trains_and_beats_popularity(tiny, tmp_path):
    summary = sasrec_run(tiny, tmp_path / "run", MODEL, args())
    run = tmp_path / "run"
    for f in ("config.json", "model.safetensors", "item_embeddings.safetensors", "train_log.jsonl",
              "efficiency.json", "eval/test-sampled.json", "eval/test-full.json", "eval/valid-sampled.json"):
        assert (run / f).exists(), f
    losses = [json.loads(x)["loss"] for x in (run / "train_log.jsonl").read_text().splitlines()
              if json.loads(x)["event"] == "train"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    data = load_dataset(tiny)
    pop = rank_split(popularity_scorer(data), data, "test", ("sampled",), max_len=1)["sampled"].metrics
    test = json.loads((run / "eval/test-sampled.json").read_text())
    assert test["metrics"]["MRR"] > pop["MRR"] + 0.1
    assert test["users"] == data.n_users and test["candidates"] == 21
    from safetensors.torch import load_file

    table = load_file(str(run / "item_embeddings.safetensors"))["item_embeddings"]
    assert table.shape == (data.n_items + 1, MODEL["dim"])
    eff = json.loads((run / "efficiency.json").read_text())
    assert eff["params"]["trainable"] > 0 and eff["inference_users"] == data.n_users
    assert summary["fit"]["best_step"] > 0


def test_interrupt_then_resume_matches_uninterrupted(tiny, tmp_path):
    sasrec_run(tiny, tmp_path / "full", MODEL, args(epochs=3))

    def stop_at(step):
        if step == 7:  # mid-epoch
            engine.request_stop()

    with pytest.raises(Interrupted):
        sasrec_run(tiny, tmp_path / "cut", MODEL, args(epochs=3), on_step=stop_at)
    assert not (tmp_path / "cut" / "eval" / "test-sampled.json").exists()
    sasrec_run(tiny, tmp_path / "cut", MODEL, args(epochs=3), resume=True)
    for f in ("test-sampled.json", "test-full.json", "valid-sampled.json"):
        a = json.loads((tmp_path / "full" / "eval" / f).read_text())["metrics"]
        b = json.loads((tmp_path / "cut" / "eval" / f).read_text())["metrics"]
        assert a == b, f


def test_max_steps_caps_training_and_the_schedule(tiny, tmp_path):
    """--max-steps stops inside an epoch, the cosine schedule reaches 0 there, and the final weights are validated
    even when --eval-every does not divide the steps run."""
    summary = sasrec_run(tiny, tmp_path / "run", MODEL, args(epochs=50, max_steps=5, eval_every=2))
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["event"] == "train"]
    assert train[-1]["step"] == 5 and summary["fit"]["steps"] == 5
    assert train[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert [r["step"] for r in log if r["event"] == "valid"] == [2, 4, 5]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["train"]["max_steps"] == 5
    with pytest.raises(Exception, match="--max-steps"):
        args(max_steps=-1)
