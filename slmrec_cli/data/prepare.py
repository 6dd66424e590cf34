"""Turn a raw Log into leave-one-out sequences and fixed negatives, following shared/PROTOCOL.md."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slmrec_cli.data.log import Log, take_ids
from slmrec_cli.errors import SlmrecError

MIN_LENGTH = 3  # leave-one-out needs one training item, a validation target and a test target
NEGATIVE_BLOCK = 4096  # users per block of negatives: drawn, then handed on (written) before the next


@dataclass
class Prepared:
    """Sequences of re-indexed items per user, grouped by user index, each in time order.

    Item ids (in `sequences` and the negatives) use the smallest unsigned integer type that holds `n_items`.
    The negatives are drawn on demand: `negative_blocks()` yields them a block of users at a time (what
    `save_dataset` writes, so they are never all in memory); `negatives` draws them all into one array."""

    sequences: np.ndarray  # flat: user u's items are sequences[offsets[u]:offsets[u + 1]]
    offsets: np.ndarray  # int64, length n_users + 1
    user_ids: list[str]  # user_ids[u] = raw id of user u
    item_ids: list[str]  # item_ids[i - 1] = raw id of item i (0 is padding)
    num_negatives: int
    seed: int
    stats: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    _negatives: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def negatives(self) -> np.ndarray:
        """[n_users, num_negatives], 0-padded: the fixed negatives, all in memory."""
        if self._negatives is None:
            self._negatives = sample_negatives(self.sequences, self.offsets, self.n_items, self.num_negatives,
                                               self.seed)
        return self._negatives

    def negative_blocks(self) -> Iterator[np.ndarray]:
        """The rows of `negatives`, in user order, NEGATIVE_BLOCK users at a time."""
        if self._negatives is not None:
            for start in range(0, self.n_users, NEGATIVE_BLOCK):
                yield self._negatives[start:start + NEGATIVE_BLOCK]
        else:
            yield from iter_negatives(self.sequences, self.offsets, self.n_items, self.num_negatives, self.seed)


def _smallest(values: np.ndarray, max_value: int) -> np.ndarray:
    """Non-negative `values` (all <= max_value) in the smallest unsigned integer type that holds max_value."""
    return values.astype(np.min_scalar_type(max(int(max_value), 0)), copy=False)


def _core(users: np.ndarray, items: np.ndarray, k_user: int, k_item: int) -> np.ndarray:
    """Mask of interactions in the (k_user, k_item)-core: filter repeatedly until nothing changes."""
    keep = np.ones(len(users), dtype=bool)
    n_u = int(users.max(initial=0)) + 1
    n_i = int(items.max(initial=0)) + 1
    while True:
        u_count = np.bincount(users[keep], minlength=n_u)
        i_count = np.bincount(items[keep], minlength=n_i)
        new = keep & (u_count[users] >= k_user) & (i_count[items] >= k_item)
        if new.sum() == keep.sum():
            return keep
        keep = new


def _first_appearance(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(code -> rank of its first appearance in `codes`, -1 for absent codes; the codes in rank order)."""
    uniq, first = np.unique(codes, return_index=True)
    ranked = uniq[np.argsort(first, kind="stable")]
    mapping = np.full(int(codes.max(initial=0)) + 1, -1, dtype=np.int64)
    mapping[ranked] = np.arange(len(ranked), dtype=np.int64)
    return mapping, ranked


