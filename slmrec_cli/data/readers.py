"""Readers for interaction logs: every format becomes a `Log` in the file's original row order."""

from __future__ import annotations

import csv
import gzip
import json
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slmrec_cli.data.builtin import BUILTIN_DATASETS, builtin_dataset
from slmrec_cli.data.log import Log
from slmrec_cli.errors import SlmrecError

FORMATS = ("amazon-json", "amazon-csv", "movielens", "recbole", "csv", "sequences")
CSV_DEFAULTS: dict[str, Any] = {
    "user_col": "user_id",
    "item_col": "item_id",
    "rating_col": None,
    "time_col": "timestamp",
    "delimiter": ",",
}

__all__ = ["BUILTIN_DATASETS", "CSV_DEFAULTS", "FORMATS", "Log", "builtin_dataset", "read_log"]


class _Rows:
    """Column accumulator shared by the Python readers. Every BLOCK rows it checks and converts what it has
    (empty ids, numbers: errors name the line) into compact columns (id codes, float64), so a large log never
    sits in memory as Python strings."""

    BLOCK = 1 << 16

    def __init__(self, path: Path, with_ratings: bool) -> None:
        self.path = path
        self.with_ratings = with_ratings
        self.n = 0  # rows added so far
        self._memo: tuple[dict[str, int], dict[str, int]] = ({}, {})  # raw user / item id -> code
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._start_block()

    def _start_block(self) -> None:
        self.lines: list[int] = []
        self.users: list[str] = []
        self.items: list[str] = []
        self.ratings: list[Any] | None = [] if self.with_ratings else None
        self.times: list[Any] = []

    def add(self, line: int, user: str, item: str, rating: Any, ts: Any) -> None:
        self.lines.append(line)
        self.users.append(user)
        self.items.append(item)
        if self.ratings is not None:
            self.ratings.append(rating)
        self.times.append(ts)
        self.n += 1
        if len(self.lines) >= self.BLOCK:
            self._flush()

    def _floats(self, values: list[Any], what: str) -> np.ndarray:
        try:
            arr = np.asarray(values, dtype=np.float64)
            if np.isfinite(arr).all():
                return arr
        except (ValueError, TypeError, OverflowError):
            pass
        # slow path: find the first bad value to name its line
        checked = [_num(v, what, self.path, n) for v, n in zip(values, self.lines, strict=True)]
        return np.asarray(checked, dtype=np.float64)

    def _flush(self) -> None:
        if not self.lines:
            return
        for ids, name in ((self.users, "user id"), (self.items, "item id")):
            if "" in ids:
                line = self.lines[ids.index("")]
                raise SlmrecError(f"{self.path}: line {line}: empty {name}; fix or remove the row")
        ratings = None if self.ratings is None else self._floats(self.ratings, "rating")
        times = self._floats(self.times, "timestamp")
        codes = [np.fromiter((memo.setdefault(v, len(memo)) for v in ids), dtype=np.uint32, count=len(ids))
                 for memo, ids in zip(self._memo, (self.users, self.items), strict=True)]
        self._parts.append((*codes, ratings, times))
        self._start_block()

    def log(self, what: str = "is empty") -> Log:
        self._flush()
        if not self._parts:
            raise SlmrecError(f"{self.path} {what}: no interactions to read; check the file and --format")
        users, items, ratings, times = (None if p[0] is None else np.concatenate(p)
                                        for p in zip(*self._parts, strict=True))
        user_ids, item_ids = (list(memo) for memo in self._memo)
        return Log.from_codes(users, user_ids, items, item_ids, ratings, times)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _id(value: Any, what: str, path: Path, line: int) -> str:
    # JSON may carry numeric ids; bools and containers are not ids
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SlmrecError(f"{path}: line {line}: {what} {_short(value)} is not a string; fix the row")
    text = str(value).strip()
    if not text:
        raise SlmrecError(f"{path}: line {line}: empty {what}; fix or remove the row")
    return text


def _num(value: Any, what: str, path: Path, line: int) -> float:
    number = None
    if not isinstance(value, bool) and isinstance(value, (str, int, float)):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            pass
    if number is None or not math.isfinite(number):
        raise SlmrecError(f"{path}: line {line}: {what} {_short(value)} is not a number; fix the row")
    return number


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _raw_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line with its newline); decoded per line so errors name the line."""
    line = 0
    try:
        # gzip is detected by its magic bytes, not by the file name
        with gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb") as f:
            for line, data in enumerate(f, 1):
                text = data.decode("utf-8")
                yield line, text.removeprefix("\ufeff") if line == 1 else text
    except UnicodeDecodeError:
        raise SlmrecError(f"{path}: line {line}: not UTF-8 text; is --format right?") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise SlmrecError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); check the file") from None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line ending), blank lines skipped."""
    for line, text in _raw_lines(path):
        text = text.rstrip("\r\n")
        if text.strip():
            yield line, text


