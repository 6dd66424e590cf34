"""`slmrec train-teacher`: the E4SRec-style LLM recommender on a truncated pretrained decoder, on the engine."""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from slmrec_cli import ui
from slmrec_cli.data import left_pad, load_dataset, training_windows, window_inputs_targets
from slmrec_cli.errors import SlmrecError, first_line
from slmrec_cli.evaluation.evaluate import rank_split
from slmrec_cli.io import save_safetensors
from slmrec_cli.models.llmrec import DEFAULT_PROMPT, LLMRec, LLMRecConfig, add_lora, check_prompt_for_targets
from slmrec_cli.runs import (
    check_same_data,
    load_run_config,
    load_run_weights,
    open_run_dir,
    record_checksums,
    run_config,
    save_config,
    verify_checksum,
)
from slmrec_cli.train.engine import TrainArgs, fit, make_accelerator, precision_of
from slmrec_cli.train.finish import evaluate_and_record, write_efficiency

ID_TABLE = "item_embeddings.safetensors"
PROJECTIONS = "projections.safetensors"
ADAPTER = "adapter"
ADAPTER_FILES = (f"{ADAPTER}/adapter_model.safetensors", f"{ADAPTER}/adapter_config.json")


def load_id_table(ids_run: Path, data) -> tuple[torch.Tensor, dict]:
    """The frozen SASRec table of a pretrain-ids run, checked against the dataset and its own config."""
    cfg = load_run_config(ids_run)
    if cfg.get("kind") != "sasrec":
        raise SlmrecError(f"--ids {ids_run} is a '{cfg.get('kind')}' run; pass a run from `slmrec pretrain-ids`")
    check_same_data(cfg, data, ids_run)
    table = load_run_weights(ids_run, ID_TABLE).get("item_embeddings")
    if table is None or table.ndim != 2:
        raise SlmrecError(f"{ids_run}/{ID_TABLE} has no [n_items + 1, dim] 'item_embeddings' tensor; retrain it")
    if table.shape[1] != cfg["model"]["dim"]:
        raise SlmrecError(f"{ids_run}/{ID_TABLE} is {table.shape[1]} wide but its config says dim "
                          f"{cfg['model']['dim']}; the run is damaged, retrain it")
    if table.shape[0] != data.n_items + 1:
        raise SlmrecError(f"{ids_run}/{ID_TABLE} has {table.shape[0]} rows, the dataset needs {data.n_items + 1}")
    return table, cfg


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


class LLMRecTask:
    """Next-item CE; shared by the teacher and, with extra terms, the student. targets causal: the max-length windows
    of each training history (as SASRec), every real slot a target from one forward; last/all: one (history →
    target) example each."""

    def __init__(self, model: LLMRec, data, targets: str, eval_batch: int = 32):
        self.model, self.data, self.eval_batch, self.targets = model, data, eval_batch, targets
        max_len = model.cfg.max_len
        if targets == "causal":
            self.windows = torch.from_numpy(training_windows(data, max_len))
            self.n_examples = len(self.windows)
        else:
            self.users, self.ends = training_examples(data, targets)
            self.n_examples = len(self.users)
        if self.n_examples == 0:
            raise SlmrecError(f"{data.path} has no user with two training items; nothing to train on")

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        if self.targets == "causal":
            items, targets = window_inputs_targets(self.windows[torch.from_numpy(indices)])
            return {"items": items, "targets": targets}
        pairs = [(self.data.train_history(int(u)), int(e)) for u, e in zip(self.users[indices], self.ends[indices],
                                                                                 strict=True)]
        hists = [h[:e] for h, e in pairs]
        targets = [int(h[e]) for h, e in pairs]
        return {"items": torch.from_numpy(left_pad(hists, self.model.cfg.max_len)),
                "targets": torch.tensor(targets, dtype=torch.long)}

    def loss(self, model, batch):
        return model(batch["items"], batch["targets"]), {}

    def validate(self, model) -> dict[str, float]:
        device = next(model.parameters()).device
        res = rank_split(model.score_all, self.data, "valid", ("sampled",), max_len=model.cfg.max_len,
                         batch_size=self.eval_batch, device=device, desc="valid")
        return res["sampled"].metrics

    def save_best(self, model, run_dir: Path) -> None:
        save_llmrec_weights(model, run_dir)


