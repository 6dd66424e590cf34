"""Teacher feature cache (offline mode): the frozen teacher's block features per training example, computed once.

A cache is a directory: `features.npy` ([examples, teacher layers, d1], or [examples, layers, T, d1] when every
position is aligned), bf16 by default (stored as its uint16 bits: numpy has no bfloat16) or fp32, and `cache.json`
(what it was built from: its key, dtype and shape). It is written one batch at a time into a temporary directory that
is renamed when complete, and read through a memory map one batch of rows at a time, so neither building nor training
holds the whole cache in RAM (at hidden 4096 and B = 4 a bf16 cache is 32 KiB per example; docs/scaling.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch

from slmrec_cli import __version__, ui
from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import file_sha256, read_json, write_json
from slmrec_cli.models.adapter import ADAPTER, ADAPTER_WEIGHTS
from slmrec_cli.models.build import ID_TABLE, PROJECTIONS

FEATURES, META = "features.npy", "cache.json"
OLD_FILE = "teacher_features.safetensors"  # the single-file fp32 cache of earlier slmrec (cache format 1)
FORMAT_VERSION = "2"
DTYPES = {"bf16": (np.uint16, torch.bfloat16), "fp32": (np.float32, torch.float32)}


def teacher_fingerprint(run: Path) -> str:
    """Hash of what determines the teacher's outputs: its config and trained weights."""
    run = Path(run)
    h = hashlib.sha256()
    for name in ("config.json", PROJECTIONS, f"{ADAPTER}/{ADAPTER_WEIGHTS}", ID_TABLE):  # names hashed as written
        path = run / name
        if not path.exists():
            raise SlmrecError(f"--teacher {run} has no {name}; it is not a finished teacher run (train it first)")
        h.update(name.encode() + file_sha256(path).encode())
    return h.hexdigest()[:32]


def cache_key(teacher_hash: str, data_hash: str, targets: str, max_len: int, pairs: list,
              positions: str = "last", dtype: str = "bf16", autocast: str = "fp32",
              quantization: str = "none") -> dict[str, str]:
    """What the cached features depend on. positions: "last" (the last slot of each example) or "history" (every
    slot, for causal targets aligned at every position); dtype: how they are stored; autocast: the precision the
    teacher ran under (the live teacher's, so cached and live features agree) and how its base was loaded (none, 8bit,
    4bit); the slmrec version and cache format."""
    if dtype not in DTYPES:
        raise SlmrecError(f"--teacher-cache-dtype {dtype}: pass one of {', '.join(DTYPES)}")
    return {"teacher_hash": teacher_hash, "data_hash": data_hash, "targets": targets, "max_len": str(max_len),
            "positions": positions, "dtype": dtype, "autocast": autocast, "teacher_quantization": quantization,
            "version": __version__,
            "format_version": FORMAT_VERSION, "teacher_layers": ",".join(str(t) for t, _ in pairs)}


