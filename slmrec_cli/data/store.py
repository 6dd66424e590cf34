"""The on-disk dataset directory written by `slmrec prepare`, and its loader."""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import slmrec_cli
from slmrec_cli.data.prepare import MIN_LENGTH, Prepared
from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import atomic_dir, read_json, write_json

FORMAT = "slmrec-dataset"
FORMAT_VERSION = 1
ARRAYS = ("sequences.npy", "offsets.npy", "negatives.npy")
MAPS = ("user_map.tsv", "item_map.tsv")
SPLITS = ("valid", "test")
PAD = "<pad>"

_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {v[1]: k for k, v in _ESCAPES.items()}


def _escape(text: str) -> str:
    # raw ids from a quoted CSV may hold tabs or newlines, which would break the TSV maps
    return "".join(_ESCAPES.get(c, c) for c in text)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _UNESCAPES.get(m.group(1), m.group(0)), text)


def _map_bytes(ids: list[str], start: int) -> bytes:
    lines = ["index\traw_id"] + [f"{i}\t{_escape(raw)}" for i, raw in enumerate(ids, start)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _parse_map(data: bytes, start: int, where: Path) -> list[str]:
    lines = data.decode("utf-8").rstrip("\n").split("\n")
    out = []
    for n, line in enumerate(lines[1:], start):
        index, _, raw = line.partition("\t")
        if index != str(n):
            raise SlmrecError(f"{where}: row {n - start + 2} has index {index!r}, expected {n}; "
                              "re-run slmrec prepare")
        out.append(_unescape(raw))
    return out


def read_item_map(path: Path) -> list[str]:
    """index -> raw item id from an item_map.tsv (index 0 is "<pad>")."""
    path = Path(path)
    if not path.exists():
        raise SlmrecError(f"{path} is missing; export again from a run whose dataset directory is present")
    return [PAD] + _parse_map(path.read_bytes(), 1, path)


def _payload_head(size: int, head: bytes, h: Any) -> None:
    """Start one file's entry in the content hash: the length of its payload (head + data), then the head."""
    h.update((len(head) + size).to_bytes(8, "little"))
    h.update(head)


def _array_head(name: str, shape: tuple[int, ...]) -> bytes:
    return f"{name}|<i8|{tuple(int(n) for n in shape)}|".encode()


def content_hash(arrays: dict[str, np.ndarray], maps: dict[str, bytes]) -> str:
    """sha256 (16 hex) over the arrays' dtype, shape and data, and the map files' bytes, in fixed order. The
    arrays count as int64, whatever type they are held in, so the hash names the data, not its memory type."""
    h = hashlib.sha256()
    for name in ARRAYS + MAPS:
        if name in arrays:
            data = np.ascontiguousarray(arrays[name], dtype="<i8").tobytes()  # independent of .npy padding
            _payload_head(len(data), _array_head(name, arrays[name].shape), h)
        else:
            data = maps[name]
            _payload_head(len(data), f"{name}|".encode(), h)
        h.update(data)
    return h.hexdigest()[:16]


def _write_int64_npy(path: Path, shape: tuple[int, ...], blocks: Iterable[np.ndarray], h: Any) -> None:
    """Write an int64 .npy file (the bytes np.save writes) block by block, adding it to the content hash."""
    shape = tuple(int(n) for n in shape)
    _payload_head(8 * math.prod(shape), _array_head(path.name, shape), h)
    written = 0
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": shape})
        for block in blocks:
            data = np.ascontiguousarray(block, dtype="<i8").tobytes()
            f.write(data)
            h.update(data)
            written += len(data)
    if written != 8 * math.prod(shape):
        raise RuntimeError(f"{path.name}: wrote {written} bytes, expected {8 * math.prod(shape)}")


def is_dataset(path: Path) -> bool:
    """True when `path` is a directory whose meta.json says it is an slmrec dataset."""
    meta = Path(path) / "meta.json"
    try:
        return meta.is_file() and read_json(meta).get("format") == FORMAT
    except (ValueError, OSError, AttributeError):
        return False


def _check_out(out: Path, force: bool) -> None:
    if not (out.exists() or out.is_symlink()):
        return
    if is_dataset(out):
        if not force:
            raise SlmrecError(f"{out} already exists; pass --force to replace it")
        return
    if out.is_dir() and not any(out.iterdir()):
        return  # an empty directory holds nothing to lose
    # --force never deletes a folder we did not write: `--out . --force` must not wipe a project
    raise SlmrecError(f"{out} exists and is not an slmrec dataset; choose another --out "
                      "(--force only replaces an slmrec dataset)")


def save_dataset(prepared: Prepared, out: Path, *, name: str, source: dict[str, Any],
                 options: dict[str, Any] | None = None, force: bool = False) -> dict[str, Any]:
    """Write the dataset directory atomically; returns its meta.json content."""
    out = Path(out)
    _check_out(out, force)
    # every array is written as int64 (format version 1, the same bytes as ever) in blocks, the negatives as
    # they are drawn: none of them is ever copied whole into int64 in memory
    step = 1 << 20
    seqs = prepared.sequences
    shapes = {"sequences.npy": seqs.shape, "offsets.npy": prepared.offsets.shape,
              "negatives.npy": (prepared.n_users, prepared.num_negatives)}
    blocks = {"sequences.npy": lambda: (seqs[i:i + step] for i in range(0, len(seqs), step)),
              "offsets.npy": lambda: [prepared.offsets], "negatives.npy": prepared.negative_blocks}
    maps = {"user_map.tsv": _map_bytes(prepared.user_ids, 0),
            "item_map.tsv": _map_bytes(prepared.item_ids, 1)}
    h = hashlib.sha256()
    with atomic_dir(out, force=force) as tmp:
        for fname in ARRAYS:
            _write_int64_npy(tmp / fname, shapes[fname], blocks[fname](), h)
        for fname in MAPS:
            _payload_head(len(maps[fname]), f"{fname}|".encode(), h)
            h.update(maps[fname])
            (tmp / fname).write_bytes(maps[fname])
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "source": source,
            "options": dict(prepared.options if options is None else options),
            "stats": prepared.stats,
            "content_hash": h.hexdigest()[:16],
            "n_users": prepared.n_users,
            "n_items": prepared.n_items,
            "version": slmrec_cli.__version__,
        }
        write_json(tmp / "meta.json", meta)
    return meta


