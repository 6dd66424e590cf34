"""--group-by-length: batches of similar length, every example once per epoch, a pure function of (seed, epoch), exact
resume."""

import json

import numpy as np
import pytest

from slmrec_cli.config.train import SASRecTrain
from slmrec_cli.errors import Interrupted
from slmrec_cli.train import engine
from slmrec_cli.train.engine import epoch_batches
from tests.helpers import SASREC_TINY, make_dataset, sasrec_run

LENGTHS = np.random.default_rng(0).integers(1, 51, size=1003)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_example_once_per_epoch(world):
    shards = [epoch_batches(len(LENGTHS), 16, 7, 0, rank, world, LENGTHS) for rank in range(world)]
    seen = np.concatenate([np.concatenate(b) for b in shards])
    assert set(seen.tolist()) == set(range(len(LENGTHS)))
    assert len(seen) == -(-len(LENGTHS) // world) * world  # wrapped round as without grouping
    assert len({len(b) for b in shards}) == 1  # every process takes the same number of steps


def test_batches_carry_less_padding_than_random_ones():
    def padding(batches):
        return sum(int(LENGTHS[b].max()) * len(b) - int(LENGTHS[b].sum()) for b in batches)

    grouped = epoch_batches(len(LENGTHS), 16, 7, 0, lengths=LENGTHS)
    plain = epoch_batches(len(LENGTHS), 16, 7, 0)
    assert padding(grouped) < 0.2 * padding(plain)


def test_order_is_a_pure_function_of_seed_and_epoch():
    a = epoch_batches(len(LENGTHS), 16, 7, 3, lengths=LENGTHS)
    b = epoch_batches(len(LENGTHS), 16, 7, 3, lengths=LENGTHS)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    other_epoch = epoch_batches(len(LENGTHS), 16, 7, 4, lengths=LENGTHS)
    other_seed = epoch_batches(len(LENGTHS), 16, 8, 3, lengths=LENGTHS)
    assert not np.array_equal(np.concatenate(a), np.concatenate(other_epoch))
    assert not np.array_equal(np.concatenate(a), np.concatenate(other_seed))
    firsts = [int(LENGTHS[x].max()) for x in a[:10]]
    assert firsts != sorted(firsts, reverse=True)  # the batches are shuffled: lengths do not run longest-first


def test_grouped_run_resumes_exactly(tmp_path):
    data = make_dataset(tmp_path, length=14)
    model = {**SASREC_TINY, "max_len": 6}  # several windows per user, the first ones short
    args = SASRecTrain(epochs=3, batch_size=16, eval_every=0, patience=10, group_by_length=True)
    sasrec_run(data, tmp_path / "full", model, args)

    def stop_at(step):
        if step == 5:  # mid-epoch
            engine.request_stop()

    with pytest.raises(Interrupted):
        sasrec_run(data, tmp_path / "cut", model, args, on_step=stop_at)
    sasrec_run(data, tmp_path / "cut", model, args, resume=True)
    for f in ("test-sampled.json", "valid-sampled.json"):
        a = json.loads((tmp_path / "full" / "eval" / f).read_text())["metrics"]
        b = json.loads((tmp_path / "cut" / "eval" / f).read_text())["metrics"]
        assert a == b, f
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["train"]["group_by_length"] is True

