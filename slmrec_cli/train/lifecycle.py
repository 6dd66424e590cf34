"""A training stage's run, start to end, the same for SASRec, teacher and student: open the run dir → write
config.json → fit → reload the selected weights → check they reproduce the selected validation MRR → score valid and
test once → efficiency.json."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from slmrec_cli.config.train import RunOptions, TrainArgs
from slmrec_cli.devices import device_name, peak_memory_bytes
from slmrec_cli.evaluation.evaluate import PROTOCOLS, eval_precision, metrics_record, rank_split, write_metrics
from slmrec_cli.evaluation.tables import print_summary
from slmrec_cli.io import write_json
from slmrec_cli.run_dirs import open_run_dir, save_config
from slmrec_cli.train.accelerator import precision_of
from slmrec_cli.train.engine import fit
from slmrec_cli.train.reload_check import check_reload


def process_sections(acc, args: TrainArgs) -> dict:
    """config.json's record of how the run trained: processes, precision actually used, effective batch."""
    return {"processes": acc.num_processes, "precision": precision_of(acc),
            "effective_batch_size": args.batch_size * args.grad_accum * acc.num_processes}


def train_run(acc, run: RunOptions, config: dict, task, args: TrainArgs, data, *, reload: Callable[[Path], object],
              eval_batch: int, params: Callable[[object], dict] | None = None,
              setup: Callable[[Path], None] | None = None, on_step=None, record_extra: dict | None = None) -> dict:
    """Run a training stage into run.out. Under several processes every process calls this (all check, the main one
    writes); only the main one gets "records" in the summary. setup(run_dir), on every process once the config is
    written, prepares what training needs besides it; reload(run_dir) returns the selected model; params(model) its
    parameter counts."""
    run_dir = open_run_dir(acc, run.out, resume=run.resume, force=run.force)
    save_config(run_dir, config, run.resume, write=acc.is_main_process)
    if setup is not None:
        setup(run_dir)
    result = fit(task, args, run_dir, resume=run.resume, accelerator=acc, on_step=on_step)
    best = reload(run_dir)
    valid = check_reload(best, data, run_dir, best_mrr=result.state.best_mrr, best_step=result.state.best_step,
                         best_valid=result.best_valid, batch_size=getattr(task, "eval_batch", eval_batch),
                         max_len=best.cfg.max_len, device=acc.device)  # before the test split is read
    summary = {"fit": result.record()}
    ev = evaluate_and_record(best, data, run_dir, max_len=best.cfg.max_len, device=acc.device,
                             batch_size=eval_batch, write=acc.is_main_process,  # every process scores its share
                             valid=valid, extra=record_extra)
    if acc.is_main_process:
        write_efficiency(run_dir, best, seconds_per_epoch=result.seconds_per_epoch,
                         seconds_per_step=result.seconds_per_step, inference_seconds=ev["inference_seconds"],
                         inference_users=ev["inference_users"],
                         device=acc.device, params=params(best) if params else None)
        summary["records"] = list(ev["records"].values())
    return summary


def training_result(summary: dict, run: Path, title: str) -> dict:
    """A training stage's output: its table for people, and its result for --json: the run, how the fit went, its
    valid and test metrics records and efficiency.json (main process; the others have no records)."""
    import json

    print_summary(summary, title)
    efficiency = Path(run) / "efficiency.json"
    return {"run": str(run), "fit": summary.get("fit"), "records": summary.get("records", []),
            "efficiency": json.loads(efficiency.read_text()) if "records" in summary and efficiency.exists()
            else None}


def evaluate_and_record(model, data, run_dir: Path, *, max_len: int, device, batch_size: int = 256,
                        mask_history: bool = True, write: bool = True, valid: dict | None = None,
                        extra: dict | None = None) -> dict:
    """Valid then test (test is read here, once, after selection); both protocols. Returns test-sampled timing.
    valid: the selected step's valid results from training (both protocols, same weights and batches), reused
    rather than scored again. Under several processes every process calls this (the users are split and gathered);
    only write=True writes."""
    run_dir = Path(run_dir)
    records = {}
    timing = {}
    model.eval()
    for split in ("valid", "test"):
        t0 = time.perf_counter()
        if split == "valid" and valid is not None and set(valid) == set(PROTOCOLS) and mask_history:
            results = valid
        else:
            results = rank_split(model.score_all, data, split, PROTOCOLS, max_len=max_len, batch_size=batch_size,
                                 device=device, mask_history=mask_history, desc=f"eval {split}")
        timing[split] = time.perf_counter() - t0  # one forward pass serves both protocols
        for res in results.values():
            rec = metrics_record(res, data, split, str(run_dir), eval_precision(model)) | (extra or {})
            if write:
                write_metrics(run_dir, rec)
            records[(split, res.protocol)] = rec
    return {"records": records, "inference_seconds": timing["test"], "inference_users": data.n_users}


def write_efficiency(run_dir: Path, model, *, seconds_per_epoch: float, inference_seconds: float,
                     inference_users: int, device, params: dict | None = None,
                     seconds_per_step: float | None = None) -> dict:
    total = sum(p.numel() for p in model.parameters())
    record = {
        "params": params or {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                             "total": total, "inference": total},
        "train_seconds_per_epoch": float(seconds_per_epoch),
        **({"train_seconds_per_step": float(seconds_per_step)} if seconds_per_step is not None else {}),
        "inference_seconds": float(inference_seconds),
        "inference_users": int(inference_users),
        "peak_memory_bytes": peak_memory_bytes(device),
        "device": device_name(device),
    }
    write_json(Path(run_dir) / "efficiency.json", record)
    return record


def validate_split(task, model, max_len: int) -> dict:
    """A task's validation: the valid split by both protocols, from one forward pass per batch."""
    device = next(model.parameters()).device
    return rank_split(model.score_all, task.data, "valid", PROTOCOLS, max_len=max_len, batch_size=task.eval_batch,
                      device=device, desc="valid")
