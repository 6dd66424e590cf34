"""The CLI surface does not drift: every command's option set (names, types, defaults, flags) and the config.json
the training stages resolve from their defaults match snapshots taken from the code before the typed-config
refactor. An intended change rewrites them: SLMREC_WRITE_SNAPSHOT=1 pytest tests/test_cli_snapshot.py, and the diff
is reviewed in the commit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from tests.helpers import make_dataset, run_cli

SNAPSHOTS = Path(__file__).parent / "snapshots"
WRITE = os.environ.get("SLMREC_WRITE_SNAPSHOT") == "1"
ADDED = {"print_config"}  # options added since the snapshot, on purpose (the refactor's --print-config)
VOLATILE = ("created", "version", "software", "command")
# config.json keys added since the snapshot, on purpose, with the value they must hold at the defaults: the distill
# section is now the DistillOptions dataclass whole (L_kd's options were written only when it was on); each recorded
# path is also written relative to the run dir (runs that move with their data)
ADDED_KEYS = {("student", "distill", "lambda_kd"): 0.0, ("student", "distill", "kd_temperature"): 1.0,
              ("sasrec", "paths_from_run"): {"data.path": "../tiny"},
              ("teacher", "paths_from_run"): {"data.path": "../tiny", "ids.run": "../sasrec"},
              ("student", "paths_from_run"): {"data.path": "../tiny", "ids.run": "../sasrec",
                                              "distill.teacher": "../teacher"}}


def _type_name(annotation) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _describe(command) -> dict:
    out = {}
    for p in command.params:
        if p.name in ADDED:
            continue
        default = p.default if not callable(p.default) else "<callable>"
        out[p.name] = json.loads(json.dumps({
            "kind": p.param_type_name, "opts": sorted(p.opts), "secondary": sorted(p.secondary_opts),
            "type": _type_name(p.type_descriptor.annotation), "required": p.required, "multiple": p.multiple,
            "nargs": p.nargs, "default": default, "is_flag": getattr(p, "is_flag", False),
            **({"hidden": True} if getattr(p, "hidden", False) else {})}, default=str))
    return out


def _check(name: str, actual: dict) -> None:
    path = SNAPSHOTS / name
    if WRITE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n")
    expected = json.loads(path.read_text())
    assert actual == expected, f"{name} drifted; if intended, rewrite it (module docstring) and review the diff"


def test_every_command_keeps_its_options():
    from slmrec_cli.cli import app

    group = typer.main.get_command(app)
    snap = {"(root)": _describe(group), **{n: _describe(c) for n, c in sorted(group.commands.items())}}
    _check("cli_options.json", snap)


def _resolved(run: Path, root: Path) -> dict:
    cfg = json.loads((run / "config.json").read_text().replace(str(root), "<tmp>"))
    if "distill" in cfg:  # a hash of trained weights: float summation differs between CPUs
        cfg["distill"]["teacher_hash"] = "<hash of the teacher's weights>"
    return {k: v for k, v in cfg.items() if k not in VOLATILE}


def test_training_stages_resolve_the_same_config(tmp_path, capsys):
    """Each training stage at its defaults (only the required options, one optimizer step) writes the same
    config.json as before; with --json its stdout is one JSON document: the run and its metrics records."""
    data = make_dataset(tmp_path)
    one_step = ["--epochs", "1", "--max-steps", "1"]
    runs = {
        "sasrec": ["pretrain-ids", "--data", data, *one_step],
        "teacher": ["train-teacher", "--data", data, "--ids", tmp_path / "sasrec", "--base-model", "tiny-random",
                    "--layers", "4", *one_step],
        "student": ["distill", "--teacher", tmp_path / "teacher", "--student-layers", "2", "--blocks", "2", *one_step],
    }
    resolved = {}
    for name, args in runs.items():
        code, stdout, err = run_cli([*args, "--out", tmp_path / name, "--json"], capsys)
        assert code == 0, err
        result = json.loads(stdout)
        assert result["run"] == str(tmp_path / name) and result["efficiency"]["params"]["trainable"] > 0
        assert sorted((r["split"], r["protocol"]) for r in result["records"]) == [
            ("test", "full"), ("test", "sampled"), ("valid", "full"), ("valid", "sampled")]
        recorded = json.loads((tmp_path / name / "config.json").read_text())
        assert recorded["software"]["torch"] and recorded["command"].startswith(f"slmrec {args[0]} ")
        resolved[name] = _resolved(tmp_path / name, tmp_path)
    for (*path, key), value in ADDED_KEYS.items():
        section = resolved
        for p in path:
            section = section[p]
        assert section.pop(key) == value, key
    _check("resolved_configs.json", resolved)


def test_every_option_comes_from_one_config_field():
    """No option is declared by hand: each command's parameters (and the app's own) are its config class's fields,
    plus --config, --print-config and --json (and typer's shell-completion options on the app); a field's old
    spellings are hidden options of their own."""
    from slmrec_cli.cli import app
    from slmrec_cli.cli_options import CONFIGS
    from slmrec_cli.config.fields import flat_fields

    group = typer.main.get_command(app)
    assert set(group.commands) | {"(root)"} == set(CONFIGS)
    typer_own = {"config", "print_config", "json_output", "install_completion", "show_completion"}
    for name, command in [*group.commands.items(), ("(root)", group)]:
        specs = flat_fields(CONFIGS[name])
        fields = {f.name for _, f, _ in specs}
        aliases = {a: f for _, f, _ in specs for a in f.metadata["aliases"]}
        params = {p.name: p for p in command.params}
        assert set(params) - typer_own == fields | {a.lstrip("-").replace("-", "_") for a in aliases}, name
        for alias in aliases:
            param = params[alias.lstrip("-").replace("-", "_")]
            assert param.hidden and param.opts == [alias], (name, alias)
        for _, f, _ in specs:  # a field with choices: the help lists them, shell completion offers them
            if f.metadata["choices"]:
                offered = [c.value for c in params[f.name].shell_complete(None, "")]
                assert offered == list(f.metadata["choices"]), (name, f.name)


def test_print_config_shows_the_resolved_config_and_runs_nothing(tmp_path, capsys):
    cfg_file = tmp_path / "t.yaml"
    cfg_file.write_text("lora_r: 8\nlr: 0.003\n")
    out = tmp_path / "t8"
    code, stdout, err = run_cli(["train-teacher", "--data", tmp_path, "--ids", tmp_path / "ids", "--out", out,
                                 "--config", cfg_file, "--epochs", "2", "--prompt", "instruction", "--targets", "last",
                                 "--print-config"], capsys)
    assert code == 0, err
    cfg = json.loads(stdout)
    assert cfg["model"]["lora_r"] == 8 and cfg["train"]["lr"] == 0.003 and cfg["train"]["epochs"] == 2
    assert cfg["model"]["prompt"].endswith("Answer:") and cfg["model"]["lora_targets"] == ["gate_proj", "up_proj",
                                                                                            "down_proj"]
    assert cfg["run"] == {"out": str(out), "resume": False, "force": False} and not out.exists()
    code, _, err = run_cli(["train-teacher", "--data", tmp_path, "--ids", tmp_path, "--out", out, "--lr", "-1",
                            "--print-config"], capsys)
    assert code == 2 and "--lr must be positive" in err  # the checks run before anything is printed
