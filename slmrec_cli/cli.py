"""The `slmrec` command: one thin function per stage; the work lives in the stage modules."""

from __future__ import annotations

import sys

import typer

from slmrec_cli import cli_options, ui

app = typer.Typer(
    name="slmrec",
    help="Small LLM-based sequential recommenders (SLMRec): prepare a dataset, train SASRec (the baseline and the "
         "item ids), an LLM teacher and a distilled student, read a teacher out layer by layer (prune-probe), "
         "evaluate runs by a fixed protocol, export and benchmark a model, recommend from an export, and report the "
         "paper's tables and figures; `doctor` says what this install can run. Every command takes --json (its "
         "result as one JSON document on stdout).",
    cls=cli_options.Group,
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

def _set_mode(opts) -> None:
    from slmrec_cli.distributed import is_main_process

    ui.set_mode(quiet=opts.quiet or not is_main_process(), debug=opts.debug)  # several processes: one speaks


def _register() -> None:
    """Every stage's command: its options from its config class, its work in slmrec_cli.stages (imported when it
    runs): each stage's main(config) prints for people and returns the result --json prints."""
    from slmrec_cli.config import data, doctor, evaluate, export, root, stages

    cli_options.root(app, root.RootOptions, _set_mode)
    for name, cls, config_file in (
        ("prepare", data.PrepareConfig, True),
        ("pretrain-ids", stages.PretrainConfig, True),
        ("train-teacher", stages.TeacherConfig, True),
        ("distill", stages.DistillConfig, True),
        ("prune-probe", evaluate.ProbeConfig, False),
        ("export", export.ExportConfig, False),
        ("recommend", export.RecommendConfig, False),
        ("evaluate", evaluate.EvaluateConfig, False),
        ("report", stages.ReportConfig, False),
        ("doctor", doctor.DoctorConfig, False),
    ):
        target = f"slmrec_cli.stages.{name.replace('-', '_')}:main"
        cli_options.command(app, name, cls, target, config_file=config_file)

_register()


def _click_errors() -> tuple[tuple, tuple, tuple, tuple]:
    """(Exit, NoArgsIsHelpError, ClickException, Abort) classes of click and of the click copy typer vendors (>= 0.2x
    raises its own, which click's classes do not catch)."""
    import click

    modules = [click.exceptions]
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        vendored = None
    if vendored is not None:
        modules.append(vendored)
    names = ("Exit", "NoArgsIsHelpError", "ClickException", "Abort")
    return tuple(tuple(getattr(m, n) for m in modules if hasattr(m, n)) for n in names)


def main() -> None:
    """Entry point: bad input (usage errors included) → one line, exit 2; internal error → one line, exit 1
    (traceback with --debug); bare `slmrec` → the help, exit 0."""
    from slmrec_cli.distributed import is_main_process, shutdown
    from slmrec_cli.errors import Interrupted, SlmrecError, StorageError

    exit_, no_args, usage, abort = _click_errors()
    debug = "--debug" in sys.argv
    try:
        app(standalone_mode=False)
        shutdown(wait=True)  # several processes: all finish together, then leave the group cleanly
    except exit_ as e:
        sys.exit(e.exit_code)
    except no_args:  # the help is already printed
        sys.exit(0)
    except usage as e:  # usage errors from option parsing: the usage line and one error line
        e.show()
        sys.exit(2)
    except abort:
        ui.err.print("aborted")
        sys.exit(130)
    except SlmrecError as e:
        if debug:
            raise
        ui.err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except Interrupted as e:
        if is_main_process():  # every process stops at the same step; one says so
            ui.err.print(f"[yellow]interrupted:[/] {e}", highlight=False, soft_wrap=True)
        shutdown(wait=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        ui.err.print("interrupted")
        sys.exit(130)
    except OSError as e:  # outside an atomic write (those become StorageError): still the path and the cause
        if debug:
            raise
        ui.err.print(f"[bold red]error:[/] {StorageError.from_os(e)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as e:
        if debug:
            raise
        ui.err.print(f"[bold red]internal error:[/] {type(e).__name__}: {e} (rerun with --debug for the "
                     "traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
