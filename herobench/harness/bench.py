"""``herobench bench``: a grid of runs (tasks × methods × seeds) with shared settings.

A grid file is TOML::

    [grid]
    tasks = ["hand", "blue-rose"]
    methods = ["hero", "ddpo", "pretrained"]
    seeds = [0, 1, 2]

    [settings]            # shared RunSettings keys (not task / method / seed: the grid sets those)
    batch_size = 64
    [settings.eval]
    n_images = 128

    [budgets]             # optional label budget per task (else settings.budget_labels, else the task's)
    hand = 1152

    [method_options.hero] # optional per-method options (validated by the method, as in a run config)
    encoder_epochs = 500

    [report]
    targets = [0.5]       # "labels to reach" columns in the merged report

    [regression]          # free table, read only by ``herobench.regression``

Each cell is an independent run folder ``<out>/<task>-<method>-s<seed>``. A cell with a
``summary.json`` is done and skipped; one with a ``config.json`` only is resumed through the runner's
resume (labels already given are replayed, never asked twice). A cell folder whose recorded settings
differ from the grid's is refused, so a changed grid never silently mixes two configurations.

Where cells run is the executor's choice (:mod:`herobench.harness.executors`: local workers, Ray, SLURM);
each cell is claimed while it runs (:mod:`herobench.harness.claims`), so several processes sharing one
``out`` never run a cell twice, and ``--shard i/N`` splits the cells between machines deterministically.

Cells run in parallel worker processes (``jobs``). Every cell runs with one intra-op thread, whatever
``jobs`` is: CPU float results (and so image hashes, which a resumed run checks when it replays
recorded labels) can depend on the thread count, so pinning it makes a cell's results independent of
``--jobs`` and lets a cell killed under one ``--jobs`` resume under another. On CPU, N single-threaded
cells also use N cores better than one cell with N threads (the batches are small).
At the end the finished cells are merged by :func:`herobench.harness.report.write_report`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from herobench.config import RunSettings, apply_overrides, from_dict, load_toml, recorded_settings, to_dict
from herobench.errors import ConfigError, HerobenchError
from herobench.harness.grid_select import only, parse_shard, save_record, shard_of

GRID_AXES = ("task", "method", "seed")


@dataclass(frozen=True)
class GridAxes:
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        for name in ("tasks", "methods", "seeds"):
            values = getattr(self, name)
            if not values:
                raise ConfigError(f"{name} must not be empty")
            if len(set(values)) != len(values):
                raise ConfigError(f"{name} lists a value twice: {list(values)}")


@dataclass(frozen=True)
class ReportOptions:
    targets: tuple[float, ...] = ()


@dataclass(frozen=True)
class GridSpec:
    """A parsed grid file (see the module docstring)."""

    grid: GridAxes
    settings: dict[str, Any] = field(default_factory=dict)
    budgets: dict[str, int] = field(default_factory=dict)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: ReportOptions = field(default_factory=ReportOptions)
    regression: dict[str, Any] = field(default_factory=dict)  # herobench.regression validates it


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    settings: RunSettings

    @property
    def name(self) -> str:
        """The cell's run folder name: the runner's (``runlog.run_dir_name``, from the task's name)."""
        from herobench.harness.runlog import run_dir_name

        return run_dir_name(self.settings)


CellStatus = Literal["new", "partial", "done"]


@dataclass(frozen=True)
class CellResult:
    name: str
    status: Literal["done", "skipped", "failed", "claimed"]  # claimed: running in another process
    path: str
    seconds: float = 0.0
    resumed: bool = False
    summary: dict | None = None
    error: str = ""


# --------------------------------------------------------------------------------------------------
# grid files


def load_grid(path: str | Path, overrides: Sequence[str] = ()) -> GridSpec:
    """Read a grid file; ``overrides`` (``key=value``) apply to its ``[settings]`` table.

    Raises:
        ConfigError: unknown keys (named), ``task``/``method``/``seed`` in ``[settings]`` or in an
            override, or a malformed file.
    """
    return grid_from_dict(load_toml(path), overrides)


def grid_from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> GridSpec:
    """A grid from its parsed TOML tables (``herobench compare`` builds one in memory); see
    :func:`load_grid` for ``overrides`` and the errors."""
    data = dict(data)
    for assignment in overrides:
        key = assignment.partition("=")[0].strip()
        if key in GRID_AXES:
            raise ConfigError(f"--set {assignment}: the grid sets '{key}' (edit [grid] instead)")
    if isinstance(data.get("settings", {}), dict):  # (a non-table is reported by from_dict below)
        data["settings"] = apply_overrides(data.get("settings", {}), list(overrides), RunSettings)
    spec = from_dict(GridSpec, data)
    for key in GRID_AXES:
        if key in spec.settings:
            raise ConfigError(f"settings.{key}: set by [grid] ({key}s = [...]), not in [settings]")
    if "method_options" in spec.settings:
        raise ConfigError("settings.method_options: use a [method_options.<method>] table per method")
    _check_names("budgets", spec.budgets, spec.grid.tasks)
    _check_names("method_options", spec.method_options, spec.grid.methods)
    return spec


def _check_names(table: str, given: dict, allowed: Sequence[str]) -> None:
    import difflib

    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{table}.{key}: not in the grid{hint} (grid has: {', '.join(allowed)})")


def cells(spec: GridSpec, seeds: Sequence[int] | None = None) -> list[Cell]:
    """Every cell of the grid (task-major order), validated: unknown tasks or methods and bad settings
    fail here, before anything runs. ``seeds`` replaces the grid's seeds (regression references)."""
    from herobench.methods import METHODS
    from herobench.tasks import load_task

    for method in spec.grid.methods:
        METHODS.get(method)  # "did you mean" on a typo
    if (spec.settings.get("rater") or {}).get("kind", "simulated") != "simulated":
        raise ConfigError("settings.rater.kind: a grid runs simulated raters (a person labels one run at a "
                          "time: `herobench run --set rater.kind=human`)")
    out = []
    for task in spec.grid.tasks:
        task_spec = load_task(task)  # (also: "did you mean" on a typo)
        for method in spec.grid.methods:
            budget = spec.budgets.get(task, spec.settings.get("budget_labels", task_spec.budget_for(method)))
            for seed in seeds if seeds is not None else spec.grid.seeds:
                data = {**spec.settings, "task": task, "method": method, "seed": seed, "budget_labels": budget,
                        "method_options": dict(spec.method_options.get(method, {}))}
                # a JSON round trip gives the same plain types a saved config.json gives back
                out.append(Cell(from_dict(RunSettings, json.loads(json.dumps(data)))))
    return out


# --------------------------------------------------------------------------------------------------
# one cell


def cell_status(cell: Cell, out: Path) -> CellStatus:
    """``new`` (no run folder), ``partial`` (started, no summary) or ``done``.

    Raises:
        HerobenchError: the folder holds a run with other settings than the cell's.
    """
    path = Path(out) / cell.name
    config = path / "config.json"
    if not config.is_file():
        return "new"
    try:
        saved = json.loads(config.read_text())["settings"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise HerobenchError(f"{config}: unreadable run config ({e}); delete the folder to rerun the cell") from None
    want = json.loads(json.dumps(to_dict(cell.settings)))
    saved = recorded_settings(saved)  # (a folder made before a setting existed has its default)
    if saved != want:
        diff = settings_diff(want, saved)
        raise HerobenchError(
            f"{path} was run with other settings than the grid's ({diff}); use another --out or delete it"
        )
    return "done" if (path / "summary.json").is_file() else "partial"


def settings_diff(want: dict, saved: dict, names: tuple[str, str] = ("grid", "folder"), prefix: str = "") -> str:
    """``"batch_size: grid 2, folder 4; eval.n_images: ..."`` for the keys where two settings dicts differ."""
    parts = []
    for key in sorted(set(want) | set(saved)):
        a, b = want.get(key, "<unset>"), saved.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            inner = settings_diff(a, b, names, f"{prefix}{key}.")
            if inner:
                parts.append(inner)
        elif a != b:
            parts.append(f"{prefix}{key}: {names[0]} {a!r}, {names[1]} {b!r}")
    return "; ".join(parts)


def run_cell(cell: Cell, out: str | Path, log_with: Sequence[str] = ()) -> CellResult:
    """Run (or resume, or skip) one cell; never raises: a failure becomes ``status="failed"`` with the
    error's last line, and the traceback goes to ``<out>/failed/<cell>.txt``. The cell is claimed
    (:mod:`herobench.harness.claims`) while it runs: a cell another live process holds comes back
    ``claimed`` untouched. ``log_with``: trackers that mirror the run's logs (``herobench run --log-with``)."""
    from herobench.harness.claims import claim

    out = Path(out)
    path = out / cell.name
    t0 = time.perf_counter()
    try:
        if cell_status(cell, out) == "done":  # (no claim needed to read a finished cell)
            return _skipped(cell, path)
        with claim(out, cell.name) as held:
            if not held.held:
                return CellResult(cell.name, "claimed", str(path), error=f"held by {held.owner}")
            return _run_claimed(cell, out, tuple(log_with), t0)
    except Exception as e:  # noqa: BLE001 - one failed cell must not stop the grid
        return _failed(cell, out, e, t0)


def _skipped(cell: Cell, path: Path) -> CellResult:
    return CellResult(cell.name, "skipped", str(path), summary=json.loads((path / "summary.json").read_text()))


def _run_claimed(cell: Cell, out: Path, log_with: tuple[str, ...], t0: float) -> CellResult:
    """The body of :func:`run_cell` under the cell's claim."""
    from herobench.harness.runner import run

    path = out / cell.name
    status = cell_status(cell, out)  # again, under the claim: another process may have finished it meanwhile
    if status == "done":
        return _skipped(cell, path)
    if status == "new" and path.exists():
        # killed between mkdir and config.json: nothing was learned or evaluated yet
        shutil.rmtree(path)
    resume = path if status == "partial" else None
    run_path, summary = run(cell.settings if resume is None else None, out=out, resume=resume, progress=False,
                            log_with=log_with)
    if Path(run_path) != path:  # pragma: no cover - the runner names folders by the same run_dir_name
        raise HerobenchError(f"the runner wrote {run_path}, expected {path}")
    (out / "failed" / f"{cell.name}.txt").unlink(missing_ok=True)
    return CellResult(cell.name, "done", str(path), time.perf_counter() - t0, resume is not None, summary)


def _failed(cell: Cell, out: Path, e: Exception, t0: float) -> CellResult:
    failed_log = out / "failed" / f"{cell.name}.txt"
    failed_log.parent.mkdir(parents=True, exist_ok=True)
    failed_log.write_text(traceback.format_exc())
    message = f"{type(e).__name__}: {e}" if not isinstance(e, HerobenchError) else str(e)
    return CellResult(cell.name, "failed", str(out / cell.name), time.perf_counter() - t0, error=message)


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies, however the parent was stopped (a grid killed
    with ``kill`` or by a job scheduler would otherwise leave its workers running on, orphaned). The run
    folders they leave are resumable, as after any kill. Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _init_worker(gpu_queue=None) -> None:
    """Local worker processes: stopped when the grid process dies; with ``gpu_queue`` each worker takes one
    GPU id from it and sees only that GPU (set before torch initialises CUDA); then :func:`pin_threads`."""
    die_with_parent()
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get(timeout=60))
    pin_threads()


def pin_threads() -> None:
    """One intra-op thread (N cells share N cores, and a cell's float results never depend on where or
    beside what it runs) and no model-loading progress bars; what every executor's worker does first."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch

    torch.set_num_threads(1)
    _quiet_model_loading()


def _quiet_model_loading() -> None:
    """No model-loading progress bars: one per cell would bury the grid's own progress lines."""
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


# --------------------------------------------------------------------------------------------------
# the grid


def check_models(cells_: Sequence[Cell]) -> None:
    """Every distinct model of the cells exists (one error up front, not one failed cell each).

    Raises:
        HerobenchError: a model folder is missing (named)."""
    from herobench.modelcard import resolve_model

    for model in dict.fromkeys(c.settings.model for c in cells_):
        resolve_model(model)


def run_cells(cells_: Sequence[Cell], out: str | Path, jobs: int = 1,
              on_result: Callable[[CellResult], None] | None = None,
              gpus: Sequence[str] = (), executor=None, log_with: Sequence[str] = ()) -> list[CellResult]:
    """Run every cell; ``jobs > 1`` uses that many spawned worker processes. Results come back in
    completion order (``on_result`` is called as each finishes) and are returned in grid order.

    ``gpus`` (e.g. ``["0", "1"]``): worker ``i`` sees only GPU ``gpus[i % len(gpus)]`` (always run in
    workers then, even with ``jobs = 1``); the cells' ``device`` setting should be ``cuda``.
    ``executor``: an :class:`herobench.harness.executors.ExecutorOptions` for ``ray`` or ``submitit``
    (None or ``local``: the workers above). ``log_with``: trackers mirroring each cell's logs."""
    if jobs < 1:
        raise HerobenchError(f"--jobs must be >= 1 (got {jobs})")
    check_models(cells_)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, CellResult] = {}

    def done(r: CellResult) -> None:
        results[r.name] = r
        if on_result is not None:
            on_result(r)

    todo = []
    for cell in cells_:  # finished cells are skipped here, without starting a worker
        if cell_status(cell, out) == "done":
            done(run_cell(cell, out))
        else:
            todo.append(cell)
    log_with = tuple(log_with)
    if executor is not None and executor.kind != "local":
        from herobench.harness.executors import run_remote

        run_remote(todo, out, executor, log_with, done)
    elif not gpus and (jobs == 1 or len(todo) <= 1):
        _run_here(todo, out, log_with, done)
    elif todo:
        _run_workers(todo, out, jobs, gpus, log_with, done)
    return [results[c.name] for c in cells_]


