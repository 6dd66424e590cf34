"""`slmrec train-teacher`: the E4SRec-style LLM recommender on a truncated pretrained decoder, on the engine."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch

from slmrec_cli import ui
from slmrec_cli.backbones import resolve_base_model
from slmrec_cli.base_model import base_label
from slmrec_cli.config.models import check_prompt_for_targets
from slmrec_cli.config.stages import TeacherConfig
from slmrec_cli.config.train import TrainArgs
from slmrec_cli.data import load_dataset
from slmrec_cli.models.build import build_model
from slmrec_cli.random_init import check_prompt
from slmrec_cli.run_dirs import run_config
from slmrec_cli.runs import Run, RunKind, quantization_of
from slmrec_cli.train.accelerator import base_dtype, make_accelerator
from slmrec_cli.train.lifecycle import process_sections, training_result
from slmrec_cli.train.llm_task import LLMRecTask, train_llm_run, trainable


def train_teacher(cfg: TeacherConfig, *, on_step=None) -> dict:
    """Train the teacher into cfg.run.out. Under several processes every process calls this; only the main one
    writes files and gets "records" in the summary."""
    args: TrainArgs = cfg.train
    check_prompt_for_targets(cfg.model.prompt, cfg.targets)
    data = load_dataset(cfg.data)
    ids = Run.load(cfg.ids)
    table = ids.id_table(data)
    acc = make_accelerator(args, Path(cfg.run.out), auto_bf16=True)
    device = str(acc.device)
    model_cfg = replace(cfg.model, n_items=data.n_items, id_dim=table.shape[1])
    torch.manual_seed(args.seed)
    base = resolve_base_model(cfg.base_model, random_init=cfg.random_init, ignore_weights=cfg.ignore_weights)
    check_prompt(base, model_cfg.prompt_parts())
    model, ref = build_model(model_cfg, base, table, device=device, load_in_8bit=cfg.load_in_8bit,
                             load_in_4bit=cfg.load_in_4bit, gradient_checkpointing=cfg.llm.gradient_checkpointing,
                             dtype=base_dtype(acc))
    config = run_config(RunKind.TEACHER, data, model=asdict(model.cfg), base_model=asdict(ref), train=asdict(args),
                        targets=cfg.targets, ids={"run": str(cfg.ids), "data_hash": ids.data.hash},
                        quantized={"load_in_8bit": cfg.load_in_8bit, "load_in_4bit": cfg.load_in_4bit},
                        gradient_checkpointing=cfg.llm.gradient_checkpointing, **process_sections(acc, args))
    task = LLMRecTask(model, data, cfg.targets, cfg.llm.eval_batch)
    label = "" if ref.pretrained else f" [{base_label(ref).upper()}]"
    ui.info(f"teacher on {data.name}: {ref.ref} first {model_cfg.layers}/{ref.layers_total} layers{label}, "
            f"{task.n_examples} examples (targets={cfg.targets}), {trainable(model):,} trainable parameters")
    n_trainable = trainable(model)
    del model  # the task holds it alone, and releases it before the selected weights are reloaded
    return train_llm_run(acc, cfg.run, config, task, args, data, table, eval_batch=cfg.llm.eval_batch,
                         trainable_params=n_trainable, quantization=quantization_of(cfg.load_in_8bit, cfg.load_in_4bit),
                         on_step=on_step)


def main(cfg) -> dict:
    """`slmrec train-teacher`: the run, then its valid and test metrics as a table (main process); the result
    is the run, its fit, metrics records and efficiency."""
    return training_result(train_teacher(cfg), cfg.run.out, f"teacher {cfg.run.out}")