def iter_negatives(sequences: np.ndarray, offsets: np.ndarray, n_items: int, num_negatives: int, seed: int,
                   block: int = NEGATIVE_BLOCK) -> Iterator[np.ndarray]:
    """The fixed negatives, `block` users at a time ([b, num_negatives], smallest type holding n_items): per
    user, in index order, `num_negatives` distinct never-seen items drawn uniformly from one seeded rng; a
    user with fewer never-seen items gets all of them and 0 (padding) after.

    No user costs a pass over the catalogue: the draw is `rng.choice(n_unseen, num_negatives,
    replace=False)`, positions among the user's never-seen items in ascending order, which are then turned
    into item ids through the user's sorted seen items (binary search). That is the very draw of
    `rng.choice(never_seen_items, ...)`, which this code did before by listing the catalogue per user: numpy
    draws the same positions from the same state, so the same seed gives the same negatives as ever."""
    rng = np.random.default_rng(seed)
    bounds = np.asarray(offsets, dtype=np.int64).tolist()
    n_users = len(bounds) - 1
    dtype = np.min_scalar_type(int(n_items))
    for start in range(0, n_users, block):
        stop = min(start + block, n_users)
        out = np.zeros((stop - start, num_negatives), dtype=dtype)
        for u in range(start, stop):
            seen = np.unique(sequences[bounds[u]:bounds[u + 1]]).astype(np.int64)  # sorted, all in 1..n_items
            n_unseen = n_items - len(seen)
            if n_unseen <= num_negatives:
                ranks = np.arange(n_unseen, dtype=np.int64)  # all of them, the rest of the row stays 0
            else:
                ranks = rng.choice(n_unseen, size=num_negatives, replace=False)
            below = seen - np.arange(1, len(seen) + 1)  # below[j]: never-seen items smaller than seen[j]
            out[u - start, :len(ranks)] = ranks + 1 + np.searchsorted(below, ranks, side="right")
        yield out


def sample_negatives(sequences: np.ndarray, offsets: np.ndarray, n_items: int, num_negatives: int,
                     seed: int) -> np.ndarray:
    """Per user, `num_negatives` distinct never-seen items drawn uniformly, once, from one seeded rng: all
    blocks of `iter_negatives` in one [n_users, num_negatives] array (smallest type holding n_items)."""
    out = np.zeros((len(offsets) - 1, num_negatives), dtype=np.min_scalar_type(int(n_items)))
    start = 0
    for rows in iter_negatives(sequences, offsets, n_items, num_negatives, seed):
        out[start:start + len(rows)] = rows
        start += len(rows)
    return out


