"""`slmrec distill`: an N-layer student from an M-layer teacher run (SLMRec, Section 4), on the shared engine."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from slmrec_cli import ui
from slmrec_cli.base_model import BaseModelRef
from slmrec_cli.config.models import DEFAULT_PROMPT, LLMRecConfig, check_prompt_for_targets
from slmrec_cli.config.stages import DistillConfig
from slmrec_cli.config.train import TrainArgs
from slmrec_cli.data import load_dataset
from slmrec_cli.distill.blocks import block_layers
from slmrec_cli.distill.cache import cache_key, load_or_build, teacher_fingerprint
from slmrec_cli.distill.model import Distiller
from slmrec_cli.errors import SlmrecError
from slmrec_cli.evaluation.tables import training_result
from slmrec_cli.io import save_safetensors
from slmrec_cli.models.build import build_model
from slmrec_cli.runs import check_same_data, load_llmrec_run, load_run_config, record_checksums, run_config
from slmrec_cli.train.accelerator import make_accelerator
from slmrec_cli.train.lifecycle import process_sections
from slmrec_cli.train.llm_task import LLMRecTask, train_llm_run, trainable

MS_ADAPTERS = "ms_adapters.safetensors"


class DistillTask(LLMRecTask):
    def __init__(self, model: Distiller, data, targets: str, eval_batch: int, features: torch.Tensor | None):
        super().__init__(model.student, data, targets, eval_batch)
        self.model, self.features = model, features

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        out = super().batch(indices)
        if self.features is not None:
            out["teacher_feats"] = self.features[torch.from_numpy(indices)].transpose(0, 1)
        return out

    def loss(self, model, batch):
        loss, terms = model(batch["items"], batch["targets"], batch.get("teacher_feats"))
        return loss, {k: float(v) for k, v in terms.items()}

    def validate(self, model) -> dict:
        return super().validate(model.student)

    def save_best(self, model, run_dir: Path) -> None:
        super().save_best(model.student, run_dir)
        if len(model.ms_adapters):
            save_safetensors(dict(model.ms_adapters.state_dict()), Path(run_dir) / MS_ADAPTERS)
            record_checksums(run_dir, [MS_ADAPTERS])


def load_teacher(cfg: DistillConfig) -> tuple[dict, object, str]:
    """(the teacher's config, its dataset, the targets to train on), every check done before anything is built."""
    tcfg = load_run_config(cfg.teacher)
    if tcfg.get("kind") != "teacher":
        raise SlmrecError(f"--teacher {cfg.teacher} is a '{tcfg.get('kind')}' run; pass a run from "
                          "`slmrec train-teacher`")
    data = load_dataset(cfg.data or tcfg["data"]["path"])
    check_same_data(tcfg, data, cfg.teacher)
    targets = cfg.targets or tcfg["targets"]
    check_prompt_for_targets(tcfg["model"].get("prompt", DEFAULT_PROMPT), targets)
    if cfg.distill.align == "all" and targets != "causal":
        raise SlmrecError(f"--align all needs --targets causal (with --targets {targets} each example has one "
                          "position); use --align last")
    return tcfg, data, targets


def distill(cfg: DistillConfig, *, on_step=None) -> dict:
    """Distill a student into cfg.run.out. Under several processes every process calls this; only the main one
    writes files (the teacher cache included) and gets "records" in the summary."""
    args: TrainArgs = cfg.train
    opts = cfg.distill
    tcfg, data, targets = load_teacher(cfg)
    m = tcfg["model"]["layers"]
    pairs = block_layers(m, opts.student_layers, opts.blocks)
    t_hash = teacher_fingerprint(cfg.teacher)
    acc = make_accelerator(args, Path(cfg.run.out), cpu_auto_bf16=True)
    device = str(acc.device)
    torch.manual_seed(args.seed)
    teacher = load_llmrec_run(cfg.teacher, tcfg, device)
    table = teacher.id_table.cpu()
    base = {"base_model": BaseModelRef.recorded(tcfg["base_model"]), "id_table": table, "device": device,
            "expect_hash": tcfg["base_model"]["hash"], "gradient_checkpointing": cfg.llm.gradient_checkpointing}
    projections = {"up": teacher.up.state_dict(), "down": teacher.down.state_dict()}  # the trained teacher's
    if opts.mode == "online":  # RQ4: the teacher starts from the base model like the student, and trains alongside
        teacher, _ = build_model(LLMRecConfig(**tcfg["model"]), **base)
    student, ref = build_model(replace(LLMRecConfig(**tcfg["model"]), layers=opts.student_layers), **base)
    if opts.init_projections == "teacher":  # from the trained teacher, also when an online one replaces it
        student.up.load_state_dict(projections["up"])
        student.down.load_state_dict(projections["down"])
    model = Distiller(student, teacher, pairs, opts).to(device)
    del teacher  # the Distiller holds it, and lets go of it once its features are cached
    section = {"teacher": str(cfg.teacher), "teacher_hash": t_hash, "teacher_layers": m, "pairs": pairs,
               "teacher_cache": str(cfg.teacher_cache) if cfg.teacher_cache else None, **asdict(opts)}
    config = run_config("student", data, model=asdict(student.cfg), base_model=asdict(ref), train=asdict(args),
                        targets=targets, ids=tcfg.get("ids"), distill=section,
                        gradient_checkpointing=cfg.llm.gradient_checkpointing, **process_sections(acc, args))
    task = DistillTask(model, data, targets, cfg.llm.eval_batch, None)
    ui.info(f"distill {m}→{opts.student_layers} layers, blocks {pairs}, {opts.mode}, {model.describe()}, "
            f"{task.n_examples} examples (targets={targets}, aligned at "
            f"{'every position' if opts.align == 'all' and targets == 'causal' else 'the last position'})")

    def cache_features(run_dir: Path) -> None:
        if cfg.teacher_cache is None:
            return
        key = cache_key(t_hash, data.content_hash, targets, student.cfg.max_len, pairs,
                        model.cached_positions(targets == "causal"))
        with acc.main_process_first():  # the main process builds and writes the cache, the others then read it
            task.features = load_or_build(cfg.teacher_cache, key, task, model, cfg.llm.eval_batch, device)
        model.teacher = None  # every example's features are cached: training never runs the teacher

    # efficiency.json: the student's own trainable parameters; the L_ms adapters (and an online teacher) apart
    extra = {"ms_adapters_trainable": trainable(model.ms_adapters)}
    if opts.mode == "online":
        extra["online_teacher_trainable"] = trainable(model.teacher)
    return train_llm_run(acc, cfg.run, config, task, args, data, table, eval_batch=cfg.llm.eval_batch,
                         trained=student, extra_params=extra, setup=cache_features, on_step=on_step)


def main(cfg) -> dict:
    """`slmrec distill`: the run, then its valid and test metrics as a table (main process); the result
    is the run, its fit, metrics records and efficiency."""
    return training_result(distill(cfg), cfg.run.out, f"student {cfg.run.out}")
