"""Where a grid's cells run: ``local`` (worker processes on this machine, :func:`bench.run_cells`), ``ray``
(each cell a Ray task) or ``submitit`` (each cell a SLURM job, or a local subprocess on its local executor).

Every executor calls the one unit :func:`run_cell_pinned` — :func:`herobench.harness.bench.run_cell` with
the same one-thread pinning the local workers get — in a process of its own, so a cell's results do not
depend on the executor. Each cell's claim (:mod:`herobench.harness.claims`) is taken inside that unit by the
process that runs it, wherever it runs. Ray and submitit are optional extras, imported here only when asked
for (``pip install 'herobench[ray]'`` / ``'herobench[slurm]'``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from herobench.errors import HerobenchError
from herobench.harness.bench import Cell, CellResult, pin_threads, run_cell

EXECUTORS = ("local", "ray", "submitit")
SUBMITIT_CLUSTERS = ("auto", "slurm", "local", "debug")


@dataclass(frozen=True)
class ExecutorOptions:
    """How cells are dispatched (``herobench bench --executor ...`` and its options).

    ``jobs``: local workers; for a local Ray started here, its CPUs (``jobs × cpus_per_cell``); for
    submitit's local executor, the cells in flight at once. On a Ray cluster or SLURM the resource
    requests and the scheduler decide instead."""

    kind: str = "local"
    jobs: int = 1
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0
    ray_address: str | None = None
    slurm_partition: str | None = None
    slurm_time_min: int = 720
    submitit_cluster: str = "auto"
    submitit_folder: str | None = None  # default <out>/.submitit (job scripts and logs)

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise HerobenchError(f"--executor must be one of {', '.join(EXECUTORS)} (got '{self.kind}')")
        if self.submitit_cluster not in SUBMITIT_CLUSTERS:
            raise HerobenchError(f"--submitit-cluster must be one of {', '.join(SUBMITIT_CLUSTERS)}")
        if self.cpus_per_cell <= 0 or self.gpus_per_cell < 0:
            raise HerobenchError("--cpus-per-cell must be > 0 and --gpus-per-cell >= 0")


def run_cell_pinned(cell: Cell, out: str, log_with: tuple[str, ...] = ()) -> CellResult:
    """The unit every executor runs: one cell with one intra-op thread, as in a local worker."""
    pin_threads()
    return run_cell(cell, out, log_with=log_with)


def _lost(cell: Cell, out: Path, e: BaseException) -> CellResult:
    """A cell whose worker died without a result (killed, out of memory, a job time limit)."""
    return CellResult(cell.name, "failed", str(out / cell.name), error=f"{type(e).__name__}: {e}".splitlines()[0])


def _need(module: str, extra: str):
    """Import an optional executor's package, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise HerobenchError(f"--executor needs the '{module}' package: pip install 'herobench[{extra}]'") from None


def run_remote(todo: Sequence[Cell], out: Path, opts: ExecutorOptions, log_with: tuple[str, ...],
               done: Callable[[CellResult], None]) -> None:
    """Run ``todo`` under ``opts.kind`` (ray or submitit), calling ``done`` as each cell finishes."""
    if opts.kind == "ray":
        _run_ray(todo, out, opts, log_with, done)
    elif opts.kind == "submitit":
        _run_submitit(todo, out, opts, log_with, done)
    else:  # pragma: no cover - local cells never come here (bench.run_cells runs them)
        raise HerobenchError(f"run_remote: '{opts.kind}' is not a remote executor")


# -------------------------------------------------------------------------------------------------- ray


def _run_ray(todo, out: Path, opts: ExecutorOptions, log_with, done) -> None:
    """Each cell a Ray task requesting ``cpus_per_cell``/``gpus_per_cell`` (Ray sets the task's
    ``CUDA_VISIBLE_DEVICES``); ``max_calls=1``: a fresh worker process per cell, as locally, so nothing
    (GPU memory, torch state) carries from one cell to the next. Connects to ``ray_address``, reuses a Ray
    this process already initialised (the tests' small one), or starts a local one for the grid."""
    ray = _need("ray", "ray")
    started = not ray.is_initialized()
    if started:
        kw = ({"address": opts.ray_address} if opts.ray_address else
              {"num_cpus": max(1, math.ceil(opts.jobs * opts.cpus_per_cell))})
        ray.init(include_dashboard=False, log_to_driver=False, **kw)
    task = ray.remote(num_cpus=opts.cpus_per_cell, num_gpus=opts.gpus_per_cell, max_calls=1,
                      max_retries=0)(run_cell_pinned)
    pending = {task.remote(cell, str(out), tuple(log_with)): cell for cell in todo}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cell = pending.pop(ref)
                try:
                    done(ray.get(ref))
                except Exception as e:  # noqa: BLE001 - the worker died (run_cell itself never raises)
                    done(_lost(cell, out, e))
    finally:
        for ref in pending:  # interrupted: stop what still runs (its folder resumes on the next bench)
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


# -------------------------------------------------------------------------------------------- submitit


def _submitit_executor(out: Path, opts: ExecutorOptions):
    submitit = _need("submitit", "slurm")
    folder = Path(opts.submitit_folder) if opts.submitit_folder else out / ".submitit"
    cluster = None if opts.submitit_cluster == "auto" else opts.submitit_cluster
    ex = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    params = {"name": "herobench", "timeout_min": opts.slurm_time_min, "nodes": 1, "tasks_per_node": 1,
              "cpus_per_task": max(1, math.ceil(opts.cpus_per_cell)), "gpus_per_node": math.ceil(opts.gpus_per_cell)}
    if opts.slurm_partition:
        params["slurm_partition"] = opts.slurm_partition  # (ignored by the local executor)
    ex.update_parameters(**params)
    return ex


def _run_submitit(todo, out: Path, opts: ExecutorOptions, log_with, done) -> None:
    """Each cell a job. On SLURM every cell is submitted at once (the scheduler queues them); on the
    local executor, which starts each job as a subprocess at once, at most ``jobs`` are in flight."""
    ex = _submitit_executor(out, opts)
    on_slurm = ex.cluster == "slurm"
    limit = len(todo) if on_slurm else max(1, opts.jobs)
    poll = 15.0 if on_slurm else 0.5  # (sacct is asked at most this often; a local poll is cheap)
    queue, running = list(todo), {}
    try:
        while queue or running:
            while queue and len(running) < limit:
                cell = queue.pop(0)
                running[ex.submit(run_cell_pinned, cell, str(out), tuple(log_with))] = cell
            finished = [job for job in running if job.done()]
            for job in finished:
                cell = running.pop(job)
                try:
                    done(job.result())
                except Exception as e:  # noqa: BLE001 - the job died (time limit, OOM, node failure)
                    done(_lost(cell, out, e))
            if not finished:
                time.sleep(poll)
    finally:
        for job in running:  # interrupted: cancel what still runs (its folder resumes next time)
            job.cancel(check=False)


__all__ = ["EXECUTORS", "ExecutorOptions", "run_cell_pinned", "run_remote"]
