"""The options every command shares, given before the command: `slmrec --quiet train-teacher ...`."""

from __future__ import annotations

from dataclasses import dataclass

from slmrec_cli.config.fields import opt


def print_version(value: bool) -> None:
    if value:
        from slmrec_cli import __version__

        print(f"slmrec {__version__}")
        raise SystemExit(0)


@dataclass
class RootOptions:
    """slmrec: E4SRec-style LLM recommenders made small (SLMRec, ICLR 2025)."""

    version: bool = opt("Print the version and exit.", False, decls=("--version",),
                        cli_extra={"is_eager": True, "callback": print_version})
    quiet: bool = opt("Only results and errors.", False, decls=("--quiet", "-q"))
    debug: bool = opt("Show tracebacks for errors.", False, decls=("--debug",))