class FeatureCache:
    """A built cache, memory-mapped: rows(indices) reads only those examples' features (and only the teacher layers
    the blocks need), as a [len(indices), blocks, (T,) d1] tensor in the stored dtype."""

    def __init__(self, folder: Path, meta: dict, select: list[int] | None) -> None:
        self.folder, self.meta, self.select = folder, meta, select
        self.array = np.load(folder / FEATURES, mmap_mode="r", allow_pickle=False)
        self.torch_dtype = DTYPES[meta["dtype"]][1]

    @property
    def shape(self) -> tuple[int, ...]:
        n, layers, *rest = self.array.shape
        return (n, len(self.select) if self.select is not None else layers, *rest)

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    def rows(self, indices: np.ndarray) -> torch.Tensor:
        block = np.asarray(self.array[np.asarray(indices)])  # a copy of these rows only
        if self.select is not None:
            block = block[:, self.select]
        if self.meta["dtype"] == "bf16":
            return torch.from_numpy(block.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(np.ascontiguousarray(block))

    def all(self) -> torch.Tensor:
        return self.rows(np.arange(self.shape[0]))


def open_cache(path: Path, key: dict[str, str], n_examples: int) -> FeatureCache | None:
    """The cache at `path` if one is there and was built for `key` (None if there is none); refuse any other.

    A cache holding more teacher layers than the blocks need serves them too (a B = 4 cache of an 8-layer teacher
    holds layers 2, 4, 6, 8, so it also serves B = 2 and B = 1): the needed layers are picked out of it."""
    path = Path(path)
    if path.is_file() or (path / OLD_FILE).exists():
        raise SlmrecError(f"teacher cache {path} was written by an older slmrec (one safetensors file); delete it "
                          "to rebuild, or pass another --teacher-cache")
    if not (path / META).exists():
        if path.exists() and any(path.iterdir()):
            raise SlmrecError(f"teacher cache {path} is a non-empty directory without {META}; pass an empty or new "
                              "--teacher-cache directory")
        return None
    try:
        meta = read_json(path / META)
    except (OSError, ValueError) as e:
        raise SlmrecError(f"teacher cache {path / META} is unreadable ({e}); delete the cache to rebuild") from None
    for k, v in key.items():
        if k != "teacher_layers" and str(meta.get(k)) != v:
            what = {"version": "slmrec version", "dtype": "storage dtype"}.get(k, k.replace("_", " "))
            raise SlmrecError(f"teacher cache {path} was built for a different {what} ({meta.get(k)} ≠ {v}); "
                              "pass another --teacher-cache or delete it to rebuild")
    have, need = str(meta.get("teacher_layers", "")).split(","), key["teacher_layers"].split(",")
    if missing := [x for x in need if x not in have]:
        raise SlmrecError(f"teacher cache {path} holds teacher layers {','.join(have)}, not {','.join(missing)}; "
                          "pass a cache built for these blocks or another --teacher-cache path")
    try:
        cache = FeatureCache(path, meta, None if need == have else [have.index(x) for x in need])
    except (OSError, ValueError) as e:
        raise SlmrecError(f"teacher cache {path / FEATURES} is unreadable ({e}); delete the cache to rebuild") from None
    shape = cache.array.shape
    if shape[0] != n_examples or shape[1] != len(have) or list(shape) != meta.get("shape"):
        raise SlmrecError(f"teacher cache {path} has shape {tuple(shape)}, expected {n_examples} examples × "
                          f"{len(have)} layers; delete it to rebuild")
    note = f" (teacher layers {','.join(need)} of {','.join(have)})" if cache.select is not None else ""
    ui.info(f"teacher features from cache {path}{note}: {cache.nbytes / 2**20:.1f} MiB {meta['dtype']}, "
            "memory-mapped")
    return cache


FeaturesFn = Callable[[torch.Tensor], torch.Tensor]  # items [batch, T] → [blocks, batch, (T,) d1]


def build_cache(path: Path, key: dict[str, str], task, features: FeaturesFn, batch_size: int, device,
                autocast: Callable[[], AbstractContextManager] = nullcontext, *, rank: int = 0, world: int = 1,
                barrier: Callable[[], None] = lambda: None) -> None:
    """Run the teacher over every training example, under the live teacher's autocast, and write each batch's
    features as they come (no list, no concatenation); the directory appears complete or not at all.

    Under several processes (rank of world; `barrier` waits for all) every process computes every world-th batch and
    writes its rows into the one shared memory-mapped file; process 0 creates it, then names the cache."""
    path = Path(path)
    np_dtype, torch_dtype = DTYPES[key["dtype"]]
    tmp = path.parent / f".{path.name}.tmp"
    n = task.n_examples

    def compute(idx: np.ndarray) -> np.ndarray:
        items = task.batch(idx)["items"].to(device)  # cut to the batch's longest example
        with torch.no_grad(), autocast():
            feats = features(items)
        if feats.dim() == 4:  # every slot: stored at max_len slots, the trimmed padding slots (never read) as zeros
            feats = torch.nn.functional.pad(feats, (0, 0, task.model.cfg.max_len - feats.shape[2], 0))
        feats = feats.transpose(0, 1).to("cpu", torch_dtype)
        return feats.view(torch.int16).numpy().view(np.uint16) if key["dtype"] == "bf16" else feats.numpy()

    starts = list(range(0, n, batch_size))
    first = compute(np.arange(min(batch_size, n)))  # every process: the shape (and batch 0's rows, for rank 0)
    shape = (n, *first.shape[1:])
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.lib.format.open_memmap(tmp / FEATURES, mode="w+", dtype=np_dtype, shape=shape).flush()
    barrier()
    try:
        out = np.load(tmp / FEATURES, mmap_mode="r+", allow_pickle=False)
        mine = starts[rank::world]
        with ui.progress("teacher cache", total=sum(min(batch_size, n - s) for s in mine)) as bar:
            for start in mine:
                idx = np.arange(start, min(start + batch_size, n))
                out[idx] = first if start == 0 else compute(idx)
                bar.advance(len(idx))
        out.flush()
        del out
        barrier()
        if rank == 0:
            write_json(tmp / META, {**key, "shape": list(shape)})
            if path.exists():
                path.rmdir()  # open_cache let it through only when empty
            os.replace(tmp, path)
    finally:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
    barrier()
    if rank == 0:
        size = (path / FEATURES).stat().st_size
        ui.info(f"wrote teacher cache {path} ({size / 2**20:.1f} MiB {key['dtype']}, {shape[0]} examples × "
                f"{' × '.join(str(x) for x in shape[1:])}, {world} process{'es' if world > 1 else ''})")


def load_or_build(path: Path, key: dict[str, str], task, features: FeaturesFn, batch_size: int, device,
                  autocast: Callable[[], AbstractContextManager] = nullcontext, **processes) -> FeatureCache:
    """open_cache, building the cache first when there is none (processes: build_cache's rank, world, barrier)."""
    cache = open_cache(path, key, task.n_examples)
    if cache is None:
        build_cache(path, key, task, features, batch_size, device, autocast, **processes)
        cache = open_cache(path, key, task.n_examples)
    return cache
