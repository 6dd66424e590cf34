"""`--json` on every command: the command's result as one JSON document on stdout, nothing else there.

While a command runs in JSON mode, whatever it would print on stdout (tables, library chatter) goes to stderr (or
nowhere with --quiet); `emit` writes to the real stdout. `plain` turns a result into JSON values: paths and enums as
strings, numpy scalars and arrays as numbers and lists, NaN and infinities as null (strict JSON): what --json,
--jsonl and --print-config print."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, is_dataclass
from enum import Enum
from pathlib import PurePath
from typing import Any

_real_stdout: list = []  # the process's stdout while a command runs in JSON mode


def plain(value: Any) -> Any:
    """value as plain JSON data."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return plain(value.tolist())
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(plain(value), ensure_ascii=False, allow_nan=False)


def active() -> bool:
    """Whether a command is running in JSON mode (--json or a JSON Lines stream)."""
    return bool(_real_stdout)


def emit(value: Any) -> None:
    """One JSON document (one line) on the real stdout."""
    stream = _real_stdout[-1] if _real_stdout else sys.stdout
    stream.write(dumps(value) + "\n")
    stream.flush()


@contextmanager
def json_mode(quiet: bool = False) -> Iterator[None]:
    """Route stdout to stderr (to nowhere with quiet) for the block; emit() still writes to the real stdout."""
    sink = open(os.devnull, "w") if quiet else sys.stderr  # noqa: SIM115 (closed below)
    _real_stdout.append(sys.stdout)
    try:
        with redirect_stdout(sink):
            yield
    finally:
        _real_stdout.pop()
        if quiet:
            sink.close()
