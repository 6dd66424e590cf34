"""Errors the CLI turns into one line and an exit code."""

import errno
import re


class SlmrecError(Exception):
    """Bad input: the message names what is wrong, where, and what to do. Exit code 2."""

    exit_code = 2


class Interrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM after saving a checkpoint. Exit code 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (library errors can span many lines), for one-line errors."""
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


# what each storage failure means and what to do about it
_CAUSES = {errno.ENOSPC: ("no space left on the device", "free space there or write elsewhere"),
           errno.EDQUOT: ("disk quota exceeded", "free space there or write elsewhere"),
           errno.EACCES: ("permission denied", "choose a directory you can write, or fix its permissions"),
           errno.EPERM: ("operation not permitted", "choose a directory you can write, or fix its permissions"),
           errno.EROFS: ("read-only file system", "write to a writable directory"),
           errno.ENOENT: ("no such file or directory", "check the path"),
           errno.EISDIR: ("is a directory", "pass a file"),
           errno.ENOTDIR: ("a path component is not a directory", "check the path")}


WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


def _errno(e: OSError) -> int | None:
    if e.errno is None and re.search(r"\d+ requested and \d+ written", str(e)):  # numpy's short write: disk full
        return errno.ENOSPC
    return e.errno


def write_failure(e: OSError) -> bool:
    """Whether an OSError raised while writing an artifact is about where it is written (disk full, permissions)."""
    return _errno(e) in WRITE_FAILURES


class StorageError(SlmrecError):
    """An OS error reading or writing a path (disk full, permission denied, read-only): one line naming the path and
    the cause. Exit code 2."""

    @classmethod
    def from_os(cls, e: OSError, target=None) -> "StorageError":
        """target: the artifact being written atomically (its temp file is what failed, and is gone)."""
        cause, todo = _CAUSES.get(_errno(e), (e.strerror or first_line(e), "check the path and the disk"))
        if target is not None:
            error = cls(f"cannot write {target}: {cause}; {todo} (nothing partial was left)")
        else:
            error = cls(f"{e.filename}: {cause}; {todo}" if e.filename else f"{cause}; {todo}")
        error.os_error = e
        return error
