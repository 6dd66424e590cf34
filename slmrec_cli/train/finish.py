"""After training: score valid and test once with the selected weights, write eval/ and efficiency.json."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch

from slmrec_cli.evaluation.evaluate import metrics_record, rank_split, write_metrics
from slmrec_cli.io import write_json


def peak_memory_bytes(device: torch.device | str) -> int:
    if torch.device(device).type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"


def evaluate_and_record(model, data, run_dir: Path, *, max_len: int, device, batch_size: int = 256,
                        mask_history: bool = True, write: bool = True) -> dict:
    """Valid then test (test is read here, once, after selection); both protocols. Returns test-sampled timing.
    Under several processes every process calls this (the users are split and gathered); only write=True writes."""
    run_dir = Path(run_dir)
    records = {}
    timing = {}
    model.eval()
    for split in ("valid", "test"):
        t0 = time.perf_counter()
        results = rank_split(model.score_all, data, split, ("sampled", "full"), max_len=max_len,
                             batch_size=batch_size, device=device, mask_history=mask_history, desc=f"eval {split}")
        timing[split] = time.perf_counter() - t0  # one forward pass serves both protocols
        for res in results.values():
            rec = metrics_record(res, data, split, str(run_dir))
            if write:
                write_metrics(run_dir, rec)
            records[(split, res.protocol)] = rec
    return {"records": records, "inference_seconds": timing["test"], "inference_users": data.n_users}


def write_efficiency(run_dir: Path, model, *, seconds_per_epoch: float, inference_seconds: float,
                     inference_users: int, device, params: dict | None = None) -> dict:
    total = sum(p.numel() for p in model.parameters())
    record = {
        "params": params or {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                             "total": total, "inference": total},
        "train_seconds_per_epoch": float(seconds_per_epoch),
        "inference_seconds": float(inference_seconds),
        "inference_users": int(inference_users),
        "peak_memory_bytes": peak_memory_bytes(device),
        "device": device_name(device),
    }
    write_json(Path(run_dir) / "efficiency.json", record)
    return record