def save_llmrec_weights(model: LLMRec, run_dir: Path) -> None:
    """LoRA in peft adapter format (swapped in whole), projections in safetensors, then their checksums."""
    run_dir = Path(run_dir)
    tmp = run_dir / f".{ADAPTER}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.decoder.save_pretrained(str(tmp))
    old = run_dir / f".{ADAPTER}.old"
    shutil.rmtree(old, ignore_errors=True)
    if (run_dir / ADAPTER).exists():
        os.replace(run_dir / ADAPTER, old)
    os.replace(tmp, run_dir / ADAPTER)
    shutil.rmtree(old, ignore_errors=True)
    save_safetensors({f"up.{k}": v for k, v in model.up.state_dict().items()}
                     | {f"down.{k}": v for k, v in model.down.state_dict().items()}, run_dir / PROJECTIONS)
    record_checksums(run_dir, [*ADAPTER_FILES, PROJECTIONS])


def param_counts(model: LLMRec) -> dict[str, int]:
    """trainable = LoRA + projections; inference = what a merged export holds (layers, norm, projections and the
    prompt's token embeddings, not the whole vocabulary or the LoRA factors)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    embed = model._base().get_input_embeddings().weight
    prompt = (model.prefix_ids.numel() + model.suffix_ids.numel()) * embed.shape[1]
    return {"trainable": trainable, "total": total, "inference": total - lora - embed.numel() + prompt}


def build_model(cfg: LLMRecConfig, base_model: str, id_table: torch.Tensor, *, device: str = "cpu",
                load_in_8bit: bool = False, load_in_4bit: bool = False, expect_hash: str | None = None,
                adapter_dir: Path | None = None, gradient_checkpointing: bool = False):
    """(LLMRec, BaseModelRef): fresh LoRA, or the saved adapter of a run."""
    from slmrec_cli.backbones import load_backbone

    decoder, tokenizer, ref = load_backbone(base_model, cfg.layers, device=device, load_in_8bit=load_in_8bit,
                                            load_in_4bit=load_in_4bit, expect_hash=expect_hash)
    if load_in_8bit or load_in_4bit:
        from peft import prepare_model_for_kbit_training

        decoder = prepare_model_for_kbit_training(decoder, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        # non-reentrant: works with DDP and needs no input that requires grad (ours come from the trainable `up`)
        enable = getattr(decoder, "activation_checkpointing_enable", None)  # transformers >= 5.2x renamed it
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            decoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if adapter_dir is None:
        decoder = add_lora(decoder, cfg)
    else:
        decoder = load_adapter(decoder, Path(adapter_dir))
    cfg.hidden = ref.hidden_size
    model = LLMRec(cfg, decoder, tokenizer, id_table)
    return model, ref


def load_adapter(decoder, adapter_dir: Path):
    """A run's saved LoRA on `decoder`; a missing, damaged or mismatched adapter is one SlmrecError."""
    from peft import PeftModel

    run = adapter_dir.parent
    for name in ADAPTER_FILES:
        if not (run / name).exists():
            raise SlmrecError(f"{run / name} is missing; the run has no trained weights yet (train or --resume it)")
        verify_checksum(run, name)
    try:
        with warnings.catch_warnings():  # peft calls a transformers API that warns about its own rename
            warnings.simplefilter("ignore", FutureWarning)
            return PeftModel.from_pretrained(decoder, str(adapter_dir))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise SlmrecError(f"{adapter_dir} is not a usable LoRA adapter for this model ({first_line(e)}); "
                          "retrain the run") from None


def load_llmrec_run(run: Path, config: dict, device: str = "cpu") -> LLMRec:
    """A teacher or student run, every file checked: present, unaltered (checksums.json), and of the right shape."""
    try:
        cfg = LLMRecConfig(**config["model"])
    except TypeError as e:
        raise SlmrecError(f"{run}/config.json has a model section this slmrec cannot build ({first_line(e)}); "
                          "retrain the run") from None
    table = load_run_weights(run, ID_TABLE).get("item_embeddings")
    if table is None or tuple(table.shape) != (cfg.n_items + 1, cfg.id_dim):
        shape = None if table is None else tuple(table.shape)
        raise SlmrecError(f"{run}/{ID_TABLE} holds {shape}, config.json needs ({cfg.n_items + 1}, {cfg.id_dim}); "
                          "the run is damaged, retrain it")
    model, _ = build_model(cfg, config["base_model"]["ref"], table, device=device,
                           expect_hash=config["base_model"]["hash"], adapter_dir=Path(run) / ADAPTER)
    proj = load_run_weights(run, PROJECTIONS)
    try:
        model.up.load_state_dict({k[3:]: v for k, v in proj.items() if k.startswith("up.")})
        model.down.load_state_dict({k[5:]: v for k, v in proj.items() if k.startswith("down.")})
    except RuntimeError as e:
        raise SlmrecError(f"{run}/{PROJECTIONS} does not match config.json ({str(e).splitlines()[0]}); "
                          "retrain the run") from None
    return model.to(device).eval()


