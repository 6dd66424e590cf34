"""Errors the CLI turns into one line and an exit code."""


class SlmrecError(Exception):
    """Bad input: the message names what is wrong, where, and what to do. Exit code 2."""

    exit_code = 2


class Interrupted(Exception):
    """Training stopped by Ctrl-C after saving a checkpoint. Exit code 130."""

    exit_code = 130


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (library errors can span many lines), for one-line errors."""
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
