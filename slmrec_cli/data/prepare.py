"""Turn a raw Log into leave-one-out sequences and fixed negatives, following shared/PROTOCOL.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slmrec_cli.data.readers import Log
from slmrec_cli.errors import SlmrecError

MIN_LENGTH = 3  # leave-one-out needs one training item, a validation target and a test target


@dataclass
class Prepared:
    """Sequences of re-indexed items per user, grouped by user index, each in time order."""

    sequences: np.ndarray  # int64, flat: user u's items are sequences[offsets[u]:offsets[u + 1]]
    offsets: np.ndarray  # int64, length n_users + 1
    negatives: np.ndarray  # int64 [n_users, num_negatives], 0-padded
    user_ids: list[str]  # user_ids[u] = raw id of user u
    item_ids: list[str]  # item_ids[i - 1] = raw id of item i (0 is padding)
    stats: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def _factorize(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Codes in order of first appearance in `values`, and the code -> value list."""
    codes: dict[str, int] = {}
    out = np.fromiter((codes.setdefault(v, len(codes)) for v in values), dtype=np.int64, count=len(values))
    return out, list(codes)


def _core(users: np.ndarray, items: np.ndarray, k_user: int, k_item: int) -> np.ndarray:
    """Mask of interactions in the (k_user, k_item)-core: filter repeatedly until nothing changes."""
    keep = np.ones(len(users), dtype=bool)
    n_u = int(users.max(initial=-1)) + 1
    n_i = int(items.max(initial=-1)) + 1
    while True:
        u_count = np.bincount(users[keep], minlength=n_u)
        i_count = np.bincount(items[keep], minlength=n_i)
        new = keep & (u_count[users] >= k_user) & (i_count[items] >= k_item)
        if new.sum() == keep.sum():
            return keep
        keep = new


def _first_appearance(codes: np.ndarray) -> np.ndarray:
    """Map code -> rank of its first appearance in `codes` (-1 for absent codes)."""
    uniq, first = np.unique(codes, return_index=True)
    ranked = uniq[np.argsort(first, kind="stable")]
    mapping = np.full(int(codes.max(initial=-1)) + 1, -1, dtype=np.int64)
    mapping[ranked] = np.arange(len(ranked), dtype=np.int64)
    return mapping


def sample_negatives(sequences: np.ndarray, offsets: np.ndarray, n_items: int, num_negatives: int,
                     seed: int) -> np.ndarray:
    """Per user, `num_negatives` distinct never-seen items drawn uniformly, once, from one seeded rng."""
    n_users = len(offsets) - 1
    rng = np.random.default_rng(seed)
    out = np.zeros((n_users, num_negatives), dtype=np.int64)
    seen = np.zeros(n_items + 1, dtype=bool)
    seen[0] = True  # padding is never a candidate
    for u in range(n_users):
        items = sequences[offsets[u]:offsets[u + 1]]
        seen[items] = True
        unseen = np.flatnonzero(~seen)
        if len(unseen) <= num_negatives:
            out[u, : len(unseen)] = unseen  # fewer unseen items than asked: all of them, rest stays 0
        else:
            out[u] = rng.choice(unseen, size=num_negatives, replace=False)
        seen[items] = False
        seen[0] = True
    return out


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
    """Filter, order, de-duplicate, k-core, re-index, split leave-one-out and draw negatives."""
    _check_options(k_core, num_negatives)
    if len(log) == 0:
        raise SlmrecError("the interaction log is empty; check the input file")
    dropped = {"by_rating": 0, "duplicates": 0, "by_k_core": 0, "too_short": 0}
    notes: list[str] = []
    rows = np.arange(len(log), dtype=np.int64)

    if min_rating is not None and log.ratings is not None:
        rows = rows[log.ratings > min_rating]  # strictly greater: 3.0 keeps 4 and 5 stars
        dropped["by_rating"] = len(log) - len(rows)
        if len(rows) == 0:
            raise SlmrecError(f"no interactions left after --min-rating {min_rating:g} "
                              f"(all ratings ≤ {min_rating:g}); lower --min-rating")

    # global order by (timestamp, original row): rows are ascending, so a stable sort keeps file order on ties
    rows = rows[np.argsort(log.timestamps[rows], kind="stable")]
    user_codes, user_raw = _factorize(log.users)
    item_codes, item_raw = _factorize(log.items)
    users, items = user_codes[rows], item_codes[rows]

    if not keep_duplicates:
        key = users * len(item_raw) + items
        _, first = np.unique(key, return_index=True)  # index of the first occurrence in time order
        keep = np.zeros(len(key), dtype=bool)
        keep[first] = True
        dropped["duplicates"] = int(len(key) - keep.sum())
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
    user_map, item_map = _first_appearance(users), _first_appearance(items)
    new_users, new_items = user_map[users], item_map[items] + 1
    n_users, n_items = int(new_users.max()) + 1, int(new_items.max())
    if num_negatives > n_items - 1:
        raise SlmrecError(f"--num-negatives {num_negatives} is larger than the catalogue of {n_items} items "
                          f"allows (at most {n_items - 1}); lower it")

    by_user = np.argsort(new_users, kind="stable")  # keeps time order inside each user
    sequences = new_items[by_user].astype(np.int64)
    lengths = np.bincount(new_users, minlength=n_users)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    negatives = sample_negatives(sequences, offsets, n_items, num_negatives, seed)

    user_ids = [""] * n_users
    for code, idx in enumerate(user_map):
        if idx >= 0:
            user_ids[idx] = user_raw[code]
    item_ids = [""] * n_items
    for code, idx in enumerate(item_map):
        if idx >= 0:
            item_ids[idx] = item_raw[code]

    short = int((negatives == 0).any(axis=1).sum())  # users with fewer unseen items than num_negatives
    stats = {"rows_read": len(log), "implicit": log.ratings is None, **_length_stats(lengths, n_items),
             "dropped": dropped, "users_with_padded_negatives": short, "notes": notes}
    options = {"min_rating": min_rating, "k_core": int(k_core), "keep_duplicates": bool(keep_duplicates),
               "num_negatives": int(num_negatives), "seed": int(seed)}
    return Prepared(sequences, offsets, negatives, user_ids, item_ids, stats, options)