def train_teacher(data_dir: Path, ids_run: Path, base_model: str, out: Path, model_opts: dict, args: TrainArgs, *,
                  targets: str = "causal", load_in_8bit: bool = False, load_in_4bit: bool = False,
                  gradient_checkpointing: bool = False, eval_batch: int = 32, resume: bool = False,
                  force: bool = False, on_step=None, kind: str = "teacher", extra_config: dict | None = None) -> dict:
    """Train the teacher into `out`. Under several processes every process calls this; only the main one writes
    files and gets "records" in the summary."""
    check_prompt_for_targets(model_opts.get("prompt", DEFAULT_PROMPT), targets)
    data = load_dataset(data_dir)
    table, ids_cfg = load_id_table(ids_run, data)
    acc = make_accelerator(args)
    device = str(acc.device)
    cfg = LLMRecConfig(n_items=data.n_items, id_dim=table.shape[1], hidden=0, **model_opts)
    cfg.prompt_parts()
    torch.manual_seed(args.seed)
    model, ref = build_model(cfg, base_model, table, device=device, load_in_8bit=load_in_8bit,
                             load_in_4bit=load_in_4bit, gradient_checkpointing=gradient_checkpointing)
    run_dir = open_run_dir(acc, out, resume=resume, force=force)
    config = run_config(kind, data, model=asdict(cfg), base_model=asdict(ref), train=asdict(args), targets=targets,
                        ids={"run": str(ids_run), "data_hash": ids_cfg["data"]["hash"]},
                        quantized={"load_in_8bit": load_in_8bit, "load_in_4bit": load_in_4bit},
                        gradient_checkpointing=gradient_checkpointing, processes=acc.num_processes,
                        precision=precision_of(acc),
                        effective_batch_size=args.batch_size * args.grad_accum * acc.num_processes,
                        **(extra_config or {}))
    start_llm_run(acc, run_dir, config, table, resume)
    task = LLMRecTask(model, data, targets, eval_batch)
    counts = param_counts(model)
    label = "" if ref.pretrained else " [NOT PRETRAINED: tiny-random]"
    ui.info(f"{kind} on {data.name}: {ref.ref} first {cfg.layers}/{ref.layers_total} layers{label}, "
            f"{task.n_examples} examples (targets={targets}), {counts['trainable']:,} trainable parameters")
    result = fit(task, args, run_dir, resume=resume, accelerator=acc, on_step=on_step)
    return finish_llm_run(acc, run_dir, config, data, result, device=device, eval_batch=eval_batch,
                          trainable=counts["trainable"])


def start_llm_run(acc, run_dir: Path, config: dict, table: torch.Tensor, resume: bool) -> None:
    """The config and a copy of the frozen id table, so the run reloads on its own (every process checks a resumed
    run's config; the main process writes)."""
    save_config(run_dir, config, resume, write=acc.is_main_process)
    if acc.is_main_process:
        save_safetensors({"item_embeddings": table}, run_dir / ID_TABLE)
        record_checksums(run_dir, [ID_TABLE])


def finish_llm_run(acc, run_dir: Path, config: dict, data, result, *, device: str, eval_batch: int,
                   trainable: int) -> dict:
    """Reload the selected weights, score valid and test once (every process its share), write eval/ and
    efficiency.json (main process)."""
    best = load_llmrec_run(run_dir, config, device)
    summary = {"fit": asdict(result)}
    ev = evaluate_and_record(best, data, run_dir, max_len=best.cfg.max_len, device=device, batch_size=eval_batch,
                             write=acc.is_main_process)
    if acc.is_main_process:
        write_efficiency(run_dir, best, seconds_per_epoch=result.seconds_per_epoch,
                         inference_seconds=ev["inference_seconds"], inference_users=ev["inference_users"],
                         device=device, params={**param_counts(best), "trainable": trainable})
        summary["records"] = list(ev["records"].values())
    return summary
