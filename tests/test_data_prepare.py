"""prepare(): every data rule of shared/PROTOCOL.md, on small constructed logs."""

from __future__ import annotations

import numpy as np
import pytest

from slmrec_cli.data import Log, Prepared, prepare
from slmrec_cli.errors import SlmrecError


def make_log(rows: list[tuple], implicit: bool = False) -> Log:
    """rows: (user, item, rating, timestamp) in file order."""
    users, items, ratings, times = zip(*rows, strict=True)
    rating_array = None if implicit else np.asarray(ratings, dtype=np.float64)
    times_array = np.asarray(times, dtype=np.float64)
    return Log([str(u) for u in users], [str(i) for i in items], rating_array, times_array)


def raw_seq(p: Prepared, u: int) -> list[str]:
    return [p.item_ids[i - 1] for i in p.sequences[p.offsets[u]:p.offsets[u + 1]]]


def raw_seqs(p: Prepared) -> dict[str, list[str]]:
    return {p.user_ids[u]: raw_seq(p, u) for u in range(p.n_users)}


def random_log(n_users: int = 60, n_items: int = 300, per_user: int = 25, seed: int = 0) -> Log:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, size=per_user, replace=False):
            rows.append((f"u{u}", f"i{i}", 5.0, float(rng.integers(0, 1000))))
    return make_log(rows)


def test_k_core_reaches_a_fixed_point() -> None:
    core = [(u, i, 5, t) for t, (u, i) in enumerate((u, i) for u in "abc" for i in "123")]
    # e has 2 items -> dropped in pass 1; then X has 2 users -> pass 2; then d and f have 2 items -> pass 3
    extra = [("d", "1", 5, 20), ("d", "2", 5, 21), ("d", "X", 5, 22),
             ("e", "X", 5, 23), ("e", "Y", 5, 24),
             ("f", "X", 5, 25), ("f", "1", 5, 26), ("f", "2", 5, 27)]
    log = make_log(core + extra)
    # one simultaneous pass is not enough: X still has d and f, below k=3
    users, items = np.array(log.users), np.array(log.items)
    u_ok = {u for u in set(log.users) if (users == u).sum() >= 3}
    i_ok = {i for i in set(log.items) if (items == i).sum() >= 3}
    one_pass = [(u, i) for u, i in zip(users, items, strict=True) if u in u_ok and i in i_ok]
    assert sum(i == "X" for _, i in one_pass) == 2

    p = prepare(log, k_core=3, num_negatives=1)
    assert sorted(p.user_ids) == ["a", "b", "c"] and sorted(p.item_ids) == ["1", "2", "3"]
    assert (np.diff(p.offsets) >= 3).all()
    assert (np.bincount(p.sequences)[1:] >= 3).all()
    assert p.stats["dropped"]["by_k_core"] == len(extra)


def test_k_core_fixed_point_on_random_log() -> None:
    p = prepare(random_log(n_users=100, n_items=150, per_user=8, seed=3), k_core=5, num_negatives=10)
    assert (np.diff(p.offsets) >= 5).all()
    assert (np.bincount(p.sequences, minlength=p.n_items + 1)[1:] >= 5).all()


def test_equal_timestamps_keep_file_order_not_item_id_order() -> None:
    # file order z, a, m at the same time; item-id order would give a, m, z
    log = make_log([("u", "z", 5, 7), ("u", "a", 5, 7), ("u", "m", 5, 7), ("u", "b", 5, 1),
                    ("v", "m", 5, 7), ("v", "a", 5, 7), ("v", "z", 5, 7)])
    p = prepare(log, k_core=0, num_negatives=1)
    assert raw_seqs(p) == {"u": ["b", "z", "a", "m"], "v": ["m", "a", "z"]}
    # ids by first appearance in the time-ordered log (time, then file row)
    assert p.item_ids == ["b", "z", "a", "m"] and p.user_ids == ["u", "v"]


def test_dedupe_keeps_first_occurrence_in_time_order() -> None:
    log = make_log([("u", "x", 5, 10), ("u", "y", 5, 5), ("u", "x", 5, 1), ("u", "z", 5, 20),
                    ("u", "w", 5, 30), ("v", "x", 5, 1), ("v", "y", 5, 2), ("v", "z", 5, 3),
                    ("v", "w", 5, 4)])
    p = prepare(log, k_core=0, num_negatives=1)
    assert raw_seqs(p)["u"] == ["x", "y", "z", "w"]  # x at t=1, not the file-first x at t=10
    assert p.stats["dropped"]["duplicates"] == 1
    kept = prepare(log, k_core=0, num_negatives=1, keep_duplicates=True)
    assert raw_seqs(kept)["u"] == ["x", "y", "x", "z", "w"]
    assert kept.stats["dropped"]["duplicates"] == 0


