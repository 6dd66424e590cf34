"""Run directories: create, describe, reload. A run is a pure function of (config.json, weights)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from slmrec_cli import __version__
from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import read_json, write_json

RUN_FORMAT = "slmrec-run"
RUN_FORMAT_VERSION = 1


def prepare_run_dir(out: Path, *, resume: bool, force: bool) -> Path:
    """A fresh run dir, or the existing one when resuming; never silently overwrite."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if resume:
            if not (out / "config.json").exists():
                raise SlmrecError(f"{out} is not an slmrec run (no config.json); nothing to resume")
            return out
        if not force:
            raise SlmrecError(f"{out} already exists; pass --resume to continue it or --force to replace it")
        if not (out / "config.json").exists() and not (out / "meta.json").exists():
            raise SlmrecError(f"{out} exists and is not an slmrec run; refusing to delete it, choose another --out")
        shutil.rmtree(out)
    elif resume:
        raise SlmrecError(f"{out} does not exist; nothing to resume (drop --resume to start a new run)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_config(kind: str, data, **sections) -> dict:
    return {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "kind": kind, "version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "data": {"name": data.name, "path": str(data.path), "hash": data.content_hash}, **sections}


def save_config(run_dir: Path, config: dict, resume: bool) -> None:
    """On resume the options must be those of the original run (except epochs/patience, which may grow)."""
    path = Path(run_dir) / "config.json"
    if resume and path.exists():
        old = read_json(path)
        for section in ("model", "data"):
            if old.get(section) != config.get(section):
                raise SlmrecError(f"--resume with different {section} options than {path}; "
                                  "use the original options or start a new run")
    write_json(path, config)


def load_run_config(run: Path) -> dict:
    run = Path(run)
    path = run / "config.json"
    if not run.is_dir():
        raise SlmrecError(f"{run} does not exist; pass a run directory written by slmrec")
    if not path.exists():
        raise SlmrecError(f"{run} is not an slmrec run (no config.json); pass a directory written by a training stage")
    try:
        cfg = read_json(path)
    except ValueError:
        raise SlmrecError(f"{path} is not valid JSON; the run is damaged, retrain it") from None
    if cfg.get("format") != RUN_FORMAT:
        raise SlmrecError(f"{path} is not an slmrec run config; pass a directory written by a training stage")
    if cfg.get("format_version", 0) > RUN_FORMAT_VERSION:
        raise SlmrecError(f"{run} was written by a newer slmrec (run format {cfg['format_version']}); upgrade slmrec")
    return cfg


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).exists():
        raise SlmrecError(f"{path} is missing; the run has no trained weights yet (train it, or --resume it)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise SlmrecError(f"{path} is unreadable or truncated ({e}); retrain the run") from None


def load_model(run: Path, device: str = "cpu"):
    """(config, model) for any run kind; the model has .score_all(histories) and .cfg.max_len."""
    cfg = load_run_config(run)
    kind = cfg.get("kind")
    if kind == "sasrec":
        from slmrec_cli.models.sasrec import SASRec, SASRecConfig

        model = SASRec(SASRecConfig(**cfg["model"]))
        state = load_weights(Path(run) / "model.safetensors")
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise SlmrecError(f"{run}/model.safetensors does not match its config.json ({str(e).splitlines()[0]}); "
                              "retrain the run") from None
        return cfg, model.to(device).eval()
    if kind in ("teacher", "student"):
        from slmrec_cli.teacher import load_llmrec_run

        return cfg, load_llmrec_run(Path(run), cfg, device)
    raise SlmrecError(f"{run} is a '{kind}' run, which this version of slmrec cannot load; upgrade slmrec")


def check_same_data(cfg: dict, data, run: Path) -> None:
    if cfg["data"]["hash"] != data.content_hash:
        raise SlmrecError(f"{run} was trained on data {cfg['data']['hash'][:12]} ({cfg['data']['name']}) but "
                          f"{data.path} has hash {data.content_hash[:12]}; pass the dataset the run was trained on")
