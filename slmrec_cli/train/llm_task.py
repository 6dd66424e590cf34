"""The LLM recommender's training task (next-item CE), shared by the teacher and, with extra terms, the student."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from slmrec_cli.config.models import LLMRecConfig
from slmrec_cli.config.train import RunOptions, TrainArgs
from slmrec_cli.data import pad_to_longest, training_windows, trim_windows, window_inputs_targets, window_lengths
from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import save_safetensors
from slmrec_cli.models.build import ID_TABLE, param_counts
from slmrec_cli.runs import Run, record_checksums, save_llmrec_weights
from slmrec_cli.train.accelerator import base_dtype
from slmrec_cli.train.lifecycle import train_run, validate_split


def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def training_examples(data, targets: str) -> tuple[np.ndarray, np.ndarray]:
    """(user, end) pairs: input = train_history[:end], target = train_history[end] (PROTOCOL.md §7)."""
    users, ends = [], []
    for u in range(data.n_users):
        n = len(data.train_history(u))
        if n < 2:
            continue
        span = [n - 1] if targets == "last" else range(1, n)
        users.extend([u] * len(span))
        ends.extend(span)
    return np.asarray(users, dtype=np.int64), np.asarray(ends, dtype=np.int64)


class Configured(Protocol):
    """What the task reads of its model to lay out the examples: an LLMRec, the Distiller holding one, or a bare
    config holder when only the layout is needed."""

    @property
    def cfg(self) -> LLMRecConfig: ...


class LLMRecTask:
    """targets causal: the max-length windows of each training history (as SASRec), every real slot a target from
    one forward; last/all: one (history → target) example each."""

    def __init__(self, model: Configured, data, targets: str, eval_batch: int = 32):
        self.model, self.data, self.eval_batch, self.targets = model, data, eval_batch, targets
        max_len = model.cfg.max_len
        if targets == "causal":
            windows = training_windows(data, max_len)
            self.windows = torch.from_numpy(windows)
            self.n_examples = len(self.windows)
            self.lengths = window_lengths(windows)
        else:
            self.users, self.ends = training_examples(data, targets)
            self.n_examples = len(self.users)
            self.lengths = np.minimum(self.ends, max_len)
        if self.n_examples == 0:
            raise SlmrecError(f"{data.path} has no user with two training items; nothing to train on")

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        if self.targets == "causal":
            items, targets = window_inputs_targets(trim_windows(self.windows[torch.from_numpy(indices)]))
            return {"items": items, "targets": targets}
        pairs = [(self.data.train_history(int(u)), int(e)) for u, e in zip(self.users[indices], self.ends[indices],
                                                                                 strict=True)]
        hists = [h[:e] for h, e in pairs]
        targets = [int(h[e]) for h, e in pairs]
        return {"items": torch.from_numpy(pad_to_longest(hists, self.model.cfg.max_len)),
                "targets": torch.tensor(targets, dtype=torch.long)}

    def loss(self, model, batch):
        return model(batch["items"], batch["targets"]), {}

    def validate(self, model) -> dict:
        return validate_split(self, model, model.cfg.max_len)

    def save_best(self, model, run_dir: Path) -> None:
        save_llmrec_weights(model, run_dir)


def train_llm_run(acc, run: RunOptions, config: dict, task, args: TrainArgs, data, table: torch.Tensor, *,
                  eval_batch: int, trainable_params: int, quantization: str = "none", extra_params: dict | None = None,
                  setup=None, on_step=None) -> dict:
    """A teacher's or student's run: the lifecycle, plus a copy of the frozen id table so the run reloads on its
    own (then setup(run_dir), on every process; a trained table is saved with the weights it goes with, never
    here, where a resume would put the starting table back); efficiency.json counts trainable_params (and
    extra_params).

    The task holds the only reference to the training model (callers drop theirs): it is released before the
    selected weights are reloaded, so a run never holds two copies of its model."""

    def save_table(run_dir: Path) -> None:
        if acc.is_main_process and not task.model.cfg.train_ids:
            save_safetensors({"item_embeddings": table}, run_dir / ID_TABLE)
            record_checksums(run_dir, [ID_TABLE])
        if setup is not None:
            setup(run_dir)

    def params(best) -> dict:
        return {**param_counts(best), "trainable": trainable_params, **(extra_params or {})}

    def reload(run_dir: Path):  # the base in the dtype it trained in (fp16 under fp16, as base_dtype gave it)
        release(task, acc)
        return Run.load(run_dir).load_model(str(acc.device), dtype=base_dtype(acc))

    return train_run(acc, run, config, task, args, data, setup=save_table, eval_batch=eval_batch, params=params,
                     reload=reload, on_step=on_step, record_extra={"quantization": quantization})


def release(task, acc) -> None:
    """Drop the training model (and what holds it: the accelerator's prepared copies, a feature cache's map)."""
    task.model = None
    if hasattr(task, "features"):
        task.features = None
    acc.free_memory()  # accelerate's lists of prepared models and optimizers; gc and the CUDA cache
    gc.collect()
