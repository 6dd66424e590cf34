"""A Typer command from a config class: one option per field (nested configs flattened, names unique), plus
`--config FILE` (options from YAML/TOML), `--print-config` (the resolved config as JSON, nothing run) and `--json`
(the command's result as one JSON document on stdout). The stage that runs it is imported only when the command
runs, so `slmrec --help` stays instant.

A field with `choices` becomes an Enum option (the help lists the values, shell completion offers them); a field
with `aliases` also gets one hidden option per old spelling, which sets the same field and says on stderr that it
is deprecated."""

from __future__ import annotations

import enum
import importlib
import inspect
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import MISSING, Field
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from slmrec_cli.config.fields import RUN, build, cli_default, flat_fields
from slmrec_cli.errors import SlmrecError
from slmrec_cli.json_output import dumps


class _FlagsWithoutPlaceholder:
    """Flags take no value: no <bool> after them in the help (typer shows one on --help and the completion flags)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for p in params:
            if getattr(p, "is_flag", False) and p.metavar is None:
                p.metavar = ""
        return params


class Command(_FlagsWithoutPlaceholder, TyperCommand):
    pass


class Group(_FlagsWithoutPlaceholder, TyperGroup):
    pass


def option_name(f: Field) -> str:
    """The option's main spelling, as messages name it."""
    decls = [d for d in f.metadata["decls"] if d.startswith("--")]
    return decls[0] if decls else "--" + f.name.replace("_", "-")


def _choice_type(f: Field) -> type[enum.Enum]:
    return enum.Enum(f.name, {c: c for c in f.metadata["choices"]}, type=str)


def _cli_type(f: Field, hint: Any) -> Any:
    meta = f.metadata
    if meta["choices"]:
        choice = _choice_type(f)
        return choice | None if cli_default(f) is None or meta["aliases"] else choice
    return meta["cli_type"] or hint


def _parameter(f: Field, hint: Any) -> inspect.Parameter:
    meta = f.metadata
    kind = typer.Argument if meta["argument"] else typer.Option
    info = {"help": meta["help"], **meta.get("cli_extra", {})}
    if hint is bool and not meta["argument"]:
        info["metavar"] = ""  # a flag takes no value: no <bool> placeholder in the help
    if meta["panel"] and not meta["argument"]:
        info["rich_help_panel"] = meta["panel"]
    default = cli_default(f)
    base = _cli_type(f, hint)
    if meta["aliases"] and default is inspect.Parameter.empty:  # required, but an old spelling may give it instead
        default, base = None, base | None
        info["help"] += " (required)"
    annotation = Annotated[base, kind(*meta["decls"], **info)]
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _alias_name(alias: str) -> str:
    return alias.lstrip("-").replace("-", "_")


def _alias_parameters(f: Field, hint: Any) -> list[inspect.Parameter]:
    base = _cli_type(f, hint)
    return [inspect.Parameter(_alias_name(a), inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        base | None, typer.Option(a, hidden=True, help=f"Old spelling of {option_name(f)}.")])
        for a in f.metadata["aliases"]]


CONFIGS: dict[str, type] = {}  # each registered command's config class

PRINT_CONFIG = inspect.Parameter("print_config", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
    bool, typer.Option("--print-config", help="Print the resolved config as JSON and exit (nothing runs).",
                       rich_help_panel=RUN, metavar="")])
JSON_OUTPUT = inspect.Parameter("json_output", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON document on stdout, nothing else there (tables "
                       "and progress go to stderr).", rich_help_panel=RUN, metavar="")])
CONTEXT = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)


def _signature(cls: type, name: str) -> list[inspect.Parameter]:
    specs = flat_fields(cls)
    names = [f.name for _, f, _ in specs]
    aliases = [_alias_name(a) for _, f, _ in specs for a in f.metadata["aliases"]]
    dupes = sorted({n for n in names + aliases if (names + aliases).count(n) > 1})
    if dupes:
        raise TypeError(f"`{name}`: options {dupes} are declared twice in {cls.__name__}")
    params = [_parameter(f, hint) for _, f, hint in specs]
    params.sort(key=lambda p: p.default is not inspect.Parameter.empty)  # required ones first in the help
    return params + [p for _, f, hint in specs for p in _alias_parameters(f, hint)]