def _fields(path: Path, line: int, text: str, sep: str, n: int, name: str) -> list[str]:
    parts = text.split(sep) if sep else text.split()
    if len(parts) != n:
        raise SlmrecError(f"{path}: line {line}: expected {n} {name}-separated fields, got {len(parts)}")
    return [p.strip() for p in parts]


# --- the columnar fast path (pyarrow) ----------------------------------------------------------------------
# Plain delimited files (amazon-csv, recbole .inter) are parsed by pyarrow's multi-threaded CSV reader, ids
# dictionary-encoded per block and unified at the end: no Python string per row. It is only a shortcut: it
# returns None for anything it would read differently from the Python readers (whose rules are the reference),
# and every error message comes from the Python reader, which then reads the file again and names the line.

# what str.strip() removes: a raw id with one of these at an edge is read by the Python reader
def _read_plain_fast(path: Path, n_cols: int, cols: dict[str, int], skip_rows: int, sep: str) -> Log | None:
    """The file read by pyarrow (slmrec_cli.data.fast_csv): `cols` maps user_id, item_id, rating (optional),
    timestamp to column positions among `n_cols` fields separated by `sep`, after `skip_rows` header rows. None: use
    the Python reader (the file has something pyarrow would read differently, or an error to name)."""
    from slmrec_cli.data.fast_csv import read_plain

    opener = (lambda: gzip.open(path, "rb")) if _is_gzip(path) else (lambda: open(path, "rb"))  # noqa: SIM115
    columns = read_plain(opener, n_cols, cols, skip_rows, sep)
    return None if columns is None else Log.from_codes(*columns)


def _read_amazon_json(path: Path) -> Log:
    rows = _Rows(path, with_ratings=True)
    for line, text in _lines(path):
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SlmrecError(f"{path}: line {line}: not valid JSON ({msg}); is --format right?") from None
        if not isinstance(obj, dict):
            raise SlmrecError(f"{path}: line {line}: expected a JSON object, got {type(obj).__name__}")
        for key in ("reviewerID", "asin", "overall", "unixReviewTime"):
            if key not in obj:
                raise SlmrecError(f"{path}: line {line}: missing field '{key}'; amazon-json needs "
                                  "reviewerID, asin, overall and unixReviewTime")
        user, item = _id(obj["reviewerID"], "user id", path, line), _id(obj["asin"], "item id", path, line)
        rating = _num(obj["overall"], "rating", path, line)
        rows.add(line, user, item, rating, _num(obj["unixReviewTime"], "timestamp", path, line))
    return rows.log()


def _read_amazon_csv(path: Path) -> Log:
    fast = _read_plain_fast(path, 4, {"item_id": 0, "user_id": 1, "rating": 2, "timestamp": 3}, 0, ",")
    if fast is not None:
        return fast
    rows = _Rows(path, with_ratings=True)
    for line, text in _lines(path):
        item, user, rating, ts = _fields(path, line, text, ",", 4, "comma")
        if not rows.n:
            try:
                _num(rating, "rating", path, line), _num(ts, "timestamp", path, line)
            except SlmrecError as exc:
                # the usual cause on the first row is a header, which these files do not have
                hint = "amazon-csv files have no header: item,user,rating,timestamp"
                raise SlmrecError(f"{exc} ({hint})") from None
        rows.add(line, user, item, rating, ts)
    return rows.log()


def _read_movielens(path: Path) -> Log:
    rows = _Rows(path, with_ratings=True)
    sep = None
    for line, text in _lines(path):
        if sep is None:
            # ratings.dat uses '::', u.data tabs: decided by the first row's content, not the name
            sep = "::" if "::" in text else ""
        name = "'::'" if sep else "whitespace"
        user, item, rating, ts = _fields(path, line, text, sep, 4, name)
        rows.add(line, user, item, rating, ts)
    return rows.log()


def _read_recbole(path: Path) -> Log:
    rows: _Rows | None = None
    cols: dict[str, int] = {}
    n_cols = 0
    for line, text in _lines(path):
        if rows is None:
            names = [c.strip().split(":", 1)[0] for c in text.split("\t")]
            dup = sorted({c for c in names if names.count(c) > 1})
            if dup:
                raise SlmrecError(f"{path}: line {line}: column {dup[0]!r} appears twice in the header")
            for need in ("user_id", "item_id", "timestamp"):
                if need not in names:
                    raise SlmrecError(f"{path}: line {line}: missing column '{need}' in the header "
                                      f"(found {', '.join(names)}); .inter files need user_id, item_id, "
                                      "timestamp")
            cols = {c: i for i, c in enumerate(names)}
            n_cols = len(names)
            if line == 1:  # the header is the first line: pyarrow reads the rows after it
                wanted = {c: cols[c] for c in ("user_id", "item_id", "rating", "timestamp") if c in cols}
                fast = _read_plain_fast(path, n_cols, wanted, 1, "\t")
                if fast is not None:
                    return fast
            rows = _Rows(path, with_ratings="rating" in cols)
            continue
        parts = _fields(path, line, text, "\t", n_cols, "tab")
        rating = parts[cols["rating"]] if "rating" in cols else None
        rows.add(line, parts[cols["user_id"]], parts[cols["item_id"]], rating, parts[cols["timestamp"]])
    if rows is None:
        raise SlmrecError(f"{path} is empty: no header and no interactions; check the file and --format")
    return rows.log("has a header but no rows")