def left_pad(seqs: list[np.ndarray], max_len: int) -> np.ndarray:
    """[B, max_len] int64: each sequence's most recent max_len items, right-aligned, 0 on the left."""
    if max_len < 1:
        raise ValueError(f"max_len must be ≥ 1, got {max_len}")
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for b, seq in enumerate(seqs):
        tail = np.asarray(seq, dtype=np.int64)[-max_len:]
        if len(tail):
            out[b, max_len - len(tail):] = tail
    return out


def pad_to_longest(seqs: list[np.ndarray], max_len: int | None = None) -> np.ndarray:
    """left_pad to the longest sequence of the batch (at most max_len, if given): no column holds only padding, and
    each sequence sits at the same positions from the right as under left_pad(seqs, max_len)."""
    longest = max((len(s) for s in seqs), default=1)
    return left_pad(seqs, max(1, longest if max_len is None else min(max_len, longest)))


def trim_windows(windows):
    """[B, max_len + 1] left-padded windows (numpy or torch) without the leading columns where no row has an input item
    yet (the last column is never an input): what a batch of short histories really costs."""
    real = (windows[:, :-1] != 0).any(0)
    first = int(real.nonzero()[0][0]) if real.any() else windows.shape[1] - 2
    return windows[:, first:]


def window_lengths(windows: np.ndarray) -> np.ndarray:
    """[N] input items of each [N, max_len + 1] window: what --group-by-length sorts by."""
    return (windows[:, :-1] != 0).sum(1)


def training_windows(data: SeqData, max_len: int) -> np.ndarray:
    """[N, max_len + 1] windows over each training history, cut from the end, overlapping by one item,
    so every position of the history (but the first) is a target exactly once."""
    rows = []
    for u in range(data.n_users):
        h = data.train_history(u)
        end = len(h)
        while end >= 2:
            rows.append(h[max(0, end - max_len - 1) : end])
            end -= max_len
    return left_pad(rows, max_len + 1)


def window_inputs_targets(windows):
    """[B, max_len + 1] windows (numpy or torch) → (inputs [B, max_len], targets [B, max_len]): slot t predicts item
    t + 1; a slot without an input item (padding) has target 0, so it never enters a loss."""
    inputs = windows[:, :-1]
    return inputs, windows[:, 1:] * (inputs != 0)