def _finish(callback, params: list[inspect.Parameter], cls: type, name: str) -> None:
    callback.__signature__ = inspect.Signature(params)
    callback.__annotations__ = {p.name: p.annotation for p in params}
    paragraphs = inspect.cleandoc(cls.__doc__ or "").split("\n\n")  # the command list shows the first one
    callback.__doc__ = "\n\n".join(" ".join(p.split()) for p in paragraphs)  # else the help keeps line breaks
    callback.__name__ = name.replace("-", "_")


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def resolve_aliases(cls: type, values: dict[str, Any], ctx) -> None:
    """An old spelling given on the command line (or in a --config file) sets its field, with a deprecation line on
    stderr; giving both spellings is an error. Then each option given neither way but required is reported."""
    from slmrec_cli import ui

    for _, f, _ in flat_fields(cls):
        for alias in f.metadata["aliases"]:
            value = values.pop(_alias_name(alias), None)
            if value is None:
                continue
            source = ctx.get_parameter_source(f.name) if ctx is not None else None
            if getattr(source, "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP"):
                raise SlmrecError(f"{alias} is the old spelling of {option_name(f)}; give only {option_name(f)}")
            ui.info(f"[yellow]warning:[/] {alias} is deprecated and goes in the next release; use "
                    f"{option_name(f)}")
            values[f.name] = value
        if f.metadata["aliases"] and f.default is MISSING and f.default_factory is MISSING and \
                values.get(f.name) is None:
            raise SlmrecError(f"missing option {option_name(f)}")


def root(app: typer.Typer, cls: type, run: Callable[[Any], None]) -> None:
    """The app's own options (before any command), from config `cls`; run(config) once they are parsed."""
    params = _signature(cls, "slmrec")

    def callback(**values: Any) -> None:
        run(build(cls, {k: _plain(v) for k, v in values.items()}))

    _finish(callback, params, cls, "root")
    app.callback()(callback)
    CONFIGS["(root)"] = cls


def run_stage(target: str, cfg: Any, as_json: bool) -> Any:
    """Run "module:function" on the config; with --json its returned result is printed as one JSON document
    (main process only) and everything else the command prints on stdout goes to stderr meanwhile. A command with
    its own JSON Lines stream (recommend --jsonl) runs in the same mode and emits each line itself."""
    import sys

    from slmrec_cli import provenance, ui
    from slmrec_cli.distributed import is_main_process
    from slmrec_cli.json_output import emit, json_mode

    stream = bool(getattr(cfg, "jsonl", False))
    if as_json and stream:
        raise SlmrecError("give --json (one document at the end) or --jsonl (one line per result), not both")
    module, function = target.split(":")
    provenance.COMMAND = ["slmrec", *sys.argv[1:]]  # recorded in the run's config.json
    try:
        with json_mode(ui.quiet()) if as_json or stream else nullcontext():
            result = getattr(importlib.import_module(module), function)(cfg)
            if as_json and is_main_process():
                emit(result)
    finally:
        provenance.COMMAND = None
    return result


def command(app: typer.Typer, name: str, cls: type, run: str, *, config_file: bool = True) -> None:
    """Register `slmrec NAME`: its options are the fields of config `cls`; it builds the config (its checks run)
    and calls run(config), run being "module:function" whose return value is the command's result (--json)."""
    from slmrec_cli import ui
    from slmrec_cli.config.files import config_option

    params = _signature(cls, name)
    params += [PRINT_CONFIG, JSON_OUTPUT]
    if config_file:
        params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=config_option))
    params.append(CONTEXT)

    def callback(ctx: typer.Context, **values: Any) -> None:
        values.pop("config", None)
        show = values.pop("print_config")
        as_json = values.pop("json_output")
        resolve_aliases(cls, values, ctx)
        cfg = build(cls, {k: _plain(v) for k, v in values.items()})
        if show:
            ui.out.print_json(dumps(cfg))
            return
        run_stage(run, cfg, as_json)

    _finish(callback, params, cls, name)
    app.command(name, cls=Command)(callback)
    CONFIGS[name] = cls
