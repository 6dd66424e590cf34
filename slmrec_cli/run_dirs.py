"""Run directories on the write side: create one (never silently over another), its config.json (with what --resume
may change, and the paths it records both absolute and run-relative). Reading a run back is runs.Run."""

from __future__ import annotations

import copy
import os
import shutil
import time
from enum import Enum
from pathlib import Path

from slmrec_cli import __version__, provenance
from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import read_json, write_json

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


def run_config(kind: Enum, data, **sections) -> dict:
    """A new run's config.json: its kind (a runs.RunKind), what produced it, its dataset, then `sections`."""
    import shlex

    return {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "kind": kind.value, "version": __version__,
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
        part = out.get(section)
        value = part.get(key) if isinstance(part, dict) else None
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
