import math

import numpy as np
import pytest
import torch

from slmrec_cli.errors import SlmrecError
from slmrec_cli.evaluation.ranking import METRIC_NAMES, metrics_from_ranks, pessimistic_ranks, relative_mrr_ci


def ranks(pos, others, valid=None):
    pos, others = torch.tensor(pos, dtype=torch.float), torch.tensor(others, dtype=torch.float)
    valid = torch.ones_like(others, dtype=torch.bool) if valid is None else torch.tensor(valid)
    return pessimistic_ranks(pos, others, valid).numpy()


def test_constant_scores_never_hit():
    r = ranks([0.5, 0.5], [[0.5] * 99, [0.5] * 99])
    assert list(r) == [99, 99]
    m = metrics_from_ranks(r)
    assert m["HR@1"] == m["HR@5"] == m["HR@10"] == 0.0
    assert m["NDCG@10"] == 0.0
    assert m["MRR"] == pytest.approx(1 / 100)


def test_positive_strictly_first():
    m = metrics_from_ranks(ranks([2.0], [[1.0, 0.0, 1.9]]))
    assert m == {"HR@1": 1.0, "HR@5": 1.0, "HR@10": 1.0, "NDCG@5": 1.0, "NDCG@10": 1.0, "MRR": 1.0}


def test_one_tie_costs_a_rank():
    assert list(ranks([1.0], [[1.0, 0.0, 0.0]])) == [1]


def test_known_ranks_exact_values():
    r = np.array([0, 1, 4, 9, 20])
    m = metrics_from_ranks(r)
    assert m["HR@1"] == pytest.approx(1 / 5)
    assert m["HR@5"] == pytest.approx(3 / 5)
    assert m["HR@10"] == pytest.approx(4 / 5)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 5)
    assert m["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10 + 1 / 21) / 5)
    assert list(m) == list(METRIC_NAMES)


def test_invalid_candidates_do_not_count():
    r = ranks([1.0], [[5.0, 5.0, 0.0]], [[False, True, True]])
    assert list(r) == [1]


def test_nan_is_an_error():
    with pytest.raises(SlmrecError, match="NaN"):
        ranks([float("nan")], [[1.0]])
    with pytest.raises(SlmrecError, match="NaN"):
        ranks([1.0], [[float("nan")]])


def test_empty_split_is_an_error():
    with pytest.raises(SlmrecError):
        metrics_from_ranks(np.array([]))


def test_relative_mrr_ci_is_paired():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 50, size=400)
    assert relative_mrr_ci(base, base) == (1.0, 1.0)  # same ranks: every resample gives exactly 1
    better = np.maximum(base - 1, 0)  # every user's positive one place higher (or still first)
    lo, hi = relative_mrr_ci(better, base)
    point = metrics_from_ranks(better)["MRR"] / metrics_from_ranks(base)["MRR"]
    assert 1.0 < lo <= point <= hi
    swapped = base.copy()
    swapped[:10] = base[:10] + 5  # ten users worse, none better: no resample can exceed 1
    lo, hi = relative_mrr_ci(swapped, base)
    assert lo <= metrics_from_ranks(swapped)["MRR"] / metrics_from_ranks(base)["MRR"] <= hi < 1.0 + 1e-12


def test_relative_mrr_ci_needs_the_same_users():
    with pytest.raises(SlmrecError, match="same users"):
        relative_mrr_ci(np.zeros(5), np.zeros(4))


def _repeat_dataset(tmp_path, negatives: int = 2):
    """u0 consumes i1 i5 i2 i6 i5 (duplicates kept): valid target i6, test target i5, which is also in its own test
    history; u1 and u2 only make the catalogue i1..i6."""
    from slmrec_cli.data import Log, load_dataset, prepare, read_item_map, save_dataset

    seqs = {"u0": [1, 5, 2, 6, 5], "u1": [1, 2, 3, 4], "u2": [6, 5, 4, 3]}
    users, items, times = [], [], []
    for u, seq in seqs.items():
        for t, i in enumerate(seq):
            users.append(u)
            items.append(f"i{i}")
            times.append(float(t))
    opts = {"min_rating": None, "k_core": 1, "keep_duplicates": True, "num_negatives": negatives, "seed": 0}
    save_dataset(prepare(Log(users=users, items=items, ratings=None, timestamps=np.asarray(times)), **opts),
                 tmp_path / "rep", name="rep", source={"kind": "synthetic"}, options=opts, force=False)
    data = load_dataset(tmp_path / "rep")
    raw = read_item_map(tmp_path / "rep" / "item_map.tsv")
    score = torch.tensor([-1.0] + [float(r[1:]) for r in raw[1:]])  # item iK scores K: i6 > i5 > ... > i1
    rows = [line.split("\t") for line in (tmp_path / "rep" / "user_map.tsv").read_text().splitlines()[1:]]
    index = {raw: int(u) for u, raw in rows}
    return data, (lambda hist: score.expand(hist.shape[0], -1)), index


def test_full_protocol_masks_the_history_but_never_the_positive(tmp_path):
    """Test target i5 also stands in its own history (i1 i5 i2 i6): the history is masked, the positive is not, and
    the validation item i6, now part of the test input, is masked too. So only i3 and i4 compete with i5, both below
    it (none ahead); unmasked, i6 scores above it (one ahead). Ranks count the competitors at or above the
    positive."""
    from slmrec_cli.evaluation.evaluate import rank_split

    data, score_all, index = _repeat_dataset(tmp_path)
    users = np.array([index["u0"]])
    masked = rank_split(score_all, data, "test", ("full",), max_len=8, users=users)["full"].ranks
    plain = rank_split(score_all, data, "test", ("full",), max_len=8, users=users, mask_history=False)["full"].ranks
    assert list(masked) == [0] and list(plain) == [1]
    u2 = np.array([index["u2"]])  # valid: target i4 after i6 i5, both masked (none ahead), else both ahead
    assert list(rank_split(score_all, data, "valid", ("full",), max_len=8, users=u2)["full"].ranks) == [0]
    assert list(rank_split(score_all, data, "valid", ("full",), max_len=8, users=u2,
                           mask_history=False)["full"].ranks) == [2]


def test_metrics_files_record_how_many_candidates_were_really_scored(tmp_path):
    """Every user here has only 2 unseen items, so 3 negatives leave one padding slot: the file says 4 candidates at
    most, 3 scored; in the full protocol u0's test positive competes with 6 items less its masked history."""
    from slmrec_cli.evaluation.evaluate import metrics_record, rank_split

    data, score_all, index = _repeat_dataset(tmp_path, negatives=3)
    res = rank_split(score_all, data, "test", ("sampled", "full"), max_len=8)
    sampled = metrics_record(res["sampled"], data, "test", "run", "fp32")
    assert (sampled["candidates"], sampled["candidates_min"], sampled["candidates_mean"]) == (4, 3, 3.0)
    assert sampled["eval_precision"] == "fp32"
    assert res["full"].scored[list(res["full"].user_ids).index(index["u0"])] == 6 - 3  # i1, i2, i6 masked


def test_evaluation_runs_outside_autocast(tmp_path):
    """A bf16 autocast around the evaluation does not reach the model: it computes in its own dtype, the one its
    metrics files record (eval_precision)."""
    from slmrec_cli.evaluation.evaluate import rank_split

    data, score_all, _ = _repeat_dataset(tmp_path)
    seen = []

    def spy(hist):
        seen.append(torch.is_autocast_enabled("cpu"))
        return score_all(hist)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        rank_split(spy, data, "test", ("sampled",), max_len=8)
    assert seen and not any(seen)
