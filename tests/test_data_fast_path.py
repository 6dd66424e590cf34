"""The columnar fast path (pyarrow) reads exactly what the Python readers read, and the Python readers keep compact
columns, a block of rows at a time."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slmrec_cli.data import read_log, readers
from slmrec_cli.errors import SlmrecError
from tests.test_data_readers import FUZZ, _number, _token, write

# --- the columnar fast path (pyarrow) reads exactly what the Python readers read -------------------------------

def _python_only(monkeypatch: pytest.MonkeyPatch, path: Path, fmt: str) -> tuple | str:
    with monkeypatch.context() as m:
        m.setattr(readers, "_read_plain_fast", lambda *args: None)
        return _outcome(path, fmt)


def _outcome(path: Path, fmt: str) -> tuple | str:
    try:
        log = read_log(path, fmt)
    except SlmrecError as exc:
        return str(exc)
    ratings = None if log.ratings is None else log.ratings.tolist()
    return log.users, log.items, ratings, log.timestamps.tolist(), log.timestamps.dtype


AMAZON = "i1,u1,5.0,100\ni2,u1,4.0,101\ni1,u2,3,99\n"
INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu1\ti1\t5\t100\nu2\ti1\t1\t7\n"


@pytest.mark.parametrize(("fmt", "data"), [
    ("amazon-csv", AMAZON.encode()),
    ("amazon-csv", AMAZON.replace("\n", "\r\n").encode()),  # Windows line ends
    ("amazon-csv", b"\xef\xbb\xbf" + AMAZON.encode()),  # a BOM
    ("amazon-csv", gzip.compress(AMAZON.encode(), mtime=0)),
    ("amazon-csv", b"\n\n" + AMAZON.encode() + b"\n\n"),  # blank lines
    ("amazon-csv", b"i1,u1,5,100\n   \ni2,u1,4,1\n"),  # a line of spaces: skipped by Python
    ("amazon-csv", b"i1, u1 ,5,100\ni2,u1,4,1\n"),  # spaces around an id: stripped
    ("amazon-csv", "i1,u1\u3000,5,100\n".encode()),  # a unicode space at an edge
    ("amazon-csv", "caf\u00e9,\u00fc,5,100\n\u6f22,u,4,1e3\n".encode()),  # non-ASCII ids
    ("amazon-csv", b"a,b,1,2\rc,d,3,4\n"),  # a lone carriage return: one line of 7 fields for Python
    ("amazon-csv", b"a,b,1,2\r\r\nc,d,3,4\n"),
    ("amazon-csv", b"i,u,+5,1_000\ni,u,.5,-0\ni,u,5.,1E-3\n"),  # float() syntax (1_000 too)
    ("amazon-csv", b"i,u,5,100\ni,u,nan(1),100\n"),
    ("amazon-csv", b"i,u,5,100\ni,u,5,\n"),
    ("amazon-csv", b"i,u,5,100\ni,u,NULL,100\n"),
    ("amazon-csv", b'i,"u,x",5,1\n'),  # no quoting in these files
    ("amazon-csv", b'i,"u",5,1\n'),
    ("amazon-csv", b"i,u,5,100\n,u,5,1\n"),
    ("amazon-csv", b"item,user,rating,timestamp\ni,u,5,1\n"),
    ("amazon-csv", b"i,u,5,100\ni,u,5,1\n\xff\n"),
    ("amazon-csv", b"i,u,5,100\ni,u,5,1,2\n"),
    ("amazon-csv", b"i,u,5,100\ni,u,5"),  # no newline at the end
    ("amazon-csv", gzip.compress(AMAZON.encode() * 40, mtime=0)[:-30]),  # truncated gzip
    ("recbole", INTER.encode()),
    ("recbole", INTER.replace("\n", "\r\n").encode()),
    ("recbole", b"\n" + INTER.encode()),  # the header is not on line 1
    ("recbole", b"item_id:token\tx\tuser_id:token\ttimestamp\nI\t\xff\tU\t3\nJ\tq\tV\t4\n"),  # bad UTF-8, unread column
    ("recbole", b"item_id:token\tx\tuser_id:token\ttimestamp\nI\tp\tU\t3\nJ\tq\tV\t4\n"),
    ("recbole", b"user_id\titem_id\ttimestamp\n u\ti\t1\nu\t\t2\n"),
    ("recbole", b"user_id\titem_id\ttimestamp\nu\ti\t1\nu\ti\n"),
    ("recbole", b"user_id\titem_id\ttimestamp\n"),
])
def test_fast_path_reads_what_the_python_reader_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str,
                                                      data: bytes) -> None:
    path = tmp_path / "log"
    path.write_bytes(data)
    expected = _python_only(monkeypatch, path, fmt)
    got = _outcome(path, fmt)
    assert got == expected


def test_fast_path_is_taken_on_plain_files_only(tmp_path: Path) -> None:
    cols = {"item_id": 0, "user_id": 1, "rating": 2, "timestamp": 3}
    plain = write(tmp_path, "plain.csv", AMAZON)
    log = readers._read_plain_fast(plain, 4, cols, 0, ",")
    assert log is not None and not isinstance(log.user_ids, list)  # pyarrow's id table
    assert log.users == ["u1", "u1", "u2"] and log.item_codes.dtype == np.uint8
    for text in ("a,b,1,2\rc,d,3,4\n", "i, u,5,1\n", "i,u,5,inf\n", "i,u,five,1\n", "i,,5,1\n", "i,u,5\n"):
        assert readers._read_plain_fast(write(tmp_path, "odd.csv", text), 4, cols, 0, ",") is None, text


@FUZZ
@given(rows=st.lists(st.tuples(_token, _token, _number, _number), min_size=1, max_size=6),
       fmt=st.sampled_from(["amazon-csv", "recbole"]), ending=st.sampled_from(["\n", "\r\n", "\r"]))
def test_fuzz_fast_path_agrees_with_python_reader(rows: list[tuple[str, ...]], fmt: str, ending: str) -> None:
    sep = "," if fmt == "amazon-csv" else "\t"
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float" + ending if fmt == "recbole" else ""
    data = (header + ending.join(sep.join(r) for r in rows)).encode()
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as m:
        path = Path(tmp) / "log"
        path.write_bytes(data)
        got = _outcome(path, fmt)
        m.setattr(readers, "_read_plain_fast", lambda *args: None)
        assert got == _outcome(path, fmt)


# --- the Python readers keep compact columns, a block of rows at a time ----------------------------------------

def test_python_reader_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "".join(f"{u % 7}::{i % 11}::{1 + i % 5}::{i}\n" for u, i in zip(range(50), range(50, 100), strict=True))
    path = write(tmp_path, "ratings.dat", text)
    whole = read_log(path, "movielens")
    monkeypatch.setattr(readers._Rows, "BLOCK", 8)
    blocks = read_log(path, "movielens")
    assert (blocks.users, blocks.items) == (whole.users, whole.items)
    assert blocks.ratings.tolist() == whole.ratings.tolist() and blocks.timestamps.tolist() == whole.timestamps.tolist()
    assert isinstance(blocks.user_ids, list) and blocks.user_codes.dtype == np.uint8
    bad = write(tmp_path, "bad.dat", text + "3::4::x::1\n" + text)
    with pytest.raises(SlmrecError, match=r"line 51: rating 'x' is not a number"):
        read_log(bad, "movielens")