def _read_sequences(path: Path) -> Log:
    """One user per line: the user id, then its item ids in time order, separated by any white space (the files
    of S3-Rec, E4SRec, FMLP-Rec). No ratings (implicit: every row kept) and no timestamps: the line order is the
    time order."""
    rows = _Rows(path, with_ratings=False)
    first_line: dict[str, int] = {}  # user id -> its line: a second line for a user is refused, never merged
    for line, text in _lines(path):
        user, *items = text.split()
        if not items:
            raise SlmrecError(f"{path}: line {line}: user {_short(user)} has no items; each line is a user id "
                              "then its item ids in time order: add the items or remove the line")
        seen = first_line.setdefault(user, line)
        if seen != line:
            raise SlmrecError(f"{path}: line {line}: user {_short(user)} is already on line {seen}; this format "
                              "has one line per user: join the two lines in time order")
        # timestamp = row number in the file: line order within a user (no tie rule needed) and across users, so
        # first-appearance ids keep the file's own numbering (S3-Rec's 1..n); per-user positions would renumber
        for item in items:
            rows.add(line, user, item, None, rows.n)
    return rows.log()


def _delimiter(value: str) -> str:
    value = {"\\t": "\t", "tab": "\t"}.get(value, value)
    if len(value) != 1:
        raise SlmrecError(f"--delimiter {value!r} must be a single character (use '\\t' for tab)")
    return value


def _read_csv(path: Path, user_col: str, item_col: str, rating_col: str | None, time_col: str,
              delimiter: str) -> Log:
    rows: _Rows | None = None
    idx: list[int] = []
    header: list[str] = []
    # csv.reader over our decoded lines: quoted fields may span lines, line_num stays a file line number
    reader = csv.reader((text for _, text in _raw_lines(path)), delimiter=_delimiter(delimiter))
    try:
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            if rows is None:
                header = [c.strip() for c in record]
                wanted = [("--user-col", user_col), ("--item-col", item_col), ("--time-col", time_col)]
                if rating_col is not None:
                    wanted.append(("--rating-col", rating_col))
                for flag, col in wanted:
                    if col not in header:
                        shown = ", ".join(c if c.isprintable() else _short(c) for c in header)  # one line
                        raise SlmrecError(f"{path}: line {reader.line_num}: column {col!r} not in the "
                                          f"header ({shown}); pass {flag}")
                idx = [header.index(col) for _, col in wanted]
                rows = _Rows(path, with_ratings=rating_col is not None)
                continue
            if len(record) != len(header):
                raise SlmrecError(f"{path}: line {reader.line_num}: expected {len(header)} fields like "
                                  f"the header, got {len(record)}; check --delimiter")
            vals = [record[i].strip() for i in idx]
            rows.add(reader.line_num, vals[0], vals[1], vals[3] if len(vals) > 3 else None, vals[2])
    except csv.Error as exc:
        raise SlmrecError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None
    if rows is None:
        raise SlmrecError(f"{path} is empty: no header and no interactions; check the file and --format")
    return rows.log("has a header but no rows")


def read_log(path: Path, fmt: str, **csv_options: Any) -> Log:
    """Read an interaction log. `csv_options` (user_col, item_col, rating_col, time_col, delimiter) are
    used by the `csv` format only."""
    unknown = set(csv_options) - set(CSV_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown csv options: {sorted(unknown)}")
    if fmt not in FORMATS:
        raise SlmrecError(f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise SlmrecError(f"{path} does not exist; check the path")
    if not path.is_file():
        raise SlmrecError(f"{path} is not a file; pass the interaction file itself")
    if path.stat().st_size == 0:
        raise SlmrecError(f"{path} is empty: no interactions to read; check the file")
    if fmt == "amazon-json":
        return _read_amazon_json(path)
    if fmt == "amazon-csv":
        return _read_amazon_csv(path)
    if fmt == "movielens":
        return _read_movielens(path)
    if fmt == "recbole":
        return _read_recbole(path)
    if fmt == "sequences":
        return _read_sequences(path)
    opts = {**CSV_DEFAULTS, **{k: v for k, v in csv_options.items() if v is not None or k == "rating_col"}}
    return _read_csv(path, **opts)