def _run_here(todo: Sequence[Cell], out: Path, log_with: tuple[str, ...], done) -> None:
    """One cell after another in this process, with one thread as in a worker (a cell's results never
    depend on --jobs)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _quiet_model_loading()
    try:
        for cell in todo:
            done(run_cell(cell, out, log_with))
    finally:
        torch.set_num_threads(threads)


def _run_workers(todo: Sequence[Cell], out: Path, jobs: int, gpus: Sequence[str], log_with: tuple[str, ...],
                 done) -> None:
    """``jobs`` spawned worker processes on this machine (``--executor local``)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    workers = min(jobs, len(todo))
    queue = None
    if gpus:
        queue = ctx.Queue()
        for i in range(workers):
            queue.put(gpus[i % len(gpus)])
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(queue,)) as pool:
        futures = [pool.submit(run_cell, cell, str(out), log_with) for cell in todo]
        try:
            for fut in as_completed(futures):
                done(fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def describe(result: CellResult) -> str:
    """One line per finished cell."""
    if result.status == "failed":
        return f"{result.name:<34} FAILED  {result.error}"
    if result.status == "claimed":
        return f"{result.name:<34} {'claimed':<14} {result.error} (not run here)"
    s = result.summary or {}
    end = s.get("success_end", {}).get("eval")
    start = s.get("success_start", {}).get("eval")
    curve = f"success {start:.3f} -> {end:.3f}" if end is not None and start is not None else ""
    how = "skipped (done)" if result.status == "skipped" else ("resumed" if result.resumed else "done")
    return f"{result.name:<34} {how:<14} {result.seconds:7.1f} s  labels {s.get('labels', 0):>5}  {curve}"


def plan(spec: GridSpec, out: str | Path, seeds: Sequence[int] | None = None) -> list[tuple[Cell, str, int]]:
    """(cell, status, labels it will spend) for every cell, without running anything.

    Raises:
        HerobenchError: a cell's ``method_options`` that its method would refuse (named with the cell)."""
    from herobench.methods import METHODS

    rows = []
    for cell in cells(spec, seeds):
        method = METHODS.get(cell.settings.method)()
        try:
            method.resolve_options(cell.settings.method_options)
        except HerobenchError as e:
            raise HerobenchError(f"cell {cell.name}: {e}") from None
        rows.append((cell, cell_status(cell, Path(out)), cell.settings.budget_labels if method.trains else 0))
    return rows


def bench(grid_path: str | Path, out: str | Path, jobs: int = 1, overrides: Sequence[str] = (),
          dry_run: bool = False, report: bool = True, seeds: Sequence[int] | None = None,
          gpus: Sequence[str] = (), echo: Callable[[str], None] = print, executor=None,
          shard: tuple[int, int] | None = None, log_with: Sequence[str] = (), only_cells: Sequence[str] = (),
          records: str | Path | None = None) -> list[CellResult]:
    """The Python API behind ``herobench bench``: plan, run (unless ``dry_run``) and report.

    ``executor``: :class:`herobench.harness.executors.ExecutorOptions` (None: local workers);
    ``shard``: ``(i, N)``, run only shard i of N (:func:`shard_of`); ``log_with``: tracker names;
    ``only_cells``: cell-name patterns (:func:`herobench.harness.grid_select.only`), applied before the shard;
    ``records``: copy each finished cell's record there (:func:`herobench.harness.grid_select.save_record`).

    Returns:
        One result per cell of the shard, in grid order (empty for a dry run).

    Raises:
        HerobenchError: a bad grid file or a cell folder holding other settings (before anything runs).
    """
    spec = load_grid(grid_path, overrides)
    out = Path(out)
    every = plan(spec, out, seeds)
    rows = shard_of(only(every, only_cells, lambda row: row[0].name), shard)
    n_seeds = len(seeds) if seeds is not None else len(spec.grid.seeds)
    part = f"{len(rows)} of {len(every)}" if shard or only_cells else f"{len(rows)}"
    part = f"shard {shard[0]}/{shard[1]}: {part}" if shard else part
    echo(plan_line(f"grid {grid_path}", spec, rows, out, n_seeds, part))
    if dry_run:
        for cell, status, labels in rows:
            echo(f"  {cell.name:<34} {status:<8} labels {labels}")
        return []
    results, _ = run_planned(spec, rows, out, {"grid": str(grid_path), "overrides": list(overrides)},
                             every=[c for c, _, _ in every], jobs=jobs, report=report, gpus=gpus, echo=echo,
                             executor=executor, log_with=log_with, records=records)
    return results


def plan_line(what: str, spec: GridSpec, rows: Sequence[tuple[Cell, str, int]], out: str | Path,
              n_seeds: int, part: str | None = None) -> str:
    """``grid X: 1 tasks x 3 methods x 2 seeds = 6 cells -> OUT  (6 new, ...; N labels in all)``;
    ``part`` replaces the cell count (a shard: ``"shard 1/2: 3 of 6"``)."""
    g = spec.grid
    counts = {k: sum(1 for _, st, _ in rows if st == k) for k in ("new", "partial", "done")}
    return (f"{what}: {len(g.tasks)} tasks x {len(g.methods)} methods x {n_seeds} seeds = "
            f"{part or len(rows)} cells -> {out}  ({counts['new']} new, {counts['partial']} partial, "
            f"{counts['done']} done; {sum(n for *_, n in rows)} labels in all)")


def run_planned(spec: GridSpec, rows: Sequence[tuple[Cell, str, int]], out: str | Path, source: dict[str, Any],
                every: Sequence[Cell] | None = None, jobs: int = 1, report: bool = True, gpus: Sequence[str] = (),
                echo: Callable[[str], None] = print, executor=None,
                log_with: Sequence[str] = (), records: str | Path | None = None
                ) -> tuple[list[CellResult], dict[str, Path]]:
    """Run the :func:`plan`'s ``rows`` (one progress line each), then merge every finished cell of the
    grid (``every``, default the rows' cells) into ``OUT/report``. ``source`` (e.g. the grid file and its
    overrides) goes into ``OUT/bench.json``; the other arguments are :func:`bench`'s. A record that cannot
    be saved is a line in the progress, not a failed grid (the run folder still holds it).

    Returns:
        (one result per row in grid order, the report's name -> path; empty without a report)."""
    out = Path(out)
    every = list(every) if every is not None else [c for c, _, _ in rows]
    check_models([c for c, _, _ in rows])
    if log_with:
        from herobench.harness.tracking import check_trackers

        check_trackers(log_with)  # a missing package is one error here, not one failed cell each
    _write_bench_json(out, source, spec, every)
    total = len(rows)
    finished = 0

    def progress(r: CellResult) -> None:
        nonlocal finished
        finished += 1
        echo(f"[{finished}/{total}] {describe(r)}")
        if records is not None and r.status in ("done", "skipped"):
            try:
                echo(f"      record -> {save_record(r.path, records)}")
            except HerobenchError as e:
                echo(f"      record NOT saved: {e}")

    results = run_cells([c for c, _, _ in rows], out, jobs, progress, gpus=gpus, executor=executor,
                        log_with=log_with)
    failed = [r for r in results if r.status == "failed"]
    written = _merged_report(out, every, spec, echo) if report else {}
    claimed = [r for r in results if r.status == "claimed"]
    if claimed:
        echo(f"{len(claimed)} cell(s) were running in another process; rerun later to pick up any it left")
    if failed:
        echo(f"{len(failed)} cell(s) failed (tracebacks in {out / 'failed'}); rerun the same command to retry them")
    return results, written


def _write_bench_json(out: Path, source: dict[str, Any], spec: GridSpec, every: Sequence[Cell]) -> None:
    """``<out>/bench.json``: the grid this folder holds (under a lock: several processes share ``out``)."""
    from herobench.harness.claims import exclusive
    from herobench.harness.runlog import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**source, "spec": to_dict(spec), "cells": [c.name for c in every]}, indent=2)
    with exclusive(out, "_grid"):
        write_text_atomic(out / "bench.json", text)


def _merged_report(out: Path, every: Sequence[Cell], spec: GridSpec, echo) -> dict[str, Path]:
    """The report of every cell of the grid finished so far, whoever ran it (another process, shard or
    machine sharing ``out``): the last process to finish writes the whole grid's report. Returns its
    files (name -> path; none when no cell has finished)."""
    from herobench.harness.claims import exclusive
    from herobench.harness.report import write_report

    ok = [str(out / c.name) for c in every if (out / c.name / "summary.json").is_file()]
    if not ok:
        return {}
    with exclusive(out, "_grid"):
        written = write_report(ok, out / "report", targets=spec.report.targets)
    echo(f"report: {len(ok)} cells -> {out / 'report'} ({', '.join(sorted(written))})")
    return written


__all__ = ["GridSpec", "Cell", "CellResult", "load_grid", "grid_from_dict", "cells", "cell_status", "run_cell",
           "run_cells", "plan", "plan_line", "run_planned", "bench", "describe", "parse_shard", "shard_of",
           "pin_threads"]
