"""`slmrec evaluate`: score runs (and the popularity baseline) on one split, write metrics files; the result is the
list of metrics records (one per run and protocol)."""

from __future__ import annotations

import json
from pathlib import Path

from slmrec_cli.config.evaluate import EvaluateConfig, protocols_of
from slmrec_cli.data import load_dataset
from slmrec_cli.distributed import process_state
from slmrec_cli.evaluation.evaluate import eval_precision, metrics_record, rank_split, write_metrics
from slmrec_cli.evaluation.popularity import popularity_scorer
from slmrec_cli.evaluation.tables import print_records
from slmrec_cli.runs import Run


def stored_records(run: Path, ds, split: str, protocols, mask_history: bool) -> list[dict] | None:
    """The run's metrics files for this split, if all exist and were made on this data with these options."""
    records = []
    for p in protocols:
        path = Path(run) / "eval" / f"{split}-{p}.json"
        if not path.exists():
            return None
        rec = json.loads(path.read_text())
        if rec.get("data_hash") != ds.content_hash or (p == "full" and rec.get("mask_history") != mask_history):
            return None
        records.append(rec)
    return records


def evaluate(opts: EvaluateConfig) -> list[dict]:
    """Under torchrun / accelerate launch every process loads the runs and scores its share of the users; the ranks
    are gathered, and the main process alone writes the metrics files."""
    from slmrec_cli.devices import resolve_device

    runs, split, data, batch_size = opts.runs or [], opts.split, opts.data, opts.eval_batch
    mask_history, protocols = opts.mask_history, protocols_of(opts.protocol)
    loaded = [Run.load(r) for r in runs]  # check every run before scoring any
    state = process_state()
    main = state is None or state.is_main_process
    device = str(state.device) if state else resolve_device(opts.device)
    cache: dict[str, object] = {}

    def dataset(path) -> object:
        key = str(path)
        if key not in cache:
            cache[key] = load_dataset(path)
        return cache[key]

    records = []
    for run in loaded:
        ds = dataset(data or run.data.path)
        run.check_data(ds)
        quant = run.quantization if opts.quantization == "run" or not run.kind.llm else opts.quantization
        if opts.reuse and quant == run.quantization and (
                stored := stored_records(run.path, ds, split, protocols, mask_history)):
            records.extend(stored)
            continue
        model = run.load_model(device, quant)
        res = rank_split(model.score_all, ds, split, protocols, max_len=model.cfg.max_len, batch_size=batch_size,
                         mask_history=mask_history, device=device, desc=f"{run.path} {split}")
        precision = eval_precision(model)
        del model
        for p in protocols:
            rec = metrics_record(res[p], ds, split, str(run.path), precision)
            if run.kind.llm:
                rec["quantization"] = quant
            if main and quant == run.quantization:  # a run's metrics files hold it as it trained
                write_metrics(run.path, rec)
            records.append(rec)
    if opts.popularity:
        ds = dataset(data or loaded[0].data.path)
        res = rank_split(popularity_scorer(ds), ds, split, protocols, max_len=1, batch_size=batch_size,
                         mask_history=mask_history, desc=f"popularity {split}")
        records.extend(metrics_record(res[p], ds, split, "popularity", "fp32") for p in protocols)
    return records


def main(opts: EvaluateConfig) -> list[dict]:
    """`slmrec evaluate`: one table of every record (main process); the result is the records."""
    from slmrec_cli.distributed import is_main_process

    records = evaluate(opts)
    if is_main_process():
        print_records(records, title=f"{opts.split} split")
    return records
