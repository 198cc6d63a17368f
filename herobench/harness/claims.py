"""Per-cell claims: several ``herobench bench`` processes (on one machine or many, under any executor)
sharing one ``--out`` never run the same cell at once.

A claim is an exclusive OS lock (``flock``, through ``filelock``) on ``<out>/.claims/<cell>.lock``, held
by the process that runs the cell for as long as it runs. The kernel drops the lock when that process
exits however it exits (a crash, ``kill -9``, a node lost to the scheduler), so a dead claimant's cell is
free again at once and its run folder is simply resumed by whoever claims it next; there is no stale-lock
timeout to tune. A live claimant's lock is never broken. ``<cell>.owner`` beside it says who holds it
(host, pid, since when), for the "running elsewhere" line only: the lock alone decides.

The shared disk must support ``flock`` across the machines that share it (local disks do; NFS does on
Linux through lockd). ``filelock`` falls back to soft lock files where ``flock`` is missing, and those do
not release on a crash.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLAIMS_DIR = ".claims"


@dataclass(frozen=True)
class Claim:
    """The outcome of trying to claim a cell: ``held`` by this process, or ``owner`` (who holds it)."""

    held: bool
    owner: str = ""


def _paths(out: Path, name: str) -> tuple[Path, Path]:
    folder = Path(out) / CLAIMS_DIR
    return folder / f"{name}.lock", folder / f"{name}.owner"


def owner_text(owner_file: Path) -> str:
    """``host pid 1234 since 12:00:03`` from an owner file ('another process' when unreadable: the owner
    may have just released it, or not written it yet)."""
    try:
        who = json.loads(owner_file.read_text())
        return f"{who['host']} pid {who['pid']} since {time.strftime('%H:%M:%S', time.localtime(who['since']))}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def claim(out: str | Path, name: str) -> Iterator[Claim]:
    """Try to claim cell ``name`` under ``out`` without waiting; yields a :class:`Claim`. The claim is held
    until the ``with`` block ends (or the process dies)."""
    from filelock import FileLock, Timeout

    lock_file, owner_file = _paths(Path(out), name)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield Claim(False, owner_text(owner_file))
        return
    try:
        owner_file.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}))
        yield Claim(True)
    finally:
        owner_file.unlink(missing_ok=True)  # (before the release: a new owner's file is never removed)
        lock.release()


@contextmanager
def exclusive(out: str | Path, name: str, timeout: float = 600.0) -> Iterator[None]:
    """Wait (up to ``timeout`` s) for the lock ``name`` under ``out``: for short grid-wide writes (the merged
    report, ``bench.json``) that two processes finishing together must not interleave."""
    from filelock import FileLock

    lock_file, _ = _paths(Path(out), name)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_file), timeout=timeout):
        yield


__all__ = ["Claim", "claim", "exclusive", "CLAIMS_DIR"]
