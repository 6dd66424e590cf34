"""Resumable checkpoints without pickle: tensors in safetensors, everything else in JSON."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import read_json, save_safetensors, write_json

CKPT = "checkpoint"


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


def save_checkpoint(run_dir: Path, model, optimizer, scheduler, trainer_state: dict) -> None:
    """Write the checkpoint into a temp dir, then swap it in: a kill leaves the old one or the new one."""
    final = Path(run_dir) / CKPT
    tmp = Path(run_dir) / f".{CKPT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_safetensors(trainable_state(model), tmp / "trainable.safetensors")
    opt_tensors, opt_meta = _optimizer_split(optimizer)
    save_safetensors(opt_tensors, tmp / "optimizer.safetensors")
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    save_safetensors(rng, tmp / "rng.safetensors")
    write_json(tmp / "state.json", {**trainer_state, "optimizer": opt_meta,
                                    "scheduler_last_epoch": scheduler.last_epoch})
    old = Path(run_dir) / f".{CKPT}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(run_dir: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNG; return the trainer state (epoch, step, best, ...)."""
    ckpt = Path(run_dir) / CKPT
    if not (ckpt / "state.json").exists():
        raise SlmrecError(f"{run_dir} has no checkpoint to resume from; start it again without --resume")
    try:
        weights = load_file(str(ckpt / "trainable.safetensors"))
        opt_tensors = load_file(str(ckpt / "optimizer.safetensors"))
        rng = load_file(str(ckpt / "rng.safetensors"))
        state = read_json(ckpt / "state.json")
    except (SafetensorError, OSError, ValueError) as e:
        raise SlmrecError(f"checkpoint in {ckpt} is unreadable ({e}); start the run again with --force") from None
    missing = set(trainable_state(model)) - set(weights)
    if missing:
        raise SlmrecError(f"checkpoint in {ckpt} does not match the model (missing {sorted(missing)[0]}); "
                          "resume with the same options, or start again with --force")
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(_optimizer_join(opt_tensors, state.pop("optimizer")))
    scheduler.last_epoch = state.pop("scheduler_last_epoch")
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    return state
