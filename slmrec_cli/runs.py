"""Run directories: create, describe, reload. A run is a pure function of (config.json, weights)."""

from __future__ import annotations

import copy
import os
import shutil
import time
from pathlib import Path

import torch

from slmrec_cli import __version__, provenance
from slmrec_cli.base_model import BaseModelRef
from slmrec_cli.config.models import LLMRecConfig, SASRecConfig
from slmrec_cli.errors import SlmrecError, first_line
from slmrec_cli.io import CHECKSUMS, file_sha256, read_json, write_json
from slmrec_cli.models.build import (
    ADAPTER,
    ADAPTER_FILES,
    ID_TABLE,
    PROJECTIONS,
    build_model,
    load_projections,
    save_weights,
)
from slmrec_cli.models.sasrec import SASRec

RUN_FORMAT = "slmrec-run"
RUN_FORMAT_VERSION = 1


def prepare_run_dir(out: Path, *, resume: bool, force: bool, create: bool = True) -> Path:
    """A fresh run dir, or the existing one when resuming; never silently overwrite. create=False only checks."""
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
        if create:
            shutil.rmtree(out)
    elif resume:
        raise SlmrecError(f"{out} does not exist; nothing to resume (drop --resume to start a new run)")
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


def open_run_dir(acc, out: Path, *, resume: bool, force: bool) -> Path:
    """prepare_run_dir under several processes: every process checks (so all fail alike), then only the main one
    deletes or creates, and the others wait for it."""
    prepare_run_dir(out, resume=resume, force=force, create=False)
    acc.wait_for_everyone()
    if acc.is_main_process:
        prepare_run_dir(out, resume=resume, force=force)
    acc.wait_for_everyone()
    return Path(out)


def run_config(kind: str, data, **sections) -> dict:
    import shlex

    return {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "kind": kind, "version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "software": provenance.software(),
            "command": shlex.join(provenance.COMMAND) if provenance.COMMAND else None,
            "data": {"name": data.name, "path": str(data.path), "hash": data.content_hash}, **sections}


# what --resume may change (the run's length, how often it validates and logs), and where the same setting may be
# written differently (when, by which version, and paths whose contents the recorded hashes identify)
RESUME_MAY_CHANGE = ("train.epochs", "train.patience", "train.eval_every", "train.log_with", "train.log_every")
INCIDENTAL = ("created", "version", "command", "data.path", "ids.run", "distill.teacher", "distill.teacher_cache")

# the paths a run records: each as an absolute path under its own key, and relative to the run dir under
# "paths_from_run". Loading prefers the run-relative one when it exists, else the absolute one: a run works from any
# working directory, after the study (runs and data) moves as a whole, and when one run is copied elsewhere alone.
# The hashes recorded beside them (data, teacher, id table) say whether what is found is what was used.
RUN_PATHS = ("data.path", "ids.run", "distill.teacher", "distill.teacher_cache")
FROM_RUN = "paths_from_run"


def portable(config: dict, run_dir: Path) -> dict:
    """A copy of config as written to RUN/config.json: RUN_PATHS absolute, and relative to run_dir in FROM_RUN."""
    out, rel = copy.deepcopy(config), {}
    for name in RUN_PATHS:
        section, key = name.split(".")
        value = out.get(section).get(key) if isinstance(out.get(section), dict) else None
        if isinstance(value, str) and value:
            out[section][key] = os.path.abspath(value)
            try:
                rel[name] = os.path.relpath(out[section][key], os.path.abspath(run_dir))
            except ValueError:  # another drive (Windows): no relative path exists
                pass
    out[FROM_RUN] = rel
    return out


def located(config: dict, run_dir: Path) -> dict:
    """config (as read from run_dir/config.json) with each recorded path resolved: run-relative where that exists,
    else the absolute one. Runs written before FROM_RUN keep their paths as given (relative to where they ran)."""
    recorded = config.get(FROM_RUN)
    for name, rel in (recorded.items() if isinstance(recorded, dict) else ()):
        section, _, key = str(name).partition(".")
        if not isinstance(config.get(section), dict) or not isinstance(rel, str):
            continue
        candidate = os.path.abspath(os.path.join(run_dir, rel))
        if os.path.exists(candidate) or not os.path.exists(str(config[section].get(key))):
            config[section][key] = candidate
    return config


