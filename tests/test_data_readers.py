"""Readers: each format on a real-format fixture, every bad-input case, and fuzzing."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmrec_cli.data import FORMATS, Log, load_dataset, read_log
from slmrec_cli.errors import SlmrecError
from tests.helpers import run_cli

FIX = Path(__file__).parent / "fixtures" / "data"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- each reader on its fixture ---------------------------------------------------------------------------

def test_amazon_json() -> None:
    log = read_log(FIX / "amazon_reviews.json", "amazon-json")
    assert log.users == ["A3HPCRD9RX351S", "A1ZQKIFQ2QGPLV", "A3HPCRD9RX351S"]
    assert log.items == ["B0000530HU", "B0000530HU", "B00006L9LC"]
    assert log.ratings.tolist() == [5.0, 4.0, 2.0]
    assert log.timestamps.tolist() == [1252800000, 1291161600, 1252800000]
    assert log.timestamps.dtype == np.float64 and log.ratings.dtype == np.float64


def test_amazon_json_gz_detected_by_magic_bytes(tmp_path: Path) -> None:
    data = (FIX / "amazon_reviews.json").read_bytes()
    for name in ("reviews.json.gz", "reviews.json"):  # the name does not matter, the bytes do
        path = tmp_path / name
        path.write_bytes(gzip.compress(data))
        log = read_log(path, "amazon-json")
        assert log.users == read_log(FIX / "amazon_reviews.json", "amazon-json").users


def test_any_format_may_be_gzipped(tmp_path: Path) -> None:
    path = tmp_path / "ratings.dat"
    path.write_bytes(gzip.compress((FIX / "ratings.dat").read_bytes()))
    assert read_log(path, "movielens").items == ["1193", "661", "1357"]


def test_amazon_csv() -> None:
    log = read_log(FIX / "amazon_ratings.csv", "amazon-csv")
    assert log.items == ["0001713353", "0001713353", "0005164885"]  # item comes first in these files
    assert log.users == ["A1C6M8LCIX4M6M", "A1REUF3A1YCPHM", "A1C6M8LCIX4M6M"]
    assert log.ratings.tolist() == [5.0, 5.0, 3.0]


def test_movielens_dat_and_udata() -> None:
    dat = read_log(FIX / "ratings.dat", "movielens")
    assert dat.users == ["1", "1", "2"] and dat.items == ["1193", "661", "1357"]
    assert dat.timestamps.tolist() == [978300760, 978302109, 978298709]
    udata = read_log(FIX / "u.data", "movielens")
    assert udata.users == ["196", "186", "22"] and udata.items == ["242", "302", "377"]
    assert udata.ratings.tolist() == [3, 3, 1]


def test_movielens_detected_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_bytes((FIX / "ratings.dat").read_bytes())
    assert read_log(path, "movielens").items == ["1193", "661", "1357"]


def test_recbole_inter() -> None:
    log = read_log(FIX / "ratings.inter", "recbole")
    assert log.users == ["1m_1", "1m_1"]
    assert log.items == ["One Flew Over the Cuckoo's Nest (1975)", "James and the Giant Peach (1996)"]
    assert log.ratings.tolist() == [5, 3]


def test_recbole_without_rating_is_implicit() -> None:
    log = read_log(FIX / "implicit.inter", "recbole")
    assert log.ratings is None
    assert log.users == ["u1", "u2"] and log.items == ["I9", "I3"]  # columns found by name, not position
    assert log.timestamps.tolist() == [1.5, 0.5]


def test_generic_csv() -> None:
    opts = {"user_col": "userId", "item_col": "movieId", "rating_col": "rating", "time_col": "timestamp"}
    log = read_log(FIX / "interactions.csv", "csv", **opts)
    assert log.users == ["1", "1", "7"]
    assert log.items == ["31", "1029", "Heat, The"]  # quoted field with the delimiter inside
    assert log.ratings.tolist() == [2.5, 3.0, 4.0]
    implicit = read_log(FIX / "interactions.csv", "csv", **{**opts, "rating_col": None})
    assert implicit.ratings is None


def test_generic_csv_tab_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path, "x.tsv", "u\ti\tt\na\tb\t3\n")
    log = read_log(path, "csv", user_col="u", item_col="i", time_col="t", delimiter="\\t")
    assert (log.users, log.items, log.timestamps.tolist()) == (["a"], ["b"], [3.0])


SEQS = "u2 30 10 20\nu1 5 4 30\n"  # u2's items in line order, which is not id order


def test_sequences_keep_the_line_order(tmp_path: Path) -> None:
    log = read_log(write(tmp_path, "Beauty.txt", SEQS), "sequences")
    assert log.users == ["u2", "u2", "u2", "u1", "u1", "u1"]
    assert log.items == ["30", "10", "20", "5", "4", "30"]
    assert log.ratings is None  # implicit: no rating filter
    # the row number in the file: no ties to break, and the file order across users too
    assert log.timestamps.tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("text", [
    "u2\t30\t10\t20\nu1\t5\t4\t30\n",  # tabs
    "u2   30 \t 10  20\nu1 5    4 30\n",  # runs of white space
    "u2 30 10 20   \nu1 5 4 30\t \n",  # trailing white space
    "u2 30 10 20\r\nu1 5 4 30\r\n",  # CRLF
    "\n\nu2 30 10 20\n  \n\nu1 5 4 30",  # blank lines, no newline at the end
    "\ufeffu2 30 10 20\nu1 5 4 30\n",  # a BOM
])
def test_sequences_white_space_variants(tmp_path: Path, text: str) -> None:
    clean = read_log(write(tmp_path, "clean.txt", SEQS), "sequences")
    log = read_log(write(tmp_path, "x.txt", text), "sequences")
    assert (log.users, log.items, log.timestamps.tolist()) == (clean.users, clean.items, clean.timestamps.tolist())


def test_sequences_gzip(tmp_path: Path) -> None:
    path = tmp_path / "Beauty.txt"  # the name does not say gzip, the bytes do
    path.write_bytes(gzip.compress(SEQS.encode()))
    assert read_log(path, "sequences").items == ["30", "10", "20", "5", "4", "30"]


@pytest.mark.parametrize(("text", "pattern"), [
    ("u1 1 2 3\n\nu2\nu3 4 5\n", r"line 3: user 'u2' has no items;.*add the items or remove the line"),
    ("u1 1 2 3\nu2 4\t \r\n", None),  # one item is a sequence (k-core decides later)
    ("u1 1 2 3\nu2 4 5\nu1 6 7\n", r"line 3: user 'u1' is already on line 1; .*join the two lines"),
    ("\n \t\n\r\n", r"is empty: no interactions"),
])
def test_sequences_bad_input_names_the_line(tmp_path: Path, text: str, pattern: str | None) -> None:
    path = write(tmp_path, "seqs.txt", text)
    if pattern is None:
        assert read_log(path, "sequences").users == ["u1", "u1", "u1", "u2"]
        return
    with pytest.raises(SlmrecError, match=pattern) as err:
        read_log(path, "sequences")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("option", [["--user-col", "u"], ["--item-col", "i"], ["--rating-col", "r"],
                                    ["--time-col", "t"], ["--delimiter", "\\t"]])
def test_sequences_refuse_column_options(tmp_path: Path, capsys: pytest.CaptureFixture, option: list[str]) -> None:
    path = write(tmp_path, "seqs.txt", SEQS)
    code, _, err = run_cli(["prepare", "--input", path, "--format", "sequences", *option, "--out", tmp_path / "out"],
                           capsys)
    assert code == 2, err
    assert f"{option[0]}: --format sequences has no columns" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_sequences_prepare_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # every user's last item is the test target and the second last the validation target, in line order
    text = "7 c a b d\n3 d b c a\n9 b a d c e\n"
    path = write(tmp_path, "tiny.txt", text)
    code, _, err = run_cli(["prepare", "--input", path, "--format", "sequences", "--k-core", "1",
                            "--num-negatives", "1", "--out", tmp_path / "tiny"], capsys)
    assert code == 0, err
    data = load_dataset(tmp_path / "tiny")
    raw = data.item_raw_ids()  # index -> raw id
    assert data.user_raw_ids() == ["7", "3", "9"]
    assert [raw[int(i)] for i in data.split_target("test")] == ["d", "a", "e"]
    assert [raw[int(i)] for i in data.split_target("valid")] == ["b", "c", "c"]
    assert [[raw[int(i)] for i in data.split_input("test", u)] for u in range(3)] == [
        ["c", "a", "b"], ["d", "b", "c"], ["b", "a", "d", "c"]]
    assert data.meta["stats"]["interactions"] == 13 and data.meta["stats"]["implicit"]


# --- bad input --------------------------------------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SlmrecError, match="does not exist"):
        read_log(tmp_path / "nope.dat", "movielens")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(SlmrecError, match="not a file"):
        read_log(tmp_path, "movielens")


def test_unknown_format_lists_valid_ones() -> None:
    with pytest.raises(SlmrecError, match="unknown format 'parquet'.*amazon-json.*movielens.*recbole"):
        read_log(FIX / "u.data", "parquet")


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_file(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(SlmrecError, match="empty"):
        read_log(write(tmp_path, "empty", ""), fmt)
    with pytest.raises(SlmrecError, match="empty|no interactions"):
        read_log(write(tmp_path, "blank", "\n\n  \n"), fmt)


def test_header_only_is_empty(tmp_path: Path) -> None:
    with pytest.raises(SlmrecError, match="header but no rows"):
        read_log(write(tmp_path, "h.inter", "user_id:token\titem_id:token\ttimestamp:float\n"), "recbole")
    with pytest.raises(SlmrecError, match="header but no rows"):
        read_log(write(tmp_path, "h.csv", "user_id,item_id,timestamp\n"), "csv")


@pytest.mark.parametrize(
    ("fmt", "text", "pattern"),
    [
        ("amazon-csv", "i1,u1,5,100\ni2,u1,5,101\ni3,u1,5\n",
         r"line 3: expected 4 comma-separated fields, got 3"),
        ("movielens", "1::2::5::100\n\n1::3::5\n", r"line 3: expected 4 '::'-separated fields, got 3"),
        ("movielens", "1\t2\t5\t100\n1\t3\t5\t1\t1\n",
         r"line 2: expected 4 whitespace-separated fields, got 5"),
        ("recbole", "user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\nu\ti\n",
         r"line 3: expected 3 tab-separated fields, got 2"),
        ("csv", "user_id,item_id,timestamp\nu,i,1\nu,i\n",
         r"line 3: expected 3 fields like the header, got 2"),
        ("amazon-json", '{"reviewerID": "a", "asin": "b", "overall": 5, "unixReviewTime": 1}\n{"asin": \n',
         r"line 2: not valid JSON"),
        ("amazon-json", "[1, 2]\n", r"line 1: expected a JSON object, got list"),
    ],
)
def test_malformed_row_names_the_line(tmp_path: Path, fmt: str, text: str, pattern: str) -> None:
    path = write(tmp_path, "bad", text)
    with pytest.raises(SlmrecError, match=pattern) as err:
        read_log(path, fmt)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("fmt", "text", "pattern"),
    [
        ("amazon-json", '{"reviewerID": "a", "asin": "b", "unixReviewTime": 1}\n',
         r"line 1: missing field 'overall'"),
        ("recbole", "user_id:token\titem_id:token\trating:float\n", r"missing column 'timestamp'"),
        ("csv", "user,item_id,timestamp\nu,i,1\n", r"column 'user_id' not in the header.*--user-col"),
    ],
)
def test_missing_field_or_column(tmp_path: Path, fmt: str, text: str, pattern: str) -> None:
    with pytest.raises(SlmrecError, match=pattern):
        read_log(write(tmp_path, "bad", text), fmt)


def test_csv_missing_rating_column(tmp_path: Path) -> None:
    with pytest.raises(SlmrecError, match="column 'stars'.*--rating-col"):
        read_log(write(tmp_path, "x.csv", "user_id,item_id,timestamp\nu,i,1\n"), "csv", rating_col="stars")


@pytest.mark.parametrize(
    ("fmt", "good", "bad_rating", "bad_time"),
    [
        ("amazon-csv", "i,u,5,100", "i,u,five,100", "i,u,5,yesterday"),
        ("movielens", "1::2::5::100", "1::2::five::100", "1::2::5::yesterday"),
        ("recbole", "u\ti\t5\t100", "u\ti\tfive\t100", "u\ti\t5\tyesterday"),
        ("csv", "u,i,5,100", "u,i,five,100", "u,i,5,yesterday"),
        ("amazon-json", '{"reviewerID":"u","asin":"i","overall":5,"unixReviewTime":100}',
         '{"reviewerID":"u","asin":"i","overall":"five","unixReviewTime":100}',
         '{"reviewerID":"u","asin":"i","overall":5,"unixReviewTime":null}'),
    ],
)
def test_non_numeric_rating_and_timestamp(tmp_path: Path, fmt: str, good: str, bad_rating: str,
                                          bad_time: str) -> None:
    header = {"recbole": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n",
              "csv": "user_id,item_id,rating,timestamp\n"}.get(fmt, "")
    line = 3 if header else 2
    opts = {"rating_col": "rating"} if fmt == "csv" else {}
    for bad, what in ((bad_rating, "rating"), (bad_time, "timestamp")):
        path = write(tmp_path, "bad", f"{header}{good}\n{bad}\n{good}\n")
        with pytest.raises(SlmrecError, match=rf"line {line}: {what} .* is not a number"):
            read_log(path, fmt, **opts)


def test_non_finite_numbers_rejected(tmp_path: Path) -> None:
    with pytest.raises(SlmrecError, match="line 2: timestamp 'inf' is not a number"):
        read_log(write(tmp_path, "x", "1::2::5::1\n1::3::5::inf\n"), "movielens")


def test_amazon_csv_header_hint(tmp_path: Path) -> None:
    with pytest.raises(SlmrecError, match="line 1: rating 'rating'.*no header"):
        read_log(write(tmp_path, "x.csv", "item,user,rating,timestamp\ni,u,5,1\n"), "amazon-csv")


def test_empty_id_rejected(tmp_path: Path) -> None:
    with pytest.raises(SlmrecError, match="line 2: empty item id"):
        read_log(write(tmp_path, "x", "1::2::5::1\n1::  ::5::1\n"), "movielens")


def test_not_utf8_and_broken_gzip(tmp_path: Path) -> None:
    path = tmp_path / "bin.dat"
    path.write_bytes(b"1::2::5::1\n\xff\xfe\x00garbage\n")
    with pytest.raises(SlmrecError, match="line 2: not UTF-8"):
        read_log(path, "movielens")
    good = (FIX / "amazon_reviews.json").read_bytes()
    path.write_bytes(gzip.compress(good * 50)[:-40])  # truncated stream
    with pytest.raises(SlmrecError, match="cannot be read"):
        read_log(path, "amazon-json")


def test_bad_delimiter(tmp_path: Path) -> None:
    with pytest.raises(SlmrecError, match="--delimiter"):
        read_log(FIX / "interactions.csv", "csv", delimiter=";;")


# --- fuzzing: parse or SlmrecError, never anything else ---------------------------------------------------

def _parse_or_refuse(data: bytes, fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input"
        path.write_bytes(data)
        try:
            log = read_log(path, fmt)
        except SlmrecError as exc:
            assert "\n" not in str(exc)
            return
        assert isinstance(log, Log) and len(log) > 0
        assert np.isfinite(log.timestamps).all()
        assert all(u.strip() for u in log.users) and all(i.strip() for i in log.items)


FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
_token = st.text(alphabet=st.sampled_from("ab1 2.:\t,-\"{}e\\n"), max_size=6)
_number = st.one_of(st.integers(-5, 10**10).map(str), st.floats(allow_nan=True).map(str), _token)


@FUZZ
@given(data=st.binary(max_size=200), fmt=st.sampled_from(FORMATS))
def test_fuzz_random_bytes(data: bytes, fmt: str) -> None:
    _parse_or_refuse(data, fmt)


@FUZZ
@given(text=st.text(max_size=200), fmt=st.sampled_from(FORMATS))
def test_fuzz_random_text(text: str, fmt: str) -> None:
    _parse_or_refuse(text.encode("utf-8", "surrogatepass"), fmt)


@FUZZ
@given(rows=st.lists(st.tuples(_token, _token, _number, _number), min_size=1, max_size=6),
       fmt=st.sampled_from(FORMATS), n_fields=st.integers(2, 5))
def test_fuzz_row_shaped(rows: list[tuple[str, ...]], fmt: str, n_fields: int) -> None:
    sep = {"amazon-csv": ",", "movielens": "::", "recbole": "\t", "csv": ",", "sequences": " "}.get(fmt)
    if sep is None:
        template = '{{"reviewerID": "{}", "asin": "{}", "overall": {}, "unixReviewTime": {}}}'
        body = "\n".join(template.format(*r) for r in rows)
    else:
        body = "\n".join(sep.join((list(r) * 2)[:n_fields]) for r in rows)
    header = {"recbole": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n",
              "csv": "user_id,item_id,rating,timestamp\n"}.get(fmt, "")
    _parse_or_refuse((header + body).encode("utf-8", "surrogatepass"), fmt)