def _distinct_per_user(sequences: np.ndarray, lengths: np.ndarray, n_items: int) -> np.ndarray:
    """[n_users] number of distinct items in each user's sequence."""
    owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    key = np.sort(owner * (n_items + 1) + sequences)
    new = np.ones(len(key), dtype=bool)
    new[1:] = key[1:] != key[:-1]
    return np.bincount(key[new] // (n_items + 1), minlength=len(lengths))


def _check_options(k_core: int, num_negatives: int) -> None:
    if int(k_core) != k_core or k_core < 0:
        raise SlmrecError(f"--k-core {k_core} must be a whole number ≥ 0")
    if int(num_negatives) != num_negatives or num_negatives < 1:
        raise SlmrecError(f"--num-negatives {num_negatives} must be a whole number ≥ 1")


def _length_stats(lengths: np.ndarray, n_items: int) -> dict[str, Any]:
    total = int(lengths.sum())
    return {
        "users": len(lengths),
        "items": n_items,
        "interactions": total,
        "density": round(total / (len(lengths) * n_items), 6),
        "mean_length": round(float(lengths.mean()), 4),
        "median_length": float(np.median(lengths)),
        "min_length": int(lengths.min()),
        "max_length": int(lengths.max()),
    }


def prepare(log: Log, *, min_rating: float | None = 3.0, k_core: int = 5, keep_duplicates: bool = False,
            num_negatives: int = 999, seed: int = 42) -> Prepared:
    """Filter, order, de-duplicate, k-core, re-index and split leave-one-out; the fixed negatives are drawn
    when `Prepared.negatives` or `negative_blocks()` asks for them (always the same for the same seed)."""
    _check_options(k_core, num_negatives)
    if len(log) == 0:
        raise SlmrecError("the interaction log is empty; check the input file")
    dropped = {"by_rating": 0, "duplicates": 0, "by_k_core": 0, "too_short": 0}
    notes: list[str] = []
    if min_rating is not None and log.ratings is not None:
        rows = np.flatnonzero(log.ratings > min_rating)  # strictly greater: 3.0 keeps 4 and 5 stars
        dropped["by_rating"] = len(log) - len(rows)
        if len(rows) == 0:
            raise SlmrecError(f"no interactions left after --min-rating {min_rating:g} "
                              f"(all ratings ≤ {min_rating:g}); lower --min-rating")
    else:
        rows = np.arange(len(log), dtype=np.int64)

    # global order by (timestamp, original row): rows are ascending, so a stable sort keeps file order on ties
    rows = rows[np.argsort(log.timestamps[rows], kind="stable")]
    users, items = log.user_codes[rows], log.item_codes[rows]
    del rows

    if not keep_duplicates:
        key = users.astype(np.int64) * len(log.item_ids) + items
        _, first = np.unique(key, return_index=True)  # index of the first occurrence in time order
        keep = np.zeros(len(key), dtype=bool)
        keep[first] = True
        dropped["duplicates"] = int(len(key) - keep.sum())
        del key, first
        users, items = users[keep], items[keep]

    keep = _core(users, items, k_core, k_core)
    dropped["by_k_core"] = int(len(keep) - keep.sum())
    users, items = users[keep], items[keep]
    if len(users) == 0:
        raise SlmrecError(f"no interactions left after --k-core {k_core} (no users and items with "
                          f"{k_core}+ interactions each); lower --k-core")

    if k_core < MIN_LENGTH:
        keep = _core(users, items, MIN_LENGTH, k_core)
        dropped["too_short"] = int(len(keep) - keep.sum())
        users, items = users[keep], items[keep]
        notes.append(f"k-core {k_core} < {MIN_LENGTH}: dropped {dropped['too_short']} interactions of users "
                     f"with fewer than {MIN_LENGTH} (leave-one-out needs {MIN_LENGTH})")
        if len(users) == 0:
            raise SlmrecError(f"no user has the {MIN_LENGTH} interactions leave-one-out needs after "
                              f"--k-core {k_core}; use a larger dataset")

    # ids: users 0..U-1 and items 1..n by first appearance in the time-ordered log
    (user_map, user_order), (item_map, item_order) = _first_appearance(users), _first_appearance(items)
    n_users, n_items = len(user_order), len(item_order)
    if num_negatives > n_items - 1:
        raise SlmrecError(f"--num-negatives {num_negatives} is larger than the catalogue of {n_items} items "
                          f"allows (at most {n_items - 1}); lower it")
    new_users = _smallest(user_map[users], n_users - 1)
    new_items = _smallest(item_map[items] + 1, n_items)
    del users, items

    by_user = np.argsort(new_users, kind="stable")  # keeps time order inside each user
    sequences = new_items[by_user]
    del by_user, new_items
    lengths = np.bincount(new_users, minlength=n_users)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    user_ids, item_ids = take_ids(log.user_ids, user_order), take_ids(log.item_ids, item_order)

    # users with fewer never-seen items than num_negatives (their row of negatives ends in 0s)
    distinct = _distinct_per_user(sequences, lengths, n_items) if keep_duplicates else lengths
    short = int((distinct > n_items - num_negatives).sum())
    stats = {"rows_read": len(log), "implicit": log.ratings is None, **_length_stats(lengths, n_items),
             "dropped": dropped, "users_with_padded_negatives": short, "notes": notes}
    options = {"min_rating": min_rating, "k_core": int(k_core), "keep_duplicates": bool(keep_duplicates),
               "num_negatives": int(num_negatives), "seed": int(seed)}
    return Prepared(sequences, offsets, user_ids, item_ids, int(num_negatives), int(seed), stats, options)
