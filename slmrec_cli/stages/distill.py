"""`slmrec distill`: an N-layer student from an M-layer teacher run (SLMRec, Section 4), on the shared engine."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from slmrec_cli import ui
from slmrec_cli.config.distill import FROM_TEACHER
from slmrec_cli.config.models import LLMRecConfig, check_prompt_for_targets
from slmrec_cli.config.stages import DistillConfig
from slmrec_cli.config.train import TrainArgs
from slmrec_cli.data import SeqData, load_dataset
from slmrec_cli.distill.blocks import block_layers
from slmrec_cli.distill.cache import FeatureCache, cache_key, load_or_build, open_cache, teacher_fingerprint
from slmrec_cli.distill.model import Distiller, block_states, cached_positions
from slmrec_cli.distill.terms import L_KD
from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import save_safetensors
from slmrec_cli.models.build import ID_TABLE, PROJECTIONS, build_model, load_projections
from slmrec_cli.models.llmrec import LLMRec
from slmrec_cli.run_dirs import prepare_run_dir, run_config
from slmrec_cli.runs import Run, RunKind, quantization_of, record_checksums
from slmrec_cli.train.accelerator import base_dtype, make_accelerator, precision_of
from slmrec_cli.train.lifecycle import process_sections, training_result
from slmrec_cli.train.llm_task import LLMRecTask, train_llm_run, trainable

MS_ADAPTERS = "ms_adapters.safetensors"


class DistillTask(LLMRecTask):
    def __init__(self, model: Distiller, data, targets: str, eval_batch: int, features: FeatureCache | None):
        super().__init__(model.student, data, targets, eval_batch)
        self.model, self.features = model, features

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        out = super().batch(indices)
        if self.features is not None:
            feats = self.features.rows(indices).transpose(0, 1)  # [blocks, batch, (T,) d1]
            # every-slot features are cached at max_len slots: keep the ones the trimmed batch still has
            out["teacher_feats"] = feats[:, :, -out["items"].shape[1] :] if feats.dim() == 4 else feats
        return out

    def loss(self, model, batch):
        loss, terms = model(batch["items"], batch["targets"], batch.get("teacher_feats"))
        return loss, terms  # detached tensors: the engine reads them on the host only when it logs

    def validate(self, model) -> dict:
        return super().validate(model.student)

    def save_best(self, model, run_dir: Path) -> None:
        super().save_best(model.student, run_dir)
        if len(model.ms_adapters):
            save_safetensors(dict(model.ms_adapters.state_dict()), Path(run_dir) / MS_ADAPTERS)
            record_checksums(run_dir, [MS_ADAPTERS])


def load_teacher(cfg: DistillConfig) -> tuple[Run, SeqData, str]:
    """(the teacher run, its dataset, the targets to train on), every check done before anything is built."""
    teacher = Run.load(cfg.teacher).require(RunKind.TEACHER, option="--teacher",
                                            hint="pass a run from `slmrec train-teacher`")
    data = load_dataset(cfg.data or teacher.data.path)
    teacher.check_data(data)
    targets = cfg.targets or teacher.targets
    check_prompt_for_targets(teacher.llm_model.prompt, targets)
    if cfg.distill.align == "all" and targets != "causal":
        raise SlmrecError(f"--align all needs --targets causal (with --targets {targets} each example has one "
                          "position); use --align last")
    return teacher, data, targets


def distill(cfg: DistillConfig, *, on_step=None) -> dict:
    """Distill a student into cfg.run.out. Under several processes every process calls this; only the main one
    writes files (the teacher cache included) and gets "records" in the summary.

    With --teacher-cache the frozen teacher is loaded only to build the cache (then freed, before the student is
    built); a cache already built for this teacher and setup is read alone: the teacher's decoder is never loaded,
    only its id table and, for L_kd, its down-projection."""
    args: TrainArgs = cfg.train
    opts = cfg.distill
    trun, data, targets = load_teacher(cfg)
    m = trun.layers
    pairs = block_layers(m, opts.student_layers, opts.blocks)
    t_hash = teacher_fingerprint(cfg.teacher)
    prepare_run_dir(cfg.run.out, resume=cfg.run.resume, force=cfg.run.force, create=False)  # before a long build
    acc = make_accelerator(args, Path(cfg.run.out), auto_bf16=True)
    device = str(acc.device)
    student_cfg = replace(trun.llm_model, layers=opts.student_layers)
    asked = quantization_of(cfg.load_in_8bit, cfg.load_in_4bit)
    t_quant = trun.quantization if asked == "none" else asked
    cache, teacher = None, None
    if opts.needs_teacher and cfg.teacher_cache is not None:
        key = cache_key(t_hash, data.content_hash, targets, student_cfg.max_len, pairs,
                        cached_positions(opts, targets == "causal"), cfg.teacher_cache_dtype, precision_of(acc),
                        t_quant)
        examples = LLMRecTask(_Shape(student_cfg), data, targets)  # the examples' layout (teacher's = student's)
        cache = open_cache(cfg.teacher_cache, key, examples.n_examples)
        if cache is None:
            teacher = trun.load_model(device, t_quant)
            # every process computes its share of the batches into the one file (docs/scaling.md)
            cache = load_or_build(cfg.teacher_cache, key, examples,
                                  partial(block_states, teacher, pairs=pairs, positions=key["positions"]),
                                  cfg.llm.eval_batch, device, acc.autocast, rank=acc.process_index,
                                  world=acc.num_processes, barrier=acc.wait_for_everyone)
            teacher = None  # every example's features are cached: training never runs the teacher
            gc.collect()
    elif opts.needs_teacher and opts.mode == "offline":
        teacher = trun.load_model(device, t_quant)
    table = trun.weights(ID_TABLE)["item_embeddings"]
    projections = trun.weights(PROJECTIONS)
    build = partial(build_model, base_model=trun.llm_base, id_table=table, device=device,
                    expect_hash=trun.llm_base.hash, gradient_checkpointing=cfg.llm.gradient_checkpointing,
                    dtype=base_dtype(acc))
    # seeded here, after any teacher load: the student starts the same whether the cache was built now or before,
    # and the same offline and online (the online teacher draws from a generator of its own)
    torch.manual_seed(args.seed)
    if opts.mode == "online":  # RQ4: the teacher starts from the base model like the student, and trains alongside
        teacher = online_teacher(trun.llm_model, build, args.seed)
    student, ref = build(student_cfg)
    teacher_down = None
    if opts.weight(L_KD) and teacher is None:  # L_kd from the cache: the trained teacher's down-projection
        teacher_down = torch.nn.Linear(student_cfg.hidden, student_cfg.id_dim)
        teacher_down.load_state_dict({k[5:]: v for k, v in projections.items() if k.startswith("down.")})
    if opts.init_projections == FROM_TEACHER:  # from the trained teacher, also when an online one replaces it
        load_projections(student, projections, cfg.teacher / PROJECTIONS)
    model = Distiller(student, teacher, pairs, opts, teacher_down=teacher_down).to(device)
    del teacher  # the Distiller holds it (live or online distillation)
    section = {"teacher": str(cfg.teacher), "teacher_hash": t_hash, "teacher_layers": m, "pairs": pairs,
               "teacher_cache": str(cfg.teacher_cache) if cfg.teacher_cache else None,
               "teacher_cache_dtype": cfg.teacher_cache_dtype if cfg.teacher_cache else None,
               "teacher_quantization": t_quant if opts.mode == "offline" else None, **asdict(opts)}
    config = run_config(RunKind.STUDENT, data, model=asdict(student.cfg), base_model=asdict(ref),
                        train=asdict(args), targets=targets, ids=trun.ids, distill=section,
                        gradient_checkpointing=cfg.llm.gradient_checkpointing, **process_sections(acc, args))
    task = DistillTask(model, data, targets, cfg.llm.eval_batch, cache)
    ui.info(f"distill {m}→{opts.student_layers} layers, blocks {pairs}, {opts.mode}, {model.describe()}, "
            f"{task.n_examples} examples (targets={targets}, aligned at "
            f"{'every position' if opts.align == 'all' and targets == 'causal' else 'the last position'})")

    # efficiency.json: the student's own trainable parameters; the L_ms adapters (and an online teacher) apart
    extra = {"ms_adapters_trainable": trainable(model.ms_adapters)}
    if model.teacher is not None and opts.mode == "online":
        extra["online_teacher_trainable"] = trainable(model.teacher)
    n_trainable = trainable(student)
    del model, student  # the task holds them alone, and releases them before the selected weights are reloaded
    return train_llm_run(acc, cfg.run, config, task, args, data, table, eval_batch=cfg.llm.eval_batch,
                         trainable_params=n_trainable, extra_params=extra, on_step=on_step)


def online_teacher(cfg: LLMRecConfig, build: Callable, seed: int) -> LLMRec:
    """RQ4's teacher, fresh from the base model (`build(cfg)`), built on the generator seeded with `seed` (the weights
    it always started from) inside torch.random.fork_rng, which restores the generator after: the student and the L_ms
    adapters built next draw exactly what they draw offline, so online and offline students start from the same
    weights."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return build(cfg)[0]


class _Shape:
    """What LLMRecTask reads of a model to lay out the examples (its config), without building one."""

    def __init__(self, cfg: LLMRecConfig) -> None:
        self.cfg = cfg


def main(cfg) -> dict:
    """`slmrec distill`: the run, then its valid and test metrics as a table (main process); the result
    is the run, its fit, metrics records and efficiency."""
    return training_result(distill(cfg), cfg.run.out, f"student {cfg.run.out}")
