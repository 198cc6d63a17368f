"""``--log-with tensorboard|wandb|mlflow``: a run's logs mirrored to experiment trackers, through
``accelerate.tracking``'s tracker classes.

The run folder's JSONL files stay the source of truth; a tracker gets a copy of each record as it is
appended, and its failure to import is one error before the run starts. What is mirrored:

* the resolved config (``config.json``'s record) as the run's parameters, flattened to ``a.b.c`` keys;
* every ``train.jsonl`` row under ``train/<key>`` and every ``evals.jsonl`` row under
  ``eval/<prompt set>/<key>`` (nested counts as ``.../reasons/<reason>``), at step = labels spent, the
  x axis of herobench's curves. Per-image lists (verdicts, hashes) stay in the JSONL files only.

Where each writes: tensorboard ``<run>/tensorboard/`` (event files); wandb one run per run folder in
project ``herobench`` (``WANDB_MODE=offline`` works without a login; files under ``<run>/wandb``); mlflow
experiment ``herobench`` at ``MLFLOW_TRACKING_URI`` (mlflow's default ``./mlruns`` when unset). A resumed
run appends to the same places; rows of an iteration redone after a kill are logged again at their step.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from herobench.errors import HerobenchError

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # name -> package it needs
PROJECT = "herobench"


def check_trackers(names: Sequence[str]) -> tuple[str, ...]:
    """The tracker names, validated: known, and their package importable.

    Raises:
        HerobenchError: an unknown name, or a missing package (with the pip line)."""
    for name in names:
        if name not in TRACKERS:
            raise HerobenchError(f"--log-with must be one of {', '.join(TRACKERS)} (got '{name}')")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise HerobenchError(f"--log-with {name}: the '{TRACKERS[name]}' package is not installed "
                                 f"(pip install {TRACKERS[name]})")
    return tuple(dict.fromkeys(names))


def flatten(record: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(a/b/c, value)`` for every leaf of nested dicts; lists are left out."""
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, f"{name}/")
        elif not isinstance(value, (list, tuple)):
            yield name, value


def scalars(record: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The numeric leaves of ``record`` as floats (bools as 0/1; NaN and infinities, which trackers
    reject or mangle, left out)."""
    out = {}
    for key, value in flatten(record, prefix):
        if isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def parameters(config: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The resolved config as tracker parameters: ``a.b.c`` keys, values that every tracker takes
    (lists and ``None`` as text: TensorBoard's hparams accept nothing else)."""
    out = {}
    for key, value in flatten(_lists_as_text(config)):
        out[key.replace("/", ".")] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


def _lists_as_text(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _lists_as_text(v) for k, v in obj.items()}
    return str(list(obj)) if isinstance(obj, (list, tuple)) else obj


def _make(name: str, run_dir: Path, run_name: str):
    """One accelerate tracker, started. ``main_process_only`` off: only the run's main process makes
    trackers, so none needs to ask which process it is on."""
    from accelerate import PartialState, tracking

    PartialState()  # accelerate's tracker logging needs its process state (one process: a no-op singleton)
    if name == "tensorboard":
        tracker = tracking.TensorBoardTracker("tensorboard", str(run_dir))
    elif name == "wandb":
        import hashlib

        # one wandb run per run folder: a resume continues it (the id is the folder's path, hashed)
        run_id = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
        tracker = tracking.WandBTracker(PROJECT, name=run_name, dir=str(run_dir), id=run_id, resume="allow")
    else:
        tracker = tracking.MLflowTracker(PROJECT, run_name=run_name)
    tracker.main_process_only = False
    tracker.start()
    return tracker


class Mirror:
    """The trackers of one run: :meth:`record` each JSONL row as it is written, :meth:`close` at the end."""

    def __init__(self, names: Sequence[str], run_dir: Path, run_name: str, config: Mapping[str, Any]):
        self.trackers = []
        try:
            for name in check_trackers(names):
                self.trackers.append(_make(name, Path(run_dir), run_name))
            params = parameters(config)
            for tracker in self.trackers:
                tracker.store_init_configuration(params)
        except BaseException:
            self.close()
            raise

    def record(self, kind: str, row: Mapping[str, Any]) -> None:
        """Mirror one ``train`` or ``eval`` row at step = its ``labels``."""
        prefix = f"eval/{row.get('prompt_set', 'eval')}/" if kind == "eval" else "train/"
        values = scalars({k: v for k, v in row.items() if k != "prompt_set"}, prefix)
        step = int(row.get("labels", 0))
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def open_mirror(names: Sequence[str], run_dir: Path, run_name: str, config: Mapping[str, Any]) -> Mirror | None:
    """A :class:`Mirror`, or None when no tracker is asked for."""
    return Mirror(names, run_dir, run_name, config) if names else None


__all__ = ["TRACKERS", "check_trackers", "Mirror", "open_mirror", "parameters", "scalars"]
