"""Teacher feature cache (offline mode): the frozen teacher's block features per training example, computed once."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from slmrec_cli import ui
from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import file_sha256, save_safetensors

CACHE_FILE = "teacher_features.safetensors"


def teacher_fingerprint(run: Path) -> str:
    """Hash of what determines the teacher's outputs: its config and trained weights."""
    run = Path(run)
    h = hashlib.sha256()
    for name in ("config.json", "projections.safetensors", "adapter/adapter_model.safetensors",
                 "item_embeddings.safetensors"):
        path = run / name
        if not path.exists():
            raise SlmrecError(f"--teacher {run} has no {name}; it is not a finished teacher run (train it first)")
        h.update(name.encode() + file_sha256(path).encode())
    return h.hexdigest()[:32]


def cache_key(teacher_hash: str, data_hash: str, targets: str, max_len: int, pairs: list,
              positions: str = "last") -> dict[str, str]:
    """What the cached features depend on. positions: "last" (the last slot of each example) or "history" (every
    slot, for causal targets aligned at every position)."""
    return {"teacher_hash": teacher_hash, "data_hash": data_hash, "targets": targets, "max_len": str(max_len),
            "positions": positions, "teacher_layers": ",".join(str(t) for t, _ in pairs)}


def load_or_build(path: Path, key: dict[str, str], task, distiller, batch_size: int, device) -> torch.Tensor:
    """[n_examples, blocks, d1] features ([n_examples, blocks, T, d1] for positions "history"); refuse a cache whose
    key differs (another teacher, data or setup).

    A cache holding more teacher layers than the blocks need serves them too (a B = 4 cache of an 8-layer teacher
    holds layers 2, 4, 6, 8, so it also serves B = 2 and B = 1): the needed layers are picked out of it."""
    from safetensors import safe_open

    path = Path(path)
    file = path / CACHE_FILE if path.suffix != ".safetensors" else path
    if file.exists():
        try:
            with safe_open(str(file), "pt") as f:
                meta = f.metadata() or {}
                feats = f.get_tensor("features")
        except Exception as e:  # safetensors raises several types for damaged files
            raise SlmrecError(f"teacher cache {file} is unreadable ({e}); delete it to rebuild") from None
        for k, v in key.items():
            if k != "teacher_layers" and meta.get(k) != v:
                raise SlmrecError(f"teacher cache {file} was built for a different {k.replace('_', ' ')} "
                                  f"({meta.get(k)} ≠ {v}); pass another --teacher-cache or delete it")
        have, need = meta.get("teacher_layers", "").split(","), key["teacher_layers"].split(",")
        if missing := [x for x in need if x not in have]:
            raise SlmrecError(f"teacher cache {file} holds teacher layers {','.join(have)}, not {','.join(missing)}; "
                              "pass a cache built for these blocks or another --teacher-cache path")
        if feats.shape[0] != task.n_examples or feats.shape[1] != len(have):
            raise SlmrecError(f"teacher cache {file} has shape {tuple(feats.shape)}, expected {task.n_examples} "
                              f"examples × {len(have)} layers; delete it to rebuild")
        note = ""
        if need != have:
            feats = feats[:, [have.index(x) for x in need]].contiguous()
            note = f" (teacher layers {','.join(need)} of {','.join(have)})"
        ui.info(f"teacher features from cache {file}{note}")
        return feats
    chunks = []
    with ui.progress("teacher cache", total=task.n_examples) as bar:
        for start in range(0, task.n_examples, batch_size):
            idx = np.arange(start, min(start + batch_size, task.n_examples))
            items = task.batch(idx)["items"].to(device)
            feats, _ = distiller.teacher_features(items, key["positions"])
            chunks.append(feats.float().transpose(0, 1).cpu())
            bar.advance(len(idx))
    feats = torch.cat(chunks)
    save_safetensors({"features": feats}, file, metadata=key)
    ui.info(f"wrote teacher cache {file} ({feats.numel() * 4 / 2**20:.1f} MiB)")
    return feats