def _flat(section: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in section.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _as_json(value):
    """value as it reads back from JSON (tuples become lists), so a recorded option compares equal to its live one."""
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    return value


def resume_changes(old: dict, new: dict) -> tuple[list[str], list[str]]:
    """(what differs, as 'option old → new'; options the old run does not record, written before they existed)."""
    a, b = _flat(_as_json(old)), _flat(_as_json(new))
    keys = sorted(k for k in set(b) - set(RESUME_MAY_CHANGE) - set(INCIDENTAL)
                  if not k.startswith(("software.", f"{FROM_RUN}.")))
    unrecorded = [k for k in keys if k not in a]
    changed = [f"{k.rsplit('.', 1)[-1].replace('_', '-')} {a[k]} → {b[k]}" for k in keys if k in a and a[k] != b[k]]
    return changed, unrecorded


def save_config(run_dir: Path, config: dict, resume: bool, write: bool = True) -> None:
    """On resume the options must be those of the original run; only the run's length and how often it validates
    and logs may change. Every process checks; only the one with write=True (the main process) writes."""
    path = Path(run_dir) / "config.json"
    if resume and path.exists():
        try:
            old = read_json(path)
        except ValueError:
            raise SlmrecError(f"{path} is not valid JSON; the run is damaged, start it again with --force") from None
        changed, unrecorded = resume_changes(old, config)
        if changed:
            raise SlmrecError(f"--resume with other options than {path}: {', '.join(changed)}; only --epochs, "
                              "--patience, --eval-every, --eval-batch and --log-with may change (or start a new run "
                              "with --force)")
        if unrecorded:
            from slmrec_cli import ui

            ui.info(f"[yellow]{path} predates options it does not record ({', '.join(unrecorded)}); resuming "
                    "without comparing them[/]")
    if write:
        write_json(path, portable(config, run_dir))


def load_run_config(run: Path) -> dict:
    """A run's config.json, checked: format, version, and the sections every later stage reads."""
    run = Path(run)
    path = run / "config.json"
    if not run.is_dir():
        raise SlmrecError(f"{run} does not exist; pass a run directory written by slmrec")
    if not path.exists():
        raise SlmrecError(f"{run} is not an slmrec run (no config.json); pass a directory written by a training stage")
    try:
        cfg = read_json(path)
    except (ValueError, UnicodeDecodeError):
        raise SlmrecError(f"{path} is not valid JSON; the run is damaged, retrain it") from None
    if not isinstance(cfg, dict) or cfg.get("format") != RUN_FORMAT:
        raise SlmrecError(f"{path} is not an slmrec run config; pass a directory written by a training stage")
    version = cfg.get("format_version", 0)
    if not isinstance(version, int):
        raise SlmrecError(f"{path} has a run format version {version!r}, not a number; the run is damaged, retrain it")
    if version > RUN_FORMAT_VERSION:
        raise SlmrecError(f"{run} was written by a newer slmrec (run format {version}); upgrade slmrec")
    data = cfg.get("data")
    sections = [("kind", str), ("model", dict), ("data", dict)]
    if cfg.get("kind") in ("teacher", "student"):
        sections.append(("base_model", dict))
    for key, kind in sections:
        if not isinstance(cfg.get(key), kind):
            raise SlmrecError(f"{path} has no valid '{key}' section; the run is damaged or incomplete, retrain it")
    if not all(isinstance(data.get(k), str) for k in ("name", "path", "hash")):
        raise SlmrecError(f"{path} does not record its dataset (name, path, hash); the run is damaged, retrain it")
    return located(cfg, run)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).exists():
        raise SlmrecError(f"{path} is missing; the run has no trained weights yet (train it, or --resume it)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise SlmrecError(f"{path} is unreadable or truncated ({first_line(e)}); retrain the run") from None


def record_checksums(run_dir: Path, names: list[str]) -> None:
    """Record the sha256 of weight files a later stage loads (relative names), so a damaged file is refused."""
    path = Path(run_dir) / CHECKSUMS
    try:
        sums = read_json(path)["sha256"] if path.exists() else {}
    except (ValueError, KeyError, TypeError):
        sums = {}
    sums.update({name: file_sha256(Path(run_dir) / name) for name in names})
    write_json(path, {"format": "slmrec-checksums", "sha256": dict(sorted(sums.items()))})


def verify_checksum(run_dir: Path, name: str) -> None:
    """Refuse a file whose bytes are not those recorded when it was written (runs without checksums.json pass)."""
    path = Path(run_dir) / CHECKSUMS
    if not path.exists() or not (Path(run_dir) / name).exists():
        return
    try:
        expected = read_json(path)["sha256"].get(name)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SlmrecError(f"{path} is damaged; retrain the run") from None
    if expected is not None and file_sha256(Path(run_dir) / name) != expected:
        raise SlmrecError(f"{Path(run_dir) / name} does not match the sha256 recorded when it was written (damaged, "
                          "edited, or the run was killed while saving it); --resume or retrain the run")


def load_run_weights(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    """A run's safetensors file, checked against the run's recorded sha256 first."""
    if not (Path(run_dir) / name).exists():
        raise SlmrecError(f"{Path(run_dir) / name} is missing; the run has no trained weights yet (train it, "
                          "or --resume it)")
    verify_checksum(run_dir, name)
    return load_weights(Path(run_dir) / name)


QUANTIZATIONS = ("run", "none", "8bit", "4bit")  # how a later stage loads an LLM run's base: "run" = as it trained


def run_quantization(config: dict) -> str:
    """How an LLM run's base model was loaded when it trained: none, 8bit or 4bit (bitsandbytes)."""
    q = config.get("quantized") or {}
    return "8bit" if q.get("load_in_8bit") else "4bit" if q.get("load_in_4bit") else "none"


def load_model(run: Path, device: str = "cpu", quantization: str = "run"):
    """(config, model) for any run kind; the model has .score_all(histories) and .cfg.max_len. An LLM run's base is
    loaded as the run trained (8-bit or 4-bit runs stay so) unless `quantization` says otherwise."""
    cfg = load_run_config(run)
    kind = cfg.get("kind")
    if kind == "sasrec":
        try:
            model = SASRec(SASRecConfig(**cfg["model"]))
        except (TypeError, ValueError) as e:
            raise SlmrecError(f"{run}/config.json has a model section this slmrec cannot build ({first_line(e)}); "
                              "retrain the run") from None
        state = load_run_weights(run, "model.safetensors")
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise SlmrecError(f"{run}/model.safetensors does not match its config.json ({str(e).splitlines()[0]}); "
                              "retrain the run") from None
        return cfg, model.to(device).eval()
    if kind in ("teacher", "student"):
        return cfg, load_llmrec_run(Path(run), cfg, device, quantization)
    raise SlmrecError(f"{run} is a '{kind}' run, which this version of slmrec cannot load; upgrade slmrec")


def check_same_data(cfg: dict, data, run: Path) -> None:
    if cfg["data"]["hash"] != data.content_hash:
        raise SlmrecError(f"{run} was trained on data {cfg['data']['hash'][:12]} ({cfg['data']['name']}) but "
                          f"{data.path} has hash {data.content_hash[:12]}; pass the dataset the run was trained on")


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


def load_llmrec_run(run: Path, config: dict, device: str = "cpu", quantization: str = "run"):
    """A teacher or student run, every file checked: present, unaltered (checksums.json), and of the right shape; its
    base loaded as the run trained (quantization "run") or as `quantization` says (none, 8bit, 4bit)."""
    run = Path(run)
    try:
        cfg = LLMRecConfig(**config["model"])
    except (TypeError, SlmrecError) as e:
        raise SlmrecError(f"{run}/config.json has a model section this slmrec cannot build ({first_line(e)}); "
                          "retrain the run") from None
    table = load_run_weights(run, ID_TABLE).get("item_embeddings")
    if table is None or tuple(table.shape) != (cfg.n_items + 1, cfg.id_dim):
        shape = None if table is None else tuple(table.shape)
        raise SlmrecError(f"{run}/{ID_TABLE} holds {shape}, config.json needs ({cfg.n_items + 1}, {cfg.id_dim}); "
                          "the run is damaged, retrain it")
    for name in ADAPTER_FILES:
        if not (run / name).exists():
            raise SlmrecError(f"{run / name} is missing; the run has no trained weights yet (train or --resume it)")
        verify_checksum(run, name)
    quant = run_quantization(config) if quantization == "run" else quantization
    model, _ = build_model(cfg, BaseModelRef.recorded(config["base_model"]), table, device=device,
                           load_in_8bit=quant == "8bit", load_in_4bit=quant == "4bit",
                           expect_hash=config["base_model"]["hash"], adapter_dir=run / ADAPTER)
    load_projections(model, load_run_weights(run, PROJECTIONS), run / PROJECTIONS)
    return model.to(device).eval()


def save_llmrec_weights(model, run_dir: Path) -> None:
    """A teacher's or student's weights into its run, then their checksums."""
    record_checksums(run_dir, save_weights(model, run_dir))
