"""The raw interaction log every reader returns: one entry per data row, in file order, ids held factorized."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa


def _smallest(codes: np.ndarray, n: int) -> np.ndarray:
    """`codes` (all in 0..n-1) in the smallest unsigned integer type that holds n - 1."""
    return codes.astype(np.min_scalar_type(max(n - 1, 0)), copy=False)


def _factorize(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Codes in order of first appearance in `values`, and the code -> value list."""
    memo: dict[str, int] = {}
    codes = np.fromiter((memo.setdefault(v, len(memo)) for v in values), dtype=np.int64, count=len(values))
    return _smallest(codes, len(memo)), list(memo)


Ids = Union[list[str], "pa.Array"]  # distinct raw ids: a list, or a pyarrow string array from the fast reader


def take_ids(ids: Ids, codes: np.ndarray) -> list[str]:
    """[ids[c] for c in codes], for either kind of id table."""
    if isinstance(ids, list):
        return [ids[c] for c in codes.tolist()]
    return ids.take(np.asarray(codes, dtype=np.int64)).to_pylist()


class Log:
    """Raw interactions, one entry per data row, in file order (row order breaks timestamp ties later).

    Ids are held factorized, so a log of tens of millions of rows stays compact: row r's user is
    `user_ids[user_codes[r]]`, where `user_ids` lists each distinct raw id once (in order of first appearance)
    and the codes use the smallest unsigned integer type that holds them. `Log(users, items, ...)` takes the
    raw ids per row, as before; `users` and `items` give them back (for small logs and tests)."""

    def __init__(self, users: Sequence[str], items: Sequence[str], ratings: np.ndarray | None,
                 timestamps: np.ndarray) -> None:
        user_codes, user_ids = _factorize(users)
        item_codes, item_ids = _factorize(items)
        self._set(user_codes, user_ids, item_codes, item_ids, ratings, timestamps)

    @classmethod
    def from_codes(cls, user_codes: np.ndarray, user_ids: Ids, item_codes: np.ndarray, item_ids: Ids,
                   ratings: np.ndarray | None, timestamps: np.ndarray) -> Log:
        log = cls.__new__(cls)
        log._set(_smallest(user_codes, len(user_ids)), user_ids, _smallest(item_codes, len(item_ids)), item_ids,
                 ratings, timestamps)
        return log

    def _set(self, user_codes: np.ndarray, user_ids: Ids, item_codes: np.ndarray, item_ids: Ids,
             ratings: np.ndarray | None, timestamps: np.ndarray) -> None:
        self.user_codes, self.user_ids, self.item_codes, self.item_ids = user_codes, user_ids, item_codes, item_ids
        self.ratings = ratings  # float64, or None for implicit logs
        self.timestamps = timestamps  # float64
        n = len(user_codes)
        if len(item_codes) != n or len(timestamps) != n or (ratings is not None and len(ratings) != n):
            raise ValueError("Log columns must have the same length")

    @property
    def users(self) -> list[str]:
        return take_ids(self.user_ids, self.user_codes)

    @property
    def items(self) -> list[str]:
        return take_ids(self.item_ids, self.item_codes)

    def __len__(self) -> int:
        return len(self.user_codes)
