"""`--config FILE` (YAML or TOML) on every stage: the file sets defaults, the command line overrides them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import click
import typer

from slmrec_cli.errors import SlmrecError


def load_config_file(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise SlmrecError(f"config file {path} does not exist; pass an existing YAML or TOML file")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            cfg = tomllib.loads(text)
        else:
            import yaml

            cfg = yaml.safe_load(text) or {}
    except Exception as e:  # the parsers raise their own error types
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SlmrecError(f"config file {path} does not parse ({first}); fix its syntax") from None
    if not isinstance(cfg, dict):
        raise SlmrecError(f"config file {path} must hold a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in cfg.items()}


def _apply_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is None:
        return value
    cfg = load_config_file(value)
    known = {p.name for p in ctx.command.params if p.name != "config"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise SlmrecError(f"config file {value}: unknown option '{unknown[0]}' for `{ctx.info_name}`; "
                          f"known options: {', '.join(sorted(known))}")
    ctx.default_map = {**(ctx.default_map or {}), **cfg}
    return value


config_option = Annotated[
    Path | None,
    typer.Option("--config", help="YAML or TOML file of options (names as on the command line); "
                 "command-line options override it.", is_eager=True, callback=_apply_config),
]


def check_model_options(model: dict) -> None:
    for key in ("dim", "layers", "heads", "max_len"):
        if model[key] < 1:
            raise SlmrecError(f"--{key.replace('_', '-')} must be at least 1, got {model[key]}")
    if model["dim"] % model["heads"]:
        raise SlmrecError(f"--dim {model['dim']} is not divisible by --heads {model['heads']}; change one of them")
    if not 0 <= model["dropout"] < 1:
        raise SlmrecError(f"--dropout must be in [0, 1), got {model['dropout']}")


def llm_options(*, layers: int, max_len: int, prompt: str | None, lora_r: int, lora_alpha: int,
                lora_dropout: float, lora_targets: str) -> dict:
    """Validated LLMRecConfig fields from the CLI values."""
    if layers < 1:
        raise SlmrecError(f"--layers must be at least 1, got {layers}")
    if max_len < 1:
        raise SlmrecError(f"--max-len must be at least 1, got {max_len}")
    if lora_r < 1 or lora_alpha < 1:
        raise SlmrecError(f"--lora-r and --lora-alpha must be at least 1, got {lora_r} and {lora_alpha}")
    if not 0 <= lora_dropout < 1:
        raise SlmrecError(f"--lora-dropout must be in [0, 1), got {lora_dropout}")
    targets = [t.strip() for t in lora_targets.split(",") if t.strip()]
    if not targets:
        raise SlmrecError("--lora-targets is empty; name at least one module, e.g. gate_proj,up_proj,down_proj")
    opts = {"layers": layers, "max_len": max_len, "lora_r": lora_r, "lora_alpha": lora_alpha,
            "lora_dropout": lora_dropout, "lora_targets": targets}
    if prompt is not None:
        from slmrec_cli.models.llmrec import PROMPTS

        prompt = PROMPTS.get(prompt, prompt)
        if prompt.count("{history}") != 1:
            raise SlmrecError("--prompt must contain '{history}' exactly once (where the item sequence goes)")
        opts["prompt"] = prompt
    return opts
