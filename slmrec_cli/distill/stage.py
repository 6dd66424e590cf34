"""`slmrec distill`: an N-layer student from an M-layer teacher run (SLMRec, Section 4), on the shared engine."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from slmrec_cli import ui
from slmrec_cli.data import load_dataset
from slmrec_cli.distill.blocks import block_layers
from slmrec_cli.distill.cache import cache_key, load_or_build, teacher_fingerprint
from slmrec_cli.distill.losses import NORM_LOSSES
from slmrec_cli.distill.model import ALIGN, Distiller
from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import save_safetensors
from slmrec_cli.models.llmrec import DEFAULT_PROMPT, LLMRecConfig, check_prompt_for_targets
from slmrec_cli.runs import check_same_data, load_run_config, open_run_dir, record_checksums, run_config
from slmrec_cli.teacher import (
    LLMRecTask,
    build_model,
    finish_llm_run,
    load_llmrec_run,
    save_llmrec_weights,
    start_llm_run,
)
from slmrec_cli.train.engine import TrainArgs, fit, make_accelerator, precision_of

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

    def validate(self, model) -> dict[str, float]:
        return super().validate(model.student)

    def save_best(self, model, run_dir: Path) -> None:
        save_llmrec_weights(model.student, run_dir)
        if len(model.ms_adapters):
            save_safetensors({k: v for k, v in model.ms_adapters.state_dict().items()}, Path(run_dir) / MS_ADAPTERS)
            record_checksums(run_dir, [MS_ADAPTERS])


def check_lambdas(**lambdas: float) -> None:
    for name, value in lambdas.items():
        if value < 0:
            raise SlmrecError(f"--{name.replace('_', '-')} must be ≥ 0 (0 switches the term off), got {value}")


def distill(teacher_run: Path, out: Path, student_layers: int, args: TrainArgs, *, data_dir: Path | None = None,
            blocks: int = 4, lambda_cos: float = 1.0, lambda_norm: float = 0.1, lambda_ms: float = 1.0,
            norm_loss: str = "normalized", mode: str = "offline", init_projections: str = "fresh",
            lambda_kd: float = 0.0, kd_temperature: float = 1.0, align: str = "last",
            teacher_cache: Path | None = None, targets: str | None = None, eval_batch: int = 32,
            gradient_checkpointing: bool = False, resume: bool = False, force: bool = False, on_step=None) -> dict:
    """Distill a student into `out`. Under several processes every process calls this; only the main one writes
    files (the teacher cache included) and gets "records" in the summary."""
    check_lambdas(lambda_cos=lambda_cos, lambda_norm=lambda_norm, lambda_ms=lambda_ms, lambda_kd=lambda_kd)
    if not kd_temperature > 0:
        raise SlmrecError(f"--kd-temperature must be > 0, got {kd_temperature}")
    if norm_loss not in NORM_LOSSES:
        raise SlmrecError(f"--norm-loss must be one of {', '.join(NORM_LOSSES)}, got '{norm_loss}'")
    if mode not in ("offline", "online"):
        raise SlmrecError(f"--mode must be offline or online, got '{mode}'")
    if init_projections not in ("fresh", "teacher"):
        raise SlmrecError(f"--init-projections must be fresh or teacher, got '{init_projections}'")
    if align not in ALIGN:
        raise SlmrecError(f"--align must be one of {', '.join(ALIGN)}, got '{align}'")
    if teacher_cache is not None and mode == "online":
        raise SlmrecError("--teacher-cache needs --mode offline (an online teacher changes as it trains)")
    tcfg = load_run_config(teacher_run)
    if tcfg.get("kind") != "teacher":
        raise SlmrecError(f"--teacher {teacher_run} is a '{tcfg.get('kind')}' run; pass a run from "
                          "`slmrec train-teacher`")
    m = tcfg["model"]["layers"]
    pairs = block_layers(m, student_layers, blocks)
    data = load_dataset(data_dir or tcfg["data"]["path"])
    check_same_data(tcfg, data, teacher_run)
    targets = targets or tcfg["targets"]
    check_prompt_for_targets(tcfg["model"].get("prompt", DEFAULT_PROMPT), targets)
    if align == "all" and targets != "causal":
        raise SlmrecError(f"--align all needs --targets causal (with --targets {targets} each example has one "
                          "position); use --align last")
    t_hash = teacher_fingerprint(teacher_run)
    acc = make_accelerator(args)
    device = str(acc.device)
    torch.manual_seed(args.seed)
    teacher = load_llmrec_run(teacher_run, tcfg, device)
    table = teacher.id_table.cpu()
    if mode == "online":  # RQ4: the teacher starts from the base model like the student, and trains alongside it
        teacher, _ = build_model(LLMRecConfig(**tcfg["model"]), tcfg["base_model"]["ref"], table, device=device,
                                 expect_hash=tcfg["base_model"]["hash"], gradient_checkpointing=gradient_checkpointing)
    scfg = replace(LLMRecConfig(**tcfg["model"]), layers=student_layers)
    student, ref = build_model(scfg, tcfg["base_model"]["ref"], table, device=device,
                               expect_hash=tcfg["base_model"]["hash"], gradient_checkpointing=gradient_checkpointing)
    if init_projections == "teacher":
        student.up.load_state_dict(teacher.up.state_dict())
        student.down.load_state_dict(teacher.down.state_dict())
    model = Distiller(student, teacher, pairs, lambda_cos=lambda_cos, lambda_norm=lambda_norm, lambda_ms=lambda_ms,
                      norm_loss=norm_loss, online=mode == "online", lambda_kd=lambda_kd,
                      kd_temperature=kd_temperature, align=align).to(device)
    run_dir = open_run_dir(acc, out, resume=resume, force=force)
    distill_cfg = {"teacher": str(teacher_run), "teacher_hash": t_hash, "teacher_layers": m,
                   "student_layers": student_layers, "blocks": blocks, "pairs": pairs, "lambda_cos": lambda_cos,
                   "lambda_norm": lambda_norm, "lambda_ms": lambda_ms, "norm_loss": norm_loss, "align": align,
                   "mode": mode, "init_projections": init_projections,
                   "teacher_cache": str(teacher_cache) if teacher_cache else None}
    if lambda_kd:  # recorded only when on, so runs of the paper's loss keep the config they always had
        distill_cfg |= {"lambda_kd": lambda_kd, "kd_temperature": kd_temperature}
    config = run_config("student", data, model=asdict(student.cfg), base_model=asdict(ref), train=asdict(args),
                        targets=targets, ids=tcfg.get("ids"), distill=distill_cfg,
                        gradient_checkpointing=gradient_checkpointing, processes=acc.num_processes,
                        precision=precision_of(acc),
                        effective_batch_size=args.batch_size * args.grad_accum * acc.num_processes)
    start_llm_run(acc, run_dir, config, table, resume)
    task = DistillTask(model, data, targets, eval_batch, None)
    if teacher_cache is not None:
        key = cache_key(t_hash, data.content_hash, targets, scfg.max_len, pairs,
                        model.cached_positions(targets == "causal"))
        with acc.main_process_first():  # the main process builds and writes the cache, the others then read it
            task.features = load_or_build(teacher_cache, key, task, model, eval_batch, device)
        model.teacher = teacher = None  # every example's features are cached: training never runs the teacher
    kd = f", L_kd λ={lambda_kd} τ={kd_temperature}" if lambda_kd else ""
    ui.info(f"distill {m}→{student_layers} layers, blocks {pairs}, {mode}, λ=({lambda_cos}, {lambda_norm}, "
            f"{lambda_ms}), norm loss {norm_loss}{kd}, {task.n_examples} examples (targets={targets}, "
            f"aligned at {'every position' if align == 'all' and targets == 'causal' else 'the last position'})")
    result = fit(task, args, run_dir, resume=resume, accelerator=acc, on_step=on_step)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return finish_llm_run(acc, run_dir, config, data, result, device=device, eval_batch=eval_batch,
                          trainable=trainable)
