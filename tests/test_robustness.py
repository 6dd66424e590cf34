"""Property-based: every input a user can hand slmrec either works or gets the one-line error; nothing crashes.
(Each reader's own fuzzing lives in test_data_readers.py; these cover the paths around it.)"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmrec_cli.config.files import load_config_file
from slmrec_cli.data import FORMATS, Log, load_dataset, prepare, read_log, save_dataset
from slmrec_cli.errors import SlmrecError
from slmrec_cli.runs import Run
from slmrec_cli.stages.recommend import parse_history
from tests.helpers import make_dataset

FUZZ = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_cell = st.text(alphabet=st.sampled_from("ab1 2.-\"';,|\t\n\\x"), max_size=5)


def refused_in_one_line(call) -> object | None:
    """call() or None when it raised SlmrecError with a one-line message; anything else propagates (a failure)."""
    try:
        return call()
    except SlmrecError as exc:
        assert "\n" not in str(exc) and str(exc).strip()
        return None


def in_file(data: bytes, name: str = "input"):
    tmp = tempfile.TemporaryDirectory()
    path = Path(tmp.name) / name
    path.write_bytes(data)
    return tmp, path


@FUZZ
@given(rows=st.lists(st.lists(_cell, min_size=1, max_size=5), min_size=0, max_size=6),
       delimiter=st.sampled_from([",", ";", "\t", "|", "\\t", "tab", "::"]),
       rating_col=st.sampled_from([None, "rating", "nope"]), header=st.booleans())
def test_csv_with_any_options(rows, delimiter, rating_col, header) -> None:
    sep = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
    lines = ([sep.join(["user_id", "item_id", "rating", "timestamp"])] if header else [])
    lines += [sep.join(r) for r in rows]
    tmp, path = in_file("\n".join(lines).encode())
    with tmp:
        log = refused_in_one_line(lambda: read_log(path, "csv", rating_col=rating_col, delimiter=delimiter))
    if log is not None:
        assert isinstance(log, Log) and len(log) > 0 and np.isfinite(log.timestamps).all()


@FUZZ
@given(text=st.text(max_size=300), fmt=st.sampled_from(FORMATS), cut=st.integers(0, 40))
def test_gzipped_and_truncated_gzip_inputs(text, fmt, cut) -> None:
    packed = gzip.compress(text.encode("utf-8", "surrogatepass"))
    tmp, path = in_file(packed[: max(1, len(packed) - cut)])
    with tmp:
        refused_in_one_line(lambda: read_log(path, fmt))


_user = st.sampled_from([f"u{i}" for i in range(6)])
_item = st.sampled_from([f"i{i}" for i in range(8)])


@FUZZ
@given(rows=st.lists(st.tuples(_user, _item, st.integers(0, 6), st.integers(0, 20)), min_size=1, max_size=60),
       k_core=st.integers(1, 6), min_rating=st.sampled_from([None, 0.0, 3.0, 5.0]), negatives=st.integers(0, 12))
def test_any_log_prepares_saves_and_loads_back_or_is_refused(rows, k_core, min_rating, negatives) -> None:
    users, items, ratings, times = zip(*rows, strict=True)
    log = Log(users=list(users), items=list(items), ratings=np.asarray(ratings, dtype=np.float64),
              timestamps=np.asarray(times, dtype=np.float64))
    prepared = refused_in_one_line(lambda: prepare(log, min_rating=min_rating, k_core=k_core,
                                                   num_negatives=negatives, seed=0))
    if prepared is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        meta = save_dataset(prepared, Path(tmp) / "ds", name="fuzz", source={"kind": "fuzz"})
        data = load_dataset(Path(tmp) / "ds")
        assert data.content_hash == meta["content_hash"] and data.n_users == prepared.n_users
        for u in range(data.n_users):
            assert len(data.train_history(u)) >= 1 and data.split_target("test")[u] >= 1


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("robust"))


@FUZZ
@given(name=st.sampled_from(["meta.json", "sequences.npy", "offsets.npy", "negatives.npy", "item_map.tsv",
                             "user_map.tsv"]), where=st.floats(0, 1), value=st.integers(1, 255),
       truncate=st.booleans())
def test_damaged_dataset_loads_or_is_refused(dataset, tmp_path_factory, name, where, value, truncate) -> None:
    import shutil

    copy = tmp_path_factory.mktemp("damaged") / "ds"
    shutil.copytree(dataset, copy)
    data = bytearray((copy / name).read_bytes())
    pos = min(int(where * len(data)), len(data) - 1)
    if truncate:
        data = data[:pos]
    else:
        data[pos] ^= value
    (copy / name).write_bytes(bytes(data))
    loaded = refused_in_one_line(lambda: load_dataset(copy))
    if loaded is not None:  # a change that leaves the data as it was (meta.json text, .npy header padding)
        original = load_dataset(dataset)
        assert loaded.content_hash == original.content_hash
        assert np.array_equal(loaded.sequences, original.sequences)
        assert np.array_equal(loaded.negatives, original.negatives)


_option = st.text(alphabet="ab-", min_size=1, max_size=6)  # no "_": two names never map to one
_value = st.booleans() | st.integers(-5, 5) | st.text(alphabet="ab 1", max_size=4)


def written(options: dict, suffix: str) -> str:
    """The options as a user would write them in a YAML or TOML file."""
    import yaml

    if suffix == ".toml":
        return "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in options.items())
    return yaml.safe_dump(options)


@FUZZ
@given(options=st.dictionaries(_option, _value, max_size=4), suffix=st.sampled_from([".yaml", ".yml", ".toml"]),
       junk=st.none() | st.text(max_size=200))
def test_any_config_file_reads_back_its_options_or_is_refused(options, suffix, junk) -> None:
    """A file written from options reads back as those options, each name as the command line's (- becomes _);
    any other text is refused in one line or read as a mapping of such names."""
    text = written(options, suffix) if junk is None else junk
    tmp, path = in_file(text.encode("utf-8", "surrogatepass"), f"opts{suffix}")
    with tmp:
        cfg = refused_in_one_line(lambda: load_config_file(path))
    if junk is None:
        assert cfg == {k.replace("-", "_"): v for k, v in options.items()}, text
    elif cfg is not None:
        assert all(isinstance(k, str) and "-" not in k for k in cfg), cfg


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                  max_size=3), max_leaves=8)


@FUZZ
@given(patch=st.dictionaries(st.sampled_from(["format", "format_version", "kind", "model", "data", "base_model"]),
                             _json, max_size=3), whole=st.one_of(st.none(), _json))
def test_any_run_config_loads_or_is_refused(patch, whole) -> None:
    good = {"format": "slmrec-run", "format_version": 1, "kind": "sasrec", "model": {"dim": 16},
            "data": {"name": "d", "path": "p", "hash": "h"}}
    cfg = whole if whole is not None else {**good, **patch}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(cfg))
        refused_in_one_line(lambda: Run.load(Path(tmp)))


@FUZZ
@given(text=st.text(max_size=60))
def test_any_history_parses_or_is_refused(text) -> None:
    index = {"10": 1, "20": 2, "a b": 3}
    out = refused_in_one_line(lambda: parse_history(text, index, "--history"))
    assert out is None or (len(out) > 0 and set(out.tolist()) <= {1, 2, 3})
