"""Output: results on stdout, progress and messages on stderr; rich on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

from rich.console import Console, ConsoleDimensions

WIDE = 1000  # columns of a console that writes to a file or a pipe


class _Console(Console):
    """A Console that, writing to a file or a pipe (a log, CI), lays tables out in their natural width instead of
    cutting their cells to 80 columns (or to the width of a terminal elsewhere on the process). COLUMNS still wins."""

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(WIDE, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


out = _Console()  # results (tables); while a command prints --json, what it writes here goes to stderr
err = _Console(stderr=True)  # progress, status, errors
_state = {"quiet": False, "debug": False}


def set_mode(quiet: bool = False, debug: bool = False) -> None:
    _state["quiet"], _state["debug"] = quiet, debug


def quiet() -> bool:
    return _state["quiet"]


def debug() -> bool:
    return _state["debug"]


def info(msg: str) -> None:
    if not _state["quiet"]:
        err.print(msg, highlight=False)


class _PlainBar:
    """Periodic plain log lines for logs and CI (stderr is not a terminal)."""

    def __init__(self, desc: str, total: int | None, every: float = 10.0):
        self.desc, self.total, self.every = desc, total, every
        self.done, self.start, self.last = 0, time.monotonic(), time.monotonic()
        self.fields: dict = {}

    def advance(self, n: int = 1, **fields) -> None:
        self.done += n
        self.fields.update(fields)
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line()

    def _line(self) -> None:
        if _state["quiet"]:
            return
        of = f"/{self.total}" if self.total else ""
        extra = " ".join(f"{k}={v}" for k, v in self.fields.items())
        print(f"{self.desc}: {self.done}{of} ({time.monotonic() - self.start:.0f}s) {extra}".rstrip(),
              file=sys.stderr, flush=True)


class _RichBar:
    def __init__(self, prog, task):
        self.prog, self.task = prog, task

    def advance(self, n: int = 1, **fields) -> None:
        self.prog.update(self.task, advance=n, info=" ".join(f"{k}={v}" for k, v in fields.items()))


@contextmanager
def progress(desc: str, total: int | None = None):
    """A bar with .advance(n, **fields): rich on a terminal, periodic lines otherwise, nothing if --quiet."""
    if _state["quiet"] or not err.is_terminal:
        bar = _PlainBar(desc, total)
        yield bar
        if bar.done and time.monotonic() - bar.start >= bar.every:
            bar._line()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=err, transient=True) as prog:
        yield _RichBar(prog, prog.add_task(desc, total=total, info=""))
