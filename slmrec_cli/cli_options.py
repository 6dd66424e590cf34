"""A Typer command from a config class: one option per field (nested configs flattened, names unique), plus
`--config FILE` (options from YAML/TOML) and `--print-config` (the resolved config as JSON, nothing run). The
stage that runs it is imported only when the command runs, so `slmrec --help` stays instant."""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from dataclasses import Field
from typing import Annotated, Any

import typer

from slmrec_cli.config.fields import RUN, build, cli_default, flat_fields, to_json


def _parameter(f: Field, hint: Any) -> inspect.Parameter:
    meta = f.metadata
    kind = typer.Argument if meta["argument"] else typer.Option
    info = {"help": meta["help"], **meta.get("cli_extra", {})}
    if hint is bool and not meta["argument"]:
        info["metavar"] = ""  # a flag takes no value: no <bool> placeholder in the help
    if meta["panel"] and not meta["argument"]:
        info["rich_help_panel"] = meta["panel"]
    base = meta["cli_type"] or hint
    annotation = Annotated[base, kind(*meta["decls"], **info)]
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=cli_default(f), annotation=annotation)


CONFIGS: dict[str, type] = {}  # each registered command's config class

PRINT_CONFIG = inspect.Parameter("print_config", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
    bool, typer.Option("--print-config", help="Print the resolved config as JSON and exit (nothing runs).",
                       rich_help_panel=RUN, metavar="")])


def _signature(cls: type, name: str) -> list[inspect.Parameter]:
    specs = flat_fields(cls)
    names = [f.name for _, f, _ in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TypeError(f"`{name}`: options {dupes} are declared twice in {cls.__name__}")
    params = [_parameter(f, hint) for _, f, hint in specs]
    params.sort(key=lambda p: p.default is not inspect.Parameter.empty)  # required ones first in the help
    return params


def _finish(callback, params: list[inspect.Parameter], cls: type, name: str) -> None:
    callback.__signature__ = inspect.Signature(params)
    callback.__annotations__ = {p.name: p.annotation for p in params}
    callback.__doc__ = cls.__doc__
    callback.__name__ = name.replace("-", "_")


def root(app: typer.Typer, cls: type, run: Callable[[Any], None]) -> None:
    """The app's own options (before any command), from config `cls`; run(config) once they are parsed."""
    params = _signature(cls, "slmrec")

    def callback(**values: Any) -> None:
        run(build(cls, values))

    _finish(callback, params, cls, "root")
    app.callback()(callback)
    CONFIGS["(root)"] = cls


def command(app: typer.Typer, name: str, cls: type, run: str, *, config_file: bool = True) -> None:
    """Register `slmrec NAME`: its options are the fields of config `cls`; it builds the config (its checks run)
    and calls run(config), run being "module:function"."""
    from slmrec_cli import ui
    from slmrec_cli.config.files import config_option

    params = _signature(cls, name)
    params.append(PRINT_CONFIG)
    if config_file:
        params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=config_option))
    module, function = run.split(":")

    def callback(**values: Any) -> None:
        values.pop("config", None)
        show = values.pop("print_config")
        cfg = build(cls, values)
        if show:
            ui.out.print_json(json.dumps(to_json(cfg)))
            return
        import sys

        from slmrec_cli import provenance

        provenance.COMMAND = ["slmrec", *sys.argv[1:]]  # recorded in the run's config.json
        try:
            getattr(importlib.import_module(module), function)(cfg)
        finally:
            provenance.COMMAND = None

    _finish(callback, params, cls, name)
    app.command(name)(callback)
    CONFIGS[name] = cls
