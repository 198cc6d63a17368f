"""``herobench compare``: several methods x seeds on one task, as a grid built in memory and run by
:mod:`herobench.harness.bench` (resumable, ``--jobs``), with a time estimate measured on this machine.

The estimate (:func:`estimate`) counts the images every unfinished cell samples -- one per label, plus
each evaluation point's images -- and multiplies them by the seconds per image-step of one micro-batch
sampled here, on one thread as the cells run, at the cells' sampler. Learning is scaled from the
``learning / sampling`` time ratio of finished runs of the same method on this CPU (their
``summary.json``); a method with no such run has its learning left out, and the plan says so (the
estimate is then a lower bound). Rerunning the command after some cells finished uses them.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herobench.errors import ConfigError
from herobench.harness.bench import Cell, GridSpec, grid_from_dict
from herobench.harness.progress import eval_points

SEARCH_DEPTH = 3  # <root>/<grid>/<cell>/summary.json
MAX_RECORDS = 400  # summary.json files read per root (newest first): the plan must print in seconds


def compare_grid(task: str, methods: Sequence[str], seeds: int, budget: int | None,
                 overrides: Sequence[str] = ()) -> GridSpec:
    """The grid ``task x methods x seeds 0..seeds-1``; ``overrides`` are ``key=value`` for the shared
    settings, or ``method_options.<method>.<key>=value`` for one method's options.

    Raises:
        ConfigError: no methods, ``seeds < 1``, a ``method_options`` override for a method not compared,
            or what :func:`herobench.harness.bench.grid_from_dict` refuses."""
    methods = [m.strip() for m in methods if m.strip()]
    if not methods:
        raise ConfigError("--methods: give at least one method, e.g. --methods hero,ddpo,pretrained")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1 (got {seeds})")
    options: dict[str, dict[str, Any]] = {}
    shared = []
    for assignment in overrides:
        key = assignment.partition("=")[0].strip()
        if not key.startswith("method_options."):
            shared.append(assignment)
            continue
        method = key.split(".")[1] if key.count(".") >= 2 else ""
        if method not in methods:
            raise ConfigError(f"--set {assignment}: expected method_options.<method>.<key>=value for one of "
                              f"{', '.join(methods)}")
        from herobench.config import apply_overrides

        options = apply_overrides(options, [assignment.removeprefix("method_options.")], None)
    data = {"grid": {"tasks": [task], "methods": methods, "seeds": list(range(seeds))},
            "settings": {"budget_labels": budget} if budget is not None else {},
            "method_options": options}
    return grid_from_dict(data, shared)


# ------------------------------------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class Calibration:
    """One sampling micro-batch timed here: ``seconds`` for ``images`` images at ``steps`` DDIM steps
    (CFG as the cells sample), on one thread; ``load_seconds``: loading the model once."""

    images: int
    steps: int
    seconds: float
    load_seconds: float

    @property
    def per_image_step(self) -> float:
        return self.seconds / (self.images * self.steps)


@dataclass
class MethodEstimate:
    """The work of one method's unfinished cells and its estimated seconds (all of them together)."""

    method: str
    cells: int = 0
    sample_images: int = 0  # one image per label still to spend
    eval_images: int = 0  # evaluation points still to come x prompt sets x images
    learn_ratio: float | None = None  # learning seconds per sampling second; None: not measured
    records: int = 0  # finished runs the ratio comes from
    seconds: float = 0.0


@dataclass
class Estimate:
    calibration: Calibration | None
    methods: list[MethodEstimate] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(m.seconds for m in self.methods)


def _spent(path: Path) -> tuple[int, set[int]]:
    """(labels in a partial cell's ledger, label counts it has evaluated at)."""
    from herobench.harness.runlog import read_jsonl

    labels = sum(1 for r in read_jsonl(path / "labels.jsonl") if "good" in r) if (path / "labels.jsonl").exists() \
        else 0
    evaluated = {int(e["labels"]) for e in read_jsonl(path / "evals.jsonl")} if (path / "evals.jsonl").exists() \
        else set()
    return labels, evaluated


def cell_work(cell: Cell, status: str, out: Path, n_sets: int, trains: bool) -> tuple[int, int]:
    """(images the cell still samples for labels, images it still samples for evaluation)."""
    s = cell.settings
    budget = s.budget_labels if trains else 0
    labels, evaluated = _spent(out / cell.name) if status == "partial" else (0, set())
    points = [p for p in eval_points(budget, s.batch_size, s.eval.every_labels, trains) if p not in evaluated]
    return budget - labels, len(points) * n_sets * s.eval.n_images


def recorded_ratios(roots: Sequence[Path], cpu: str) -> dict[tuple[str, int, int], list[float]]:
    """``{(method, DDIM steps, batch size): [learning / sampling seconds of each finished run]}`` over the
    ``summary.json`` files under ``roots`` (at most :data:`SEARCH_DEPTH` folders deep) whose ``config.json``
    names this ``cpu``. The ratio depends on the steps and batch (a PPO update trains a few of the steps
    on micro-batches), so only runs that share them are used."""
    out: dict[tuple[str, int, int], list[float]] = {}
    seen: set[Path] = set()
    for root in roots:
        files = [p for d in range(1, SEARCH_DEPTH + 1) for p in Path(root).glob("/".join(["*"] * d) + "/summary.json")]
        files = sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)[:MAX_RECORDS]
        for summary_path in files:
            if summary_path.resolve() in seen:
                continue
            seen.add(summary_path.resolve())
            try:
                summary = json.loads(summary_path.read_text())
                config = json.loads((summary_path.parent / "config.json").read_text())
                t = summary["timings"]
                if config["environment"].get("cpu") != cpu or float(t.get("sampling", 0)) <= 0:
                    continue
                key = (summary["method"], int(config["sampler"]["steps"]), int(config["settings"]["batch_size"]))
                out.setdefault(key, []).append(float(t.get("learning", 0.0)) / float(t["sampling"]))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # not a run folder this estimate can read: it just does not count
    return out


