"""Typed configs are the single source of every command's options.

A config is a dataclass whose fields carry their help in `metadata` (made with `opt`) and check themselves in
`__post_init__`; a field whose type is another config nests it (a stage's `model` or `train` section).
slmrec_cli.cli_options turns each command's config class into its Typer command."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from slmrec_cli.errors import SlmrecError

OPT = "Optimisation"
RUN = "Run"
LORA = "LoRA"


def opt(help: str, default: Any = MISSING, *, factory: Callable[[], Any] | Any = MISSING, panel: str | None = None,
        decls: tuple[str, ...] = (), argument: bool = False, cli: bool = True, cli_type: Any = None,
        from_cli: Callable[[Any], Any] | None = None, cli_default: Any = MISSING,
        cli_extra: dict | None = None, choices: tuple[str, ...] = (), aliases: tuple[str, ...] = ()) -> Any:
    """A config field with its command-line option. decls: the option's names when not the field's own (e.g.
    ("--load-in-8bit",), or ("--gradient-checkpointing",) for a flag without a --no- form); argument: positional;
    cli=False: set by the stage, not the user; cli_type/from_cli/cli_default: what the command line takes and shows
    when it differs from the field (a comma list for a list, a preset name for a template); cli_extra: more
    arguments of the option itself (an eager callback, as --version's); choices: the values a string option takes
    (the help lists them, shell completion offers them, anything else is a usage error); aliases: old spellings
    still accepted for one release, hidden from the help, with a deprecation line on stderr. Typed Any, as
    dataclasses.field is, so a field `x: int = opt(...)` type-checks."""
    meta = {"help": help, "panel": panel, "decls": decls, "argument": argument, "cli": cli, "cli_type": cli_type,
            "from_cli": from_cli, "cli_default": cli_default, "cli_extra": cli_extra or {}, "choices": choices,
            "aliases": aliases}
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


def check_choice(value: Any, allowed: tuple[str, ...], option: str) -> None:
    """The check behind a `choices` option, for configs built in Python or from a file (the command line checks
    first)."""
    if value not in allowed:
        raise SlmrecError(f"{option} must be one of {', '.join(allowed)}, got '{value}'")


def check_eval_batch(value: int) -> None:
    """--eval-batch of every command that scores users."""
    if value < 1:
        raise SlmrecError(f"--eval-batch must be at least 1, got {value}")


def check_one_quantization(load_in_8bit: bool, load_in_4bit: bool) -> None:
    """--load-in-8bit and --load-in-4bit: a base model loads one way."""
    if load_in_8bit and load_in_4bit:
        raise SlmrecError("--load-in-8bit and --load-in-4bit exclude each other; pass one of them")


DEVICES = ("auto", "cpu", "cuda")


def complete_device(incomplete: str) -> list[str]:
    """Shell completion of --device: the fixed names, and cuda:0..7."""
    return [d for d in (*DEVICES, *(f"cuda:{i}" for i in range(8))) if d.startswith(incomplete)]


def device_opt(help: str) -> Any:
    """--device: auto | cpu | cuda | cuda:N (checked by check_device, resolved by slmrec_cli.devices)."""
    return opt(help, "auto", panel=RUN, cli_extra={"autocompletion": complete_device})


def check_device(spec: str) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", spec):
        raise SlmrecError(f"--device must be auto, cpu, cuda or cuda:N (N a GPU index), got '{spec}'")


def split_commas(text: str | list | tuple | None) -> list[str]:
    """The items of a comma list, blanks dropped: from the command line ("a,b", or a repeatable option's values, each
    maybe a comma list) or a config file (either form). The one comma-list parser of options and inputs."""
    parts = [] if text is None else text if isinstance(text, (list, tuple)) else [text]
    return [item for part in parts for item in (x.strip() for x in str(part).split(",")) if item]


def optional_path(value: Path | str | None) -> Path | None:
    """An optional path option's value as a Path (None stays None)."""
    return None if value is None else Path(value)
