"""`slmrec pretrain-ids`: SASRec with full-softmax CE on every position; its item table feeds the LLM models."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from slmrec_cli import ui
from slmrec_cli.data import load_dataset, training_windows, window_inputs_targets
from slmrec_cli.evaluation.evaluate import rank_split
from slmrec_cli.io import save_safetensors
from slmrec_cli.models.sasrec import SASRec, SASRecConfig
from slmrec_cli.runs import load_run_weights, open_run_dir, record_checksums, run_config, save_config
from slmrec_cli.train.engine import TrainArgs, fit, make_accelerator, precision_of
from slmrec_cli.train.finish import evaluate_and_record, write_efficiency


class SASRecTask:
    def __init__(self, model: SASRec, data, max_len: int, eval_batch: int = 256):
        self.model, self.data, self.max_len, self.eval_batch = model, data, max_len, eval_batch
        self.windows = torch.from_numpy(training_windows(data, max_len))
        self.n_examples = len(self.windows)

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        inputs, targets = window_inputs_targets(self.windows[torch.from_numpy(indices)])
        return {"inputs": inputs, "targets": targets}

    def loss(self, model, batch):
        loss = model(batch["inputs"], batch["targets"])
        return loss, {}

    def validate(self, model) -> dict[str, float]:
        device = next(model.parameters()).device
        res = rank_split(model.score_all, self.data, "valid", ("sampled",), max_len=self.max_len,
                         batch_size=self.eval_batch, device=device, desc="valid")
        return res["sampled"].metrics

    def save_best(self, model, run_dir: Path) -> None:
        save_best_sasrec(model, run_dir)


def save_best_sasrec(model: SASRec, run_dir: Path) -> None:
    state = {k: v for k, v in model.state_dict().items()}
    save_safetensors(state, Path(run_dir) / "model.safetensors")
    save_safetensors({"item_embeddings": model.item_table()}, Path(run_dir) / "item_embeddings.safetensors",
                     metadata={"rows": "n_items + 1, row 0 = padding"})
    record_checksums(run_dir, ["model.safetensors", "item_embeddings.safetensors"])


def pretrain_ids(data_dir: Path, out: Path, model_cfg: dict, args: TrainArgs, *, resume: bool = False,
                 force: bool = False, on_step=None) -> dict:
    """Train SASRec into `out`. Under several processes every process calls this; only the main one writes files
    and gets "records" in the summary."""
    data = load_dataset(data_dir)
    acc = make_accelerator(args, Path(out))
    run_dir = open_run_dir(acc, out, resume=resume, force=force)
    cfg = SASRecConfig(n_items=data.n_items, **model_cfg)
    config = run_config("sasrec", data, model=asdict(cfg), train=asdict(args), targets="all",
                        processes=acc.num_processes, precision=precision_of(acc),
                        effective_batch_size=args.batch_size * args.grad_accum * acc.num_processes)
    save_config(run_dir, config, resume, write=acc.is_main_process)
    torch.manual_seed(args.seed)
    model = SASRec(cfg)
    task = SASRecTask(model, data, cfg.max_len)
    ui.info(f"SASRec on {data.name}: {data.n_users} users, {data.n_items} items, "
            f"{task.n_examples} training windows, {sum(p.numel() for p in model.parameters()):,} parameters")
    result = fit(task, args, run_dir, resume=resume, accelerator=acc, on_step=on_step)
    model.load_state_dict(load_run_weights(run_dir, "model.safetensors"))
    model.to(acc.device)
    summary = {"fit": asdict(result)}
    ev = evaluate_and_record(model, data, run_dir, max_len=cfg.max_len, device=acc.device,
                             write=acc.is_main_process)  # every process scores its share
    if acc.is_main_process:
        write_efficiency(run_dir, model, seconds_per_epoch=result.seconds_per_epoch,
                         inference_seconds=ev["inference_seconds"], inference_users=ev["inference_users"],
                         device=acc.device)
        summary["records"] = list(ev["records"].values())
    return summary
