"""Typed configs are the single source of every command's options.

A config is a dataclass whose fields carry their help in `metadata` (made with `opt`) and check themselves in
`__post_init__`; a field whose type is another config nests it (a stage's `model` or `train` section).
slmrec_cli.cli_options turns each command's config class into its Typer command."""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, asdict, field, fields, is_dataclass
from pathlib import Path
from typing import Any

OPT = "Optimisation"
RUN = "Run"
LORA = "LoRA"
CLI_KEYS = ("help", "panel", "decls", "argument", "cli_type", "from_cli", "cli_default")


def opt(help: str, default: Any = MISSING, *, factory: Callable[[], Any] | Any = MISSING, panel: str | None = None,
        decls: tuple[str, ...] = (), argument: bool = False, cli: bool = True, cli_type: Any = None,
        from_cli: Callable[[Any], Any] | None = None, cli_default: Any = MISSING,
        cli_extra: dict | None = None) -> Field:
    """A config field with its command-line option. decls: the option's names when not the field's own (e.g.
    ("--json",), or ("--gradient-checkpointing",) for a flag without a --no- form); argument: positional;
    cli=False: set by the stage, not the user; cli_type/from_cli/cli_default: what the command line takes and shows
    when it differs from the field (a comma list for a list, a preset name for a template); cli_extra: more
    arguments of the option itself (an eager callback, as --version's)."""
    meta = {"help": help, "panel": panel, "decls": decls, "argument": argument, "cli": cli, "cli_type": cli_type,
            "from_cli": from_cli, "cli_default": cli_default, "cli_extra": cli_extra or {}}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def with_defaults(cls: type, name: str, doc: str, **defaults: Any) -> type:
    """A subclass of config `cls` whose listed fields default otherwise (each stage its own training defaults)."""
    hints = typing.get_type_hints(cls)
    spec = [(f.name, hints[f.name], dataclasses.field(default=defaults[f.name], metadata=f.metadata))
            for f in fields(cls) if f.name in defaults]
    sub = dataclasses.make_dataclass(name, spec, bases=(cls,))
    sub.__doc__, sub.__module__ = doc, cls.__module__
    return sub


def _nested(hint: Any) -> type | None:
    return hint if isinstance(hint, type) and is_dataclass(hint) else None


def flat_fields(cls: type, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Field, Any]]:
    """(path, field, type) of every option of config `cls`, nested configs flattened in place."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        sub = _nested(hints[f.name])
        if sub is not None:
            out.extend(flat_fields(sub, (*path, f.name)))
        elif f.metadata.get("cli", False):
            out.append(((*path, f.name), f, hints[f.name]))
    return out


def cli_default(f: Field) -> Any:
    if "cli_default" in f.metadata and f.metadata["cli_default"] is not MISSING:
        return f.metadata["cli_default"]
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return inspect.Parameter.empty


def build(cls: type, values: dict[str, Any]) -> Any:
    """Config `cls` from flat option values (missing ones keep their defaults); checks run in __post_init__."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        sub = _nested(hints[f.name])
        if sub is not None:
            kwargs[f.name] = build(sub, values)
        elif f.metadata.get("cli", False) and f.name in values:
            value = values[f.name]
            convert = f.metadata.get("from_cli")
            kwargs[f.name] = convert(value) if convert else value
    return cls(**kwargs)


def to_json(value: Any) -> Any:
    """A config as plain JSON values (paths as strings)."""
    return json.loads(json.dumps(asdict(value) if is_dataclass(value) else value, default=str))


def split_commas(text: str | list[str]) -> list[str]:
    """A comma list from the command line ("a,b") or a config file (either form)."""
    items = text if isinstance(text, list) else str(text).split(",")
    return [str(t).strip() for t in items if str(t).strip()]


def run_path(value: Path | str | None) -> Path | None:
    return None if value is None else Path(value)
