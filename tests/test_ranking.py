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
