"""The fast path of the CSV-like readers (amazon-csv, RecBole .inter): pyarrow parses the file straight into integer
codes of distinct ids, so no raw id becomes a Python string per row. It gives up (None) whenever it would read a file
differently from the Python readers in slmrec_cli.data.readers, which then read it and name any bad line."""

from __future__ import annotations

import codecs
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

_PY_SPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())


class _Inspected:
    """A binary stream that watches what pyarrow's parser would see differently from the Python readers:
    a carriage return not followed by a line feed (pyarrow ends a row there, Python does not end the line)
    and bytes that are not UTF-8 (Python refuses any line with them, pyarrow only checks the columns it
    converts)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.closed = False
        self.plain = True
        self._cr = False  # the last block ended with \r
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if self.plain:
            self._check(data)
        return data

    def _check(self, data: bytes) -> None:
        if not data:
            lone_cr = self._cr
            try:
                self._utf8.decode(b"", final=True)
            except UnicodeDecodeError:
                self.plain = False
        else:
            lone_cr = (self._cr and data[:1] != b"\n") or (
                data.count(b"\r") - data.count(b"\r\n") - data.endswith(b"\r") > 0)
            self._cr = data.endswith(b"\r")
            if not data.isascii() or self._utf8.getstate()[0]:
                try:
                    self._utf8.decode(data)
                except UnicodeDecodeError:
                    self.plain = False
        if lone_cr:
            self.plain = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def _plain_ids(column: Any) -> tuple[np.ndarray, pa.Array] | None:
    """(codes, distinct ids) of a dictionary-encoded column, or None when an id is empty or has white space at
    an edge (the Python reader strips it, or refuses it)."""
    import pyarrow.compute as pc

    chunks = column.chunks
    ids = chunks[0].dictionary if chunks else None
    if ids is None or len(ids) == 0 or ids.null_count or pc.any(pc.equal(pc.binary_length(ids), 0)).as_py():
        return None
    space = f"[{_PY_SPACE}]"
    if pc.any(pc.match_substring_regex(ids, f"^{space}|{space}$")).as_py():
        return None
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks])
    return codes, ids


def _floats_fast(column: Any) -> np.ndarray | None:
    values = column.to_numpy()
    return values if column.null_count == 0 and np.isfinite(values).all() else None


def read_plain(opener: Callable[[], BinaryIO], n_cols: int, cols: dict[str, int], skip_rows: int,
               sep: str) -> tuple | None:
    """The log's columns read by pyarrow from the binary stream `opener()` opens: (user codes, distinct users, item
    codes, distinct items, ratings or None, timestamps), Log.from_codes' arguments. `cols` maps user_id, item_id,
    rating (optional), timestamp to column positions among `n_cols` fields separated by `sep`, after `skip_rows`
    header rows. None: the file has something pyarrow would read differently, or an error the Python reader names."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pcsv
    except ImportError:  # pragma: no cover - pyarrow is a dependency; without it the Python readers still work
        return None
    names = [f"c{i}" for i in range(n_cols)]
    ids = pa.dictionary(pa.int32(), pa.string())
    types = {names[i]: (ids if key in ("user_id", "item_id") else pa.float64()) for key, i in cols.items()}
    try:
        with opener() as raw:
            stream = _Inspected(raw)
            table = pcsv.read_csv(
                pa.PythonFile(stream, mode="r"),
                read_options=pcsv.ReadOptions(column_names=names, skip_rows=skip_rows),
                parse_options=pcsv.ParseOptions(delimiter=sep, quote_char=False, escape_char=False,
                                                newlines_in_values=False, ignore_empty_lines=True),
                convert_options=pcsv.ConvertOptions(column_types=types, include_columns=list(types),
                                                    null_values=[], strings_can_be_null=False,
                                                    quoted_strings_can_be_null=False, check_utf8=True))
            if stream.read(1) or not stream.plain:  # pyarrow read it all: the whole stream was checked
                return None
    except (pa.ArrowException, ValueError, OSError, EOFError, zlib.error):
        return None  # the Python reader names the line (or says the file cannot be read)
    if table.num_rows == 0:
        return None
    table = table.unify_dictionaries()
    users = _plain_ids(table.column(names[cols["user_id"]]))
    items = _plain_ids(table.column(names[cols["item_id"]]))
    times = _floats_fast(table.column(names[cols["timestamp"]]))
    ratings = _floats_fast(table.column(names[cols["rating"]])) if "rating" in cols else None
    if users is None or items is None or times is None or ("rating" in cols and ratings is None):
        return None
    return users[0], users[1], items[0], items[1], ratings, times
