"""Which cells of a grid this ``herobench bench`` runs, and where their records go.

- ``--shard i/N`` (:func:`shard_of`): a deterministic round-robin split of the grid between N machines.
- ``--only GLOB`` (:func:`only`): the cells whose folder name matches one of the patterns, e.g.
  ``--only 'narcissus-hero-s*'`` (the rest of the grid is left as it is, and still reported).
- ``--records DIR`` (:func:`save_record`): each cell's record (what a report reads: config, evaluations,
  summary; no checkpoints or images) copied to ``DIR/<cell>/`` as soon as the cell finishes, so a grid that
  outlives its machine loses at most the cells in flight. ``DIR`` is typically a committed results folder's
  ``records/``; ``herobench report DIR/* --out ...`` reports from it where the run folders are gone.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from herobench.errors import HerobenchError

T = TypeVar("T")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: shard 2 of 4 (1-based).

    Raises:
        HerobenchError: anything but ``i/N`` with ``1 <= i <= N``."""
    i, sep, n = text.partition("/")
    if not (sep and i.strip().isdigit() and n.strip().isdigit() and 1 <= int(i) <= int(n)):
        raise HerobenchError(f"--shard must be i/N with 1 <= i <= N, e.g. 1/4 (got '{text}')")
    return int(i), int(n)


def shard_of(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """Shard ``i`` of ``N``: items ``i-1, i-1+N, i-1+2N, ...`` of the grid order. Round robin rather than
    blocks, so every shard gets a share of each task and method (their costs differ a lot); it depends on
    the grid alone, so N machines given 1/N .. N/N run every cell once between them."""
    if shard is None:
        return list(items)
    i, n = shard
    return [x for k, x in enumerate(items) if k % n == i - 1]


def only(items: Sequence[T], patterns: Sequence[str], name: Callable[[T], str]) -> list[T]:
    """The items whose ``name`` matches one of the shell patterns (``fnmatch``; all items when there are
    none), in grid order.

    Raises:
        HerobenchError: a pattern that matches no cell of the grid (a typo would otherwise run nothing)."""
    if not patterns:
        return list(items)
    names = [name(x) for x in items]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            raise HerobenchError(f"--only '{pattern}' matches none of the grid's {len(names)} cells ({shown})")
    return [x for x, n in zip(items, names) if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def save_record(run_dir: str | Path, records: str | Path) -> Path:
    """Copy a finished run's record to ``records/<run folder name>/`` (atomically per file) and return that
    folder. A run without a summary is not finished and is not copied.

    Raises:
        HerobenchError: ``run_dir`` has no summary.json; the records folder cannot be written (named)."""
    from herobench.harness.report_runs import copy_record

    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").is_file():
        raise HerobenchError(f"{run_dir}: not finished (no summary.json); nothing to record")
    dest = Path(records) / run_dir.name
    try:
        copy_record(run_dir, dest)
    except OSError as e:
        raise HerobenchError(f"--records: cannot write {dest} ({e.strerror or e})") from None
    return dest


__all__ = ["parse_shard", "shard_of", "only", "save_record"]
