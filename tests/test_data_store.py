"""The dataset directory: round trip, splits, refusal to overwrite, atomicity, tamper detection."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

import slmrec_cli
from slmrec_cli.data import Log, Prepared, content_hash, left_pad, load_dataset, prepare, save_dataset
from slmrec_cli.errors import SlmrecError

SOURCE = {"kind": "file", "path": "x.csv", "format": "csv", "file_sha256": "0" * 64}


def small_prepared(seed: int = 1) -> Prepared:
    # u: a b c d e in time order; v: c a b; w: b\tc (tab in raw id) e a; x: f g h i
    rows = [("u", "a", 1), ("u", "b", 2), ("v", "c", 2), ("u", "c", 3), ("v", "a", 4), ("u", "d", 5),
            ("w", "b\tc", 5), ("u", "e", 6), ("v", "b", 7), ("w", "e", 8), ("w", "a", 9),
            ("x", "f", 10), ("x", "g", 11), ("x", "h", 12), ("x", "i", 13)]
    users, items, times = zip(*rows, strict=True)
    log = Log(list(users), list(items), None, np.asarray(times, dtype=np.float64))
    return prepare(log, k_core=0, num_negatives=2, seed=seed)


def save(p: Prepared, out: Path, force: bool = False) -> dict:
    return save_dataset(p, out, name="small", source=SOURCE, options=p.options, force=force)


def test_round_trip_and_meta(tmp_path: Path) -> None:
    p = small_prepared()
    meta = save(p, tmp_path / "ds")
    names = sorted(f.name for f in (tmp_path / "ds").iterdir())
    assert names == ["item_map.tsv", "meta.json", "negatives.npy", "offsets.npy", "sequences.npy",
                     "user_map.tsv"]
    d = load_dataset(tmp_path / "ds")
    assert np.array_equal(d.sequences, p.sequences) and np.array_equal(d.offsets, p.offsets)
    assert np.array_equal(d.negatives, p.negatives)
    assert (d.n_users, d.n_items, d.name) == (4, 10, "small")
    assert d.item_raw_ids() == ["<pad>", *p.item_ids] and d.item_raw_ids()[0] == "<pad>"
    assert "b\tc" in d.item_raw_ids() and d.user_raw_ids() == ["u", "v", "w", "x"]
    on_disk = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert on_disk == meta == d.meta
    assert meta["format"] == "slmrec-dataset" and meta["format_version"] == 1
    assert meta["version"] == slmrec_cli.__version__ and meta["source"] == SOURCE
    assert len(meta["content_hash"]) >= 16 and d.content_hash == meta["content_hash"]
    assert set(meta["stats"]["dropped"]) >= {"by_rating", "duplicates", "by_k_core"}
    assert (tmp_path / "ds" / "item_map.tsv").read_text().splitlines()[:2] == ["index\traw_id", "1\ta"]
    assert np.load(tmp_path / "ds" / "negatives.npy", allow_pickle=False).shape == (4, 2)


def test_leave_one_out_splits(tmp_path: Path) -> None:
    save(small_prepared(), tmp_path / "ds")
    d = load_dataset(tmp_path / "ds")
    ids = d.item_raw_ids()
    u = d.user_raw_ids().index("u")

    def raw(a: np.ndarray) -> list[str]:
        return [ids[i] for i in a]

    assert raw(d.seq(u)) == ["a", "b", "c", "d", "e"]
    assert raw(d.train_history(u)) == ["a", "b", "c"]
    assert raw(d.split_input("valid", u)) == ["a", "b", "c"]
    assert raw(d.split_input("test", u)) == ["a", "b", "c", "d"]
    assert ids[d.split_target("valid")[u]] == "d" and ids[d.split_target("test")[u]] == "e"
    assert d.split_target("test").shape == (d.n_users,)
    counts = d.train_items_count()  # training histories: u a b c, v c, w b\tc, x f g
    assert counts.shape == (d.n_items + 1,) and counts[0] == 0
    seen = {ids[i]: int(c) for i, c in enumerate(counts) if c}
    assert seen == {"a": 1, "b": 1, "c": 2, "b\tc": 1, "f": 1, "g": 1}
    with pytest.raises(SlmrecError, match="unknown split 'train'"):
        d.split_target("train")


def test_refuses_non_dataset_dir_even_with_force(tmp_path: Path) -> None:
    out = tmp_path / "notes"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(SlmrecError, match="exists and is not an slmrec dataset; choose another --out"):
            save(small_prepared(), out, force=force)
    assert [f.name for f in out.iterdir()] == ["keep.txt"]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["notes"]  # no temp dir left behind


def test_refuses_existing_dataset_without_force(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    first = save(small_prepared(seed=1), out)
    with pytest.raises(SlmrecError, match="already exists; pass --force"):
        save(small_prepared(seed=2), out)
    assert load_dataset(out).content_hash == first["content_hash"]
    second = save(small_prepared(seed=2), out, force=True)
    assert load_dataset(out).content_hash == second["content_hash"] != first["content_hash"]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["ds"]


def test_empty_dir_is_fine(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    save(small_prepared(), tmp_path / "ds")
    assert load_dataset(tmp_path / "ds").n_users == 4


def test_nothing_written_when_saving_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("slmrec_cli.data.store.write_json", boom)
    with pytest.raises(OSError):
        save(small_prepared(), tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


def test_content_hash_tracks_data(tmp_path: Path) -> None:
    a = save(small_prepared(seed=1), tmp_path / "a")["content_hash"]
    b = save(small_prepared(seed=1), tmp_path / "b")["content_hash"]
    c = save(small_prepared(seed=5), tmp_path / "c")["content_hash"]  # other negatives
    assert a == b != c


@pytest.mark.parametrize("target", ["negatives.npy", "sequences.npy", "item_map.tsv"])
def test_load_detects_tampering(tmp_path: Path, target: str) -> None:
    out = tmp_path / "ds"
    save(small_prepared(), out)
    if target.endswith(".npy"):
        arr = np.load(out / target, allow_pickle=False)
        arr.flat[0] = arr.flat[1]
        np.save(out / target, arr, allow_pickle=False)
    else:
        (out / target).write_text((out / target).read_text().replace("\ta\n", "\tA\n"))
    with pytest.raises(SlmrecError, match="data files changed since prepare.*re-run slmrec prepare"):
        load_dataset(out)


def test_load_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SlmrecError, match=r"is not an slmrec dataset .*run `slmrec prepare` first"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(SlmrecError, match=r"plain is not an slmrec dataset \(no meta.json\)"):
        load_dataset(tmp_path / "plain")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text('{"format": "something-else"}')
    with pytest.raises(SlmrecError, match="not an slmrec dataset"):
        load_dataset(tmp_path / "other")
    save(small_prepared(), tmp_path / "ds")
    (tmp_path / "ds" / "offsets.npy").unlink()
    with pytest.raises(SlmrecError, match="offsets.npy is missing; re-run slmrec prepare"):
        load_dataset(tmp_path / "ds")
    save(small_prepared(), tmp_path / "ds2")
    (tmp_path / "ds2" / "negatives.npy").write_bytes(b"not numpy")
    with pytest.raises(SlmrecError, match="negatives.npy is not a valid .npy file"):
        load_dataset(tmp_path / "ds2")


def test_left_pad() -> None:
    out = left_pad([np.array([1, 2, 3]), np.array([4]), np.array([], dtype=np.int64)], 2)
    assert out.dtype == np.int64
    assert out.tolist() == [[2, 3], [0, 4], [0, 0]]
    assert left_pad([np.array([5, 6])], 4).tolist() == [[0, 0, 5, 6]]
    assert left_pad([], 3).shape == (0, 3)


def test_arrays_written_in_blocks_are_np_save_bytes(tmp_path: Path) -> None:
    """save_dataset writes int64 .npy files block by block (the negatives as they are drawn): the bytes are
    those np.save writes for the int64 arrays, and the content hash is the one computed from whole arrays."""
    p = small_prepared()
    assert p.sequences.dtype == np.uint8  # held in the smallest type, written as int64 (format version 1)
    meta = save(p, tmp_path / "streamed")
    assert p._negatives is None  # the negatives went to the file block by block
    for fname, arr in (("sequences.npy", p.sequences), ("offsets.npy", p.offsets), ("negatives.npy", p.negatives)):
        buf = io.BytesIO()
        np.save(buf, arr.astype(np.int64), allow_pickle=False)
        assert (tmp_path / "streamed" / fname).read_bytes() == buf.getvalue()
    d = load_dataset(tmp_path / "streamed")
    assert d.negatives.dtype == d.sequences.dtype == np.int64
    assert meta["content_hash"] == content_hash(
        {"sequences.npy": p.sequences, "offsets.npy": p.offsets, "negatives.npy": p.negatives},
        {"user_map.tsv": (tmp_path / "streamed" / "user_map.tsv").read_bytes(),
         "item_map.tsv": (tmp_path / "streamed" / "item_map.tsv").read_bytes()})
    save(p, tmp_path / "drawn")  # negatives already in memory now: the same files
    for f in (tmp_path / "streamed").iterdir():
        assert f.read_bytes() == (tmp_path / "drawn" / f.name).read_bytes()