@dataclass
class SeqData:
    """A prepared dataset in memory: per-user item sequences with leave-one-out splits."""

    name: str
    path: Path
    meta: dict[str, Any]
    content_hash: str
    n_users: int
    n_items: int
    sequences: np.ndarray  # int64 flat, each user's full sequence incl. valid and test targets
    offsets: np.ndarray  # int64 [n_users + 1]
    negatives: np.ndarray  # int64 [n_users, num_negatives], 0-padded, shared by valid and test
    _maps: dict[str, bytes] = field(default_factory=dict, repr=False)
    _cache: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def num_negatives(self) -> int:
        return int(self.negatives.shape[1])

    def seq(self, u: int) -> np.ndarray:
        return self.sequences[self.offsets[u]:self.offsets[u + 1]]

    def train_history(self, u: int) -> np.ndarray:
        return self.seq(u)[:-2]

    def split_input(self, split: str, u: int) -> np.ndarray:
        """Validation input = training history; test input = training history + validation item."""
        _check_split(split)
        return self.seq(u)[:-2] if split == "valid" else self.seq(u)[:-1]

    def split_target(self, split: str) -> np.ndarray:
        """[n_users] target item per user: second last item (valid) or last item (test)."""
        _check_split(split)
        return self.sequences[self.offsets[1:] - (2 if split == "valid" else 1)]

    def train_items_count(self) -> np.ndarray:
        """[n_items + 1] interaction counts over training histories only (index 0 stays 0)."""
        ends = np.repeat(self.offsets[1:], self.lengths)
        in_train = np.arange(len(self.sequences)) < ends - 2
        return np.bincount(self.sequences[in_train], minlength=self.n_items + 1).astype(np.int64)

    def item_raw_ids(self) -> list[str]:
        """index -> raw item id; index 0 is "<pad>"."""
        if "items" not in self._cache:
            raw = _parse_map(self._maps["item_map.tsv"], 1, self.path / "item_map.tsv")
            self._cache["items"] = [PAD] + raw
        return self._cache["items"]

    def user_raw_ids(self) -> list[str]:
        """index -> raw user id."""
        if "users" not in self._cache:
            self._cache["users"] = _parse_map(self._maps["user_map.tsv"], 0, self.path / "user_map.tsv")
        return self._cache["users"]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise SlmrecError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise SlmrecError(f"{path} is not an slmrec dataset (no such directory); run `slmrec prepare` first")
    if not (path / "meta.json").is_file():
        raise SlmrecError(f"{path} is not an slmrec dataset (no meta.json); run `slmrec prepare` first")
    try:
        meta = read_json(path / "meta.json")
    except (ValueError, OSError):
        raise SlmrecError(f"{path}/meta.json is not valid JSON; re-run slmrec prepare") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SlmrecError(f"{path} is not an slmrec dataset (meta.json has no format {FORMAT!r}); "
                          "run `slmrec prepare` first")
    if meta.get("format_version") != FORMAT_VERSION:
        raise SlmrecError(f"{path} has dataset format version {meta.get('format_version')!r}; this slmrec "
                          f"reads version {FORMAT_VERSION}: re-run slmrec prepare")
    return meta


def _read_files(path: Path) -> tuple[dict[str, np.ndarray], dict[str, bytes]]:
    for fname in ARRAYS + MAPS:
        if not (path / fname).is_file():
            raise SlmrecError(f"{path}/{fname} is missing; re-run slmrec prepare")
    arrays = {}
    for fname in ARRAYS:
        try:
            arr = np.load(io.BytesIO((path / fname).read_bytes()), allow_pickle=False)
        except Exception:  # a damaged header raises ValueError, EOFError, SyntaxError, tokenize.TokenError, ...
            raise SlmrecError(f"{path}/{fname} is not a valid .npy file; re-run slmrec prepare") from None
        if arr.dtype.kind not in "iu":
            raise SlmrecError(f"{path}/{fname} holds {arr.dtype}, not integers; re-run slmrec prepare")
        arrays[fname] = arr.astype(np.int64, copy=False)
    return arrays, {fname: (path / fname).read_bytes() for fname in MAPS}


def _check_shapes(path: Path, meta: dict[str, Any], seqs: np.ndarray, offsets: np.ndarray,
                  negatives: np.ndarray) -> None:
    n_users, n_items = meta.get("n_users"), meta.get("n_items")
    ok = (
        isinstance(n_users, int) and isinstance(n_items, int)
        and seqs.ndim == 1 and offsets.shape == (n_users + 1,) and negatives.ndim == 2
        and negatives.shape[0] == n_users and offsets[0] == 0 and offsets[-1] == len(seqs)
        and bool((np.diff(offsets) >= MIN_LENGTH).all())
        and (len(seqs) == 0 or (seqs.min() >= 1 and seqs.max() <= n_items))
        and (negatives.size == 0 or (negatives.min() >= 0 and negatives.max() <= n_items))
    )
    if not ok:
        raise SlmrecError(f"{path}: dataset files are inconsistent with meta.json; re-run slmrec prepare")


def load_dataset(path: Path) -> SeqData:
    """Load and verify (content hash, shapes) a dataset directory written by save_dataset."""
    path = Path(path)
    meta = _read_meta(path)
    arrays, maps = _read_files(path)
    digest = content_hash(arrays, maps)
    if digest != meta.get("content_hash"):
        raise SlmrecError(f"{path}: data files changed since prepare (content hash {digest}, meta.json says "
                          f"{meta.get('content_hash')}); re-run slmrec prepare")
    seqs, offsets, negs = arrays["sequences.npy"], arrays["offsets.npy"], arrays["negatives.npy"]
    _check_shapes(path, meta, seqs, offsets, negs)
    return SeqData(name=str(meta.get("name", path.name)), path=path, meta=meta, content_hash=digest,
                   n_users=meta["n_users"], n_items=meta["n_items"], sequences=seqs, offsets=offsets,
                   negatives=negs, _maps=maps)
