"""Resumable checkpoints without pickle: tensors in safetensors, everything else in JSON."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from slmrec_cli.errors import SlmrecError, first_line
from slmrec_cli.io import file_sha256, read_json, save_safetensors, write_json

CKPT = "checkpoint"
TRAINABLE, OPTIMIZER, RNG = "trainable.safetensors", "optimizer.safetensors", "rng.safetensors"
TENSOR_FILES = (TRAINABLE, OPTIMIZER, RNG)
STATE = "state.json"  # the trainer state, the optimizer's scalars, the scheduler, and the tensor files' sha256


def _always(default):
    """A TrainState field every checkpoint has saved since the first: a checkpoint without it is incomplete."""
    return field(default=default, metadata={"always_saved": True})


@dataclass
class TrainState:
    """Where training stands: every checkpoint saves it (STATE) and --resume restores it. A field not marked
    always_saved came later: a checkpoint written before it resumes with its default."""

    epoch: int = _always(0)  # epochs finished
    batch: int = _always(0)  # micro-batches done in the current epoch
    step: int = _always(0)  # optimizer steps done
    best_mrr: float = _always(-1.0)
    best_step: int = _always(-1)
    bad_evals: int = _always(0)  # validations since the best one
    train_seconds: float = 0.0
    epochs_done: int = 0  # epochs run by this and earlier (resumed) processes
    stopped_early: bool = False
    history: list = field(default_factory=list)  # {step, epoch, valid_MRR} of each validation


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def _optimizer_split(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_states(acc=None) -> dict[str, torch.Tensor]:
    """This process's RNG states; under several processes every process's, gathered (collective: all must call)."""
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda_{i}"] = s
    if acc is not None and acc.num_processes > 1:  # each process's dropout stream is its own: keep every one
        from accelerate.utils import gather

        for i, s in enumerate(gather(torch.get_rng_state()[None].to(acc.device)).cpu()):
            out[f"torch_cpu_rank{i}"] = s
        if acc.device.type == "cuda":
            for i, s in enumerate(gather(torch.cuda.get_rng_state(acc.device)[None].to(acc.device)).cpu()):
                out[f"torch_cuda_rank{i}"] = s
    return out


def save_checkpoint(run_dir: Path, model, optimizer, scheduler, trainer_state: TrainState,
                    rng: dict[str, torch.Tensor] | None = None, world_size: int = 1) -> None:
    """Write the checkpoint into a temp dir, then swap it in: a kill leaves the old one or the new one.
    state.json, written last, records every tensor file's sha256, so a damaged file is caught at resume."""
    final = Path(run_dir) / CKPT
    tmp = Path(run_dir) / f".{CKPT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_safetensors(trainable_state(model), tmp / TRAINABLE)
    opt_tensors, opt_meta = _optimizer_split(optimizer)
    save_safetensors(opt_tensors, tmp / OPTIMIZER)
    save_safetensors(rng if rng is not None else rng_states(), tmp / RNG)
    sha = {f: file_sha256(tmp / f) for f in TENSOR_FILES}
    meta = {"optimizer": opt_meta, "scheduler_last_epoch": scheduler.last_epoch, "world_size": world_size,
            "sha256": sha}
    write_json(tmp / STATE, {**asdict(trainer_state), **meta})
    old = Path(run_dir) / f".{CKPT}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def recover_checkpoint(run_dir: Path) -> None:
    """A kill between the two renames of save_checkpoint leaves only the previous checkpoint, as .old: restore it."""
    final, old = Path(run_dir) / CKPT, Path(run_dir) / f".{CKPT}.old"
    if not final.exists() and (old / STATE).exists():
        os.replace(old, final)


def load_checkpoint(run_dir: Path, model, optimizer, scheduler, *, rank: int = 0,
                    world_size: int = 1) -> TrainState:
    """Restore model, optimizer, scheduler and RNG; return the trainer state.
    Every problem with the files is one SlmrecError: missing, truncated, altered, or from other options."""
    ckpt = Path(run_dir) / CKPT
    if not (ckpt / STATE).exists():
        raise SlmrecError(f"{run_dir} has no checkpoint to resume from; start it again without --resume")
    damaged = "; start the run again with --force"
    try:
        state = read_json(ckpt / STATE)
        for name, digest in state.get("sha256", {}).items():
            if file_sha256(ckpt / name) != digest:
                raise SlmrecError(f"checkpoint file {ckpt / name} does not match its recorded sha256 (damaged or "
                                  f"changed after it was written){damaged}")
        weights = load_file(str(ckpt / TRAINABLE))
        opt_tensors = load_file(str(ckpt / OPTIMIZER))
        rng = load_file(str(ckpt / RNG))
    except (SafetensorError, OSError, ValueError, AttributeError) as e:
        raise SlmrecError(f"checkpoint in {ckpt} is unreadable ({first_line(e)}){damaged}") from None
    always = [f.name for f in fields(TrainState) if f.metadata.get("always_saved")]
    lacking = [k for k in (*always, "optimizer", "scheduler_last_epoch") if k not in state]
    if lacking or "torch_cpu" not in rng:
        raise SlmrecError(f"checkpoint in {ckpt} is incomplete (no {(lacking or ['torch_cpu'])[0]}){damaged}")
    saved_world = state.get("world_size", 1)
    if saved_world != world_size:
        raise SlmrecError(f"checkpoint in {ckpt} was written by {saved_world} process(es), this run has "
                          f"{world_size}; resume with the same number of processes (data order and steps depend on it)")
    missing = set(trainable_state(model)) - set(weights)
    if missing:
        raise SlmrecError(f"checkpoint in {ckpt} does not match the model (missing {sorted(missing)[0]}); "
                          "resume with the same options, or start again with --force")
    try:
        model.load_state_dict(weights, strict=False)
        optimizer.load_state_dict(_optimizer_join(opt_tensors, state.pop("optimizer")))
        scheduler.last_epoch = state.pop("scheduler_last_epoch")
    except (RuntimeError, ValueError, KeyError) as e:
        raise SlmrecError(f"checkpoint in {ckpt} does not match the model or optimizer ({first_line(e)}); "
                          "resume with the same options, or start again with --force") from None
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    torch.set_rng_state(rng.get(f"torch_cpu_rank{rank}", rng["torch_cpu"]))
    if torch.cuda.is_available():
        if f"torch_cuda_rank{rank}" in rng:
            torch.cuda.set_rng_state(rng[f"torch_cuda_rank{rank}"], torch.cuda.current_device())
        else:
            states = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_") and "rank" not in k]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
    return TrainState(**{f.name: state[f.name] for f in fields(TrainState) if f.name in state})