def test_min_rating_is_strictly_greater() -> None:
    rows = [("u", "a", 3.0, 1), ("u", "b", 3.5, 2), ("u", "c", 4, 3), ("u", "d", 5, 4), ("u", "e", 1, 5)]
    assert raw_seqs(prepare(make_log(rows), k_core=0, num_negatives=1)) == {"u": ["b", "c", "d"]}
    all_kept = prepare(make_log(rows), min_rating=None, k_core=0, num_negatives=1)
    assert raw_seqs(all_kept)["u"] == ["a", "b", "c", "d", "e"]
    implicit = prepare(make_log(rows, implicit=True), k_core=0, num_negatives=1)
    assert len(raw_seqs(implicit)["u"]) == 5 and implicit.stats["dropped"]["by_rating"] == 0


def test_short_users_dropped_when_k_core_below_three() -> None:
    log = make_log([("u", "a", 5, 1), ("u", "b", 5, 2), ("u", "c", 5, 3), ("v", "a", 5, 1), ("v", "b", 5, 2)])
    p = prepare(log, k_core=1, num_negatives=1)
    assert p.user_ids == ["u"]
    assert p.stats["dropped"]["too_short"] == 2 and p.stats["notes"]


def test_negatives_exclude_history_unique_and_seeded() -> None:
    log = random_log()
    p = prepare(log, k_core=2, num_negatives=50, seed=7)
    assert p.negatives.shape == (p.n_users, 50) and p.negatives.dtype == np.int64
    for u in range(p.n_users):
        row = p.negatives[u]
        seq = p.sequences[p.offsets[u]:p.offsets[u + 1]]
        assert (row >= 1).all() and (row <= p.n_items).all()
        assert len(set(row.tolist())) == 50
        assert not set(row.tolist()) & set(seq.tolist())  # includes valid and test targets
    again = prepare(log, k_core=2, num_negatives=50, seed=7)
    assert np.array_equal(p.negatives, again.negatives)
    other = prepare(log, k_core=2, num_negatives=50, seed=8)
    assert not np.array_equal(p.negatives, other.negatives)


def test_negatives_are_roughly_uniform() -> None:
    log = make_log([(f"u{u}", f"i{(u + k) % 40}", 5, k) for u in range(400) for k in range(3)])
    p = prepare(log, k_core=0, num_negatives=10, seed=1)
    counts = np.bincount(p.negatives.ravel(), minlength=p.n_items + 1)[1:]
    # each item is unseen by 370 users, each drawing 10 of its 37 unseen items: 100 expected
    assert 60 < counts.min() and counts.max() < 140


def test_user_with_few_unseen_items_gets_all_of_them() -> None:
    items = [f"i{k}" for k in range(10)]
    rows = [("heavy", i, 5, t) for t, i in enumerate(items[:8])]  # 2 unseen
    rows += [("light", i, 5, 100 + t) for t, i in enumerate(items[5:])]  # 5 seen, 5 unseen
    p = prepare(make_log(rows), k_core=0, num_negatives=5)
    heavy = p.user_ids.index("heavy")
    row = p.negatives[heavy]
    got = sorted(p.item_ids[i - 1] for i in row if i)
    assert got == ["i8", "i9"] and (row == 0).sum() == 3
    assert p.stats["users_with_padded_negatives"] == 1


def test_num_negatives_larger_than_catalogue() -> None:
    log = make_log([(u, i, 5, t) for t, (u, i) in enumerate((u, i) for u in "abc" for i in "1234")])
    prepare(log, k_core=0, num_negatives=3)
    with pytest.raises(SlmrecError, match=r"--num-negatives 4 is larger than the catalogue of 4 items"):
        prepare(log, k_core=0, num_negatives=4)


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"min_rating": 5.0}, r"no interactions left after --min-rating 5 \(all ratings ≤ 5\); lower --min"),
    ({"k_core": 50}, r"no interactions left after --k-core 50.*lower --k-core"),
    ({"k_core": -1}, r"--k-core -1"),
    ({"num_negatives": 0}, r"--num-negatives 0"),
])
def test_filters_that_empty_the_log_are_named(kwargs: dict, pattern: str) -> None:
    with pytest.raises(SlmrecError, match=pattern):
        prepare(random_log(n_users=10, n_items=30, per_user=5), **{"num_negatives": 5, **kwargs})


def test_stats_and_options() -> None:
    p = prepare(random_log(), k_core=2, num_negatives=20, seed=3)
    s = p.stats
    assert s["users"] == p.n_users and s["items"] == p.n_items and s["interactions"] == len(p.sequences)
    assert s["min_length"] >= 3 and s["max_length"] >= s["median_length"] >= s["min_length"]
    assert s["rows_read"] == 60 * 25
    assert p.options == {"min_rating": 3.0, "k_core": 2, "keep_duplicates": False, "num_negatives": 20,
                         "seed": 3}
    assert p.offsets[0] == 0 and p.offsets[-1] == len(p.sequences)
    assert set(np.unique(p.sequences)) == set(range(1, p.n_items + 1))  # 0 never a real item
