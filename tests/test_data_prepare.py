"""prepare(): every data rule of shared/PROTOCOL.md, on small constructed logs."""

from __future__ import annotations

import numpy as np
import pytest

from slmrec_cli.data import Log, Prepared, prepare, sample_negatives
from slmrec_cli.data.prepare import iter_negatives
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
    assert p.negatives.shape == (p.n_users, 50)
    assert p.negatives.dtype == p.sequences.dtype == np.uint16  # the smallest type that holds n_items
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


# --- scale: negatives without a pass over the catalogue, smallest id types -----------------------------------

def listing_negatives(sequences: np.ndarray, offsets: np.ndarray, n_items: int, num_negatives: int,
                      seed: int) -> np.ndarray:
    """The sampler as it was before: it listed every never-seen item of the catalogue for each user."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(offsets) - 1, num_negatives), dtype=np.int64)
    seen = np.zeros(n_items + 1, dtype=bool)
    seen[0] = True
    for u in range(len(offsets) - 1):
        items = sequences[offsets[u]:offsets[u + 1]]
        seen[items] = True
        unseen = np.flatnonzero(~seen)
        if len(unseen) <= num_negatives:
            out[u, :len(unseen)] = unseen
        else:
            out[u] = rng.choice(unseen, size=num_negatives, replace=False)
        seen[items] = False
        seen[0] = True
    return out


@pytest.mark.parametrize(("n_items", "num_negatives"), [
    (40, 10),  # some users have fewer never-seen items than asked
    (5_000, 300),  # numpy draws by Floyd's algorithm (fewer than 10,000 candidates)
    (12_000, 300),  # numpy shuffles the tail of a range (10,000 to 50 x num_negatives candidates)
    (20_000, 300),  # Floyd again (more than 50 x num_negatives)
])
def test_negatives_are_the_draws_of_listing_the_catalogue(n_items: int, num_negatives: int) -> None:
    rng = np.random.default_rng(n_items)
    lengths = rng.integers(3, 60, size=50)
    lengths[:3] = [n_items - num_negatives + 1, n_items - num_negatives, n_items - 2]  # padded, exact, few
    seqs = [rng.choice(np.arange(1, n_items + 1), size=min(int(n), n_items), replace=False) for n in lengths]
    seqs[4] = np.concatenate([seqs[4], seqs[4][:2]])  # a repeated item (--keep-duplicates)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    sequences = np.concatenate(seqs).astype(np.min_scalar_type(n_items))
    got = sample_negatives(sequences, offsets, n_items, num_negatives, seed=5)
    assert got.dtype == np.min_scalar_type(n_items)
    assert np.array_equal(got, listing_negatives(sequences, offsets, n_items, num_negatives, seed=5))
    blocks = list(iter_negatives(sequences, offsets, n_items, num_negatives, seed=5, block=7))
    assert [len(b) for b in blocks[:2]] == [7, 7] and np.array_equal(np.concatenate(blocks), got)


def test_prepared_negatives_drawn_once_and_the_same_in_blocks() -> None:
    p = prepare(random_log(), k_core=2, num_negatives=50, seed=7)
    blocks = np.concatenate(list(p.negative_blocks()))  # drawn block by block, nothing kept
    assert p._negatives is None
    assert np.array_equal(blocks, p.negatives) and p.negatives is p.negatives
    assert np.array_equal(np.concatenate(list(p.negative_blocks())), blocks)


def test_ids_use_the_smallest_integer_type() -> None:
    small = prepare(make_log([(f"u{u}", f"i{(u + k) % 40}", 5, k) for u in range(60) for k in range(4)]),
                    k_core=0, num_negatives=5)
    assert small.sequences.dtype == small.negatives.dtype == np.uint8  # 40 items
    assert small.offsets.dtype == np.int64
    log = random_log(n_users=30, n_items=300, per_user=20)
    assert log.user_codes.dtype == np.uint8 and log.item_codes.dtype == np.uint16
    assert prepare(log, k_core=0, num_negatives=5).sequences.dtype == np.uint16


def test_padded_negative_count_with_duplicates() -> None:
    items = [f"i{k}" for k in range(10)]
    rows = [("heavy", i, 5, t) for t, i in enumerate(items[:8] + items[:8])]  # 8 distinct seen, 2 unseen
    rows += [("light", i, 5, 100 + t) for t, i in enumerate(items[5:])]
    p = prepare(make_log(rows), k_core=0, num_negatives=3, keep_duplicates=True)
    assert p.stats["users_with_padded_negatives"] == 1 == int((p.negatives == 0).any(axis=1).sum())


def test_log_holds_codes_and_distinct_ids() -> None:
    log = make_log([("u", "x", 5, 1), ("v", "y", 4, 2), ("u", "y", 3, 3)])
    assert log.user_ids == ["u", "v"] and log.item_ids == ["x", "y"]
    assert log.user_codes.tolist() == [0, 1, 0] and log.item_codes.tolist() == [0, 1, 1]
    assert log.users == ["u", "v", "u"] and log.items == ["x", "y", "y"] and len(log) == 3
    same = Log.from_codes(np.array([0, 1, 0]), ["u", "v"], np.array([0, 1, 1]), ["x", "y"], log.ratings,
                          log.timestamps)
    assert same.users == log.users and same.user_codes.dtype == np.uint8
    with pytest.raises(ValueError, match="same length"):
        Log(["u"], ["x", "y"], None, np.zeros(1))
