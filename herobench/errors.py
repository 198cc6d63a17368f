"""User-facing errors. The CLI prints ``error: <message>`` on one line and exits non-zero."""

from __future__ import annotations

import errno
import os
import re


class HerobenchError(Exception):
    """A problem with the user's input (task name, config, label file, weights, run folder)."""


class UnknownNameError(HerobenchError):
    """A name that is not in a registry (message carries the closest suggestion)."""


class ConfigError(HerobenchError):
    """A malformed config, task spec or ``--set`` override; the message names the offending key."""


class BudgetExceededError(HerobenchError):
    """Recording these labels would exceed the feedback budget."""


class FileSystemError(HerobenchError):
    """Reading or writing a file failed (disk full, permission denied, read-only file system, ...).

    The message names the path and the cause in words, as :func:`os_error_message` words an ``OSError``:
    ``runs/x/checkpoints/latest.tmp: no space left on device``."""

    def __init__(self, path: object, cause: str) -> None:
        super().__init__(f"{path}: {cause}")
        self.path, self.cause = path, cause


def os_error_message(e: OSError) -> str:
    """One line for an ``OSError``: the path(s) it names and its cause, lower case
    (``"runs/x/train.jsonl: no space left on device"``). The one place that words OS errors."""
    cause = (e.strerror or (os.strerror(e.errno) if e.errno else "") or str(e) or type(e).__name__).strip()
    cause = cause[:1].lower() + cause[1:]
    paths = [str(p) for p in (e.filename, getattr(e, "filename2", None)) if p is not None]
    if not paths:
        return cause
    return f"{' -> '.join(paths)}: {cause}"


_ERRNO_IN_TEXT = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]|Os \{ code: (\d+)")  # Rust Display, Python, Rust Debug


def errno_in_text(text: str) -> int | None:
    """The OS error number inside a wrapped library error's text (safetensors' ``(os error 28)``,
    an ``[Errno 28]`` re-raised as another type), or None."""
    m = _ERRNO_IN_TEXT.search(text)
    if not m:
        return None
    number = int(next(g for g in m.groups() if g))
    return number if number in errno.errorcode else None