def calibrate(cell: Cell, images: int = 8) -> Calibration:
    """Load the cell's model and time one micro-batch of ``images`` at its sampler, on one thread."""
    import torch

    from herobench.core.generator import Generator
    from herobench.core.pipeline import load_components
    from herobench.harness.run_build import sampler_for
    from herobench.modelcard import resolve_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the cells run (bench: one thread per cell)
    try:
        t0 = time.perf_counter()
        model_dir = resolve_model(cell.settings.model)
        device = cell.settings.device
        gen = Generator(load_components(model_dir, device=device), sampler_for(cell.settings, model_dir),
                        device=device)
        load = time.perf_counter() - t0
        prompts = ["calibration"] * images
        gen.sample(prompts[:1], generator=torch.Generator().manual_seed(0))  # warm-up, not timed
        t0 = time.perf_counter()
        gen.sample(prompts, generator=torch.Generator().manual_seed(1))
        return Calibration(images, gen.sampler.steps, time.perf_counter() - t0, load)
    finally:
        torch.set_num_threads(threads)


def estimate(rows: Sequence[tuple[Cell, str, int]], out: Path, roots: Sequence[Path] = (),
             calibration: Calibration | None = None) -> Estimate:
    """Seconds of work the unfinished cells of a :func:`herobench.harness.bench.plan` still need (see
    the module docstring). ``roots``: where finished runs are looked for besides ``out``."""
    from herobench.harness.run_build import sampler_for
    from herobench.harness.runlog import cpu_model
    from herobench.methods import METHODS
    from herobench.modelcard import resolve_model
    from herobench.tasks import load_task

    todo = [(c, st) for c, st, _ in rows if st != "done"]
    if not todo:
        return Estimate(calibration)
    calibration = calibration or calibrate(todo[0][0])
    ratios = recorded_ratios([out, *roots], cpu_model())
    by_method: dict[str, MethodEstimate] = {}
    for cell, status in todo:
        s = cell.settings
        task = load_task(s.task)
        n_sets = 1 if list(task.train_prompts) == list(task.eval_prompts) else 2
        trains = METHODS.get(s.method)().trains
        sample, evaluation = cell_work(cell, status, out, n_sets, trains)
        m = by_method.setdefault(s.method, MethodEstimate(s.method))
        steps = sampler_for(s, resolve_model(s.model)).steps
        m.cells += 1
        m.sample_images += sample
        m.eval_images += evaluation
        found = ratios.get((s.method, steps, s.batch_size), [])
        m.records, m.learn_ratio = len(found), (statistics.median(found) if found else None)
        sampling = sample * steps * calibration.per_image_step
        m.seconds += (calibration.load_seconds + sampling + evaluation * steps * calibration.per_image_step
                      + (m.learn_ratio or 0.0) * sampling)
    return Estimate(calibration, list(by_method.values()))


def duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"3 h 05 min"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def estimate_lines(est: Estimate, jobs: int) -> list[str]:
    """The plan's time estimate, saying how it was measured."""
    cal = est.calibration
    if cal is None or not est.methods:
        return ["estimated time: nothing left to run"]
    lines = [f"estimated time, measured here: {cal.images} images sampled in {cal.seconds:.2f} s at "
             f"{cal.steps} DDIM steps on one thread ({1e3 * cal.per_image_step:.1f} ms per image-step), "
             f"model load {cal.load_seconds:.1f} s per cell:"]
    lower_bound = False
    for m in est.methods:
        if m.learn_ratio is not None:
            runs = f"{m.records} finished {m.method} run{'s' if m.records != 1 else ''}"
            how = f"learning {m.learn_ratio:.1f}x sampling (median of {runs} here)"
        elif m.sample_images == 0:
            how = "no learning"
        else:
            how = f"learning NOT included (no finished {m.method} run at this sampler and batch on this CPU yet)"
            lower_bound = True
        lines.append(f"  {m.method:<14} {m.cells} cells  {m.sample_images} labels' images + {m.eval_images} "
                     f"evaluation images  {how}  ~{duration(m.seconds)}")
    total = est.seconds
    cells = sum(m.cells for m in est.methods)
    parallel = min(jobs, cells)
    bound = "at least " if lower_bound else "about "
    lines.append(f"  total: {bound}{duration(total)} of work" + (
        f"; with --jobs {parallel} {bound}{duration(total / parallel)} of wall time if {parallel} cores are free"
        if parallel > 1 else " (one cell at a time; --jobs N runs N cells side by side)"))
    if lower_bound:
        lines.append("  (learning is timed from finished runs: the same command with --dry-run, once a cell of each "
                     "method has finished, gives the whole estimate)")
    return lines
