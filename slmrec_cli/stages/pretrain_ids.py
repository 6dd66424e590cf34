"""`slmrec pretrain-ids`: SASRec with full-softmax CE on every position; its item table feeds the LLM models."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from slmrec_cli import ui
from slmrec_cli.config.stages import PretrainConfig
from slmrec_cli.config.train import TrainArgs
from slmrec_cli.data import load_dataset, training_windows, trim_windows, window_inputs_targets, window_lengths
from slmrec_cli.io import save_safetensors
from slmrec_cli.models.build import ID_TABLE
from slmrec_cli.models.sasrec import SASRec
from slmrec_cli.run_dirs import run_config
from slmrec_cli.runs import RunKind, load_run_weights, record_checksums
from slmrec_cli.train.accelerator import make_accelerator
from slmrec_cli.train.lifecycle import process_sections, train_run, training_result, validate_split

WEIGHTS = "model.safetensors"


class SASRecTask:
    def __init__(self, model: SASRec, data, max_len: int, eval_batch: int = 256):
        self.model, self.data, self.max_len, self.eval_batch = model, data, max_len, eval_batch
        windows = training_windows(data, max_len)
        self.windows = torch.from_numpy(windows)
        self.n_examples = len(self.windows)
        self.lengths = window_lengths(windows)

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        inputs, targets = window_inputs_targets(trim_windows(self.windows[torch.from_numpy(indices)]))
        return {"inputs": inputs, "targets": targets}

    def loss(self, model, batch):
        return model(batch["inputs"], batch["targets"]), {}

    def validate(self, model) -> dict:
        return validate_split(self, model, self.max_len)

    def save_best(self, model, run_dir: Path) -> None:
        save_safetensors(dict(model.state_dict()), Path(run_dir) / WEIGHTS)
        save_safetensors({"item_embeddings": model.item_table()}, Path(run_dir) / ID_TABLE,
                         metadata={"rows": "n_items + 1, row 0 = padding"})
        record_checksums(run_dir, [WEIGHTS, ID_TABLE])


def pretrain_ids(cfg: PretrainConfig, *, on_step=None) -> dict:
    """Train SASRec into cfg.run.out. Under several processes every process calls this; only the main one writes
    files and gets "records" in the summary."""
    args: TrainArgs = cfg.train
    data = load_dataset(cfg.data)
    acc = make_accelerator(args, Path(cfg.run.out))
    model_cfg = replace(cfg.model, n_items=data.n_items)
    config = run_config(RunKind.SASREC, data, model=asdict(model_cfg), train=asdict(args), targets="all",
                        **process_sections(acc, args))
    torch.manual_seed(args.seed)
    model = SASRec(model_cfg)
    task = SASRecTask(model, data, model_cfg.max_len, cfg.eval_batch)
    ui.info(f"SASRec on {data.name}: {data.n_users} users, {data.n_items} items, "
            f"{task.n_examples} training windows, {sum(p.numel() for p in model.parameters()):,} parameters")

    def reload(run_dir: Path) -> SASRec:
        model.load_state_dict(load_run_weights(run_dir, WEIGHTS))
        return model.to(acc.device)

    return train_run(acc, cfg.run, config, task, args, data, reload=reload, eval_batch=cfg.eval_batch, on_step=on_step)


def main(cfg) -> dict:
    """`slmrec pretrain-ids`: the run, then its valid and test metrics as a table (main process); the result
    is the run, its fit, metrics records and efficiency."""
    return training_result(pretrain_ids(cfg), cfg.run.out, f"SASRec {cfg.run.out}")
