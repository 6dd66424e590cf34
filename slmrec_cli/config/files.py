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

