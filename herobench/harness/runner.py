"""The loop. The harness owns sampling, rating, the feedback ledger, evaluation and checkpoints;
methods only learn (see docs/ARCHITECTURE.md).

Determinism and resume: every iteration draws its randomness from generators seeded by
``(seed, iteration)``, so a run resumed from the checkpoint of iteration k replays iteration k + 1
exactly. Labels recorded in the ledger for an iteration that had not been checkpointed yet are
*replayed* from the ledger on resume — a label is never asked for twice. A resume also checks that the
ledger commits exactly the iterations the checkpoint learned from (plus at most the next one); an edited
or truncated ledger is refused with one line and nothing on disk changes. A resume completes the
evaluation point it lands on prompt set by prompt set (a kill between a point's ``eval`` and ``train``
rows loses neither), drops ``train.jsonl`` rows of iterations the checkpoint had not learned (they are
redone), and adds its time to the earlier processes' (``summary.json``). tests/test_reliability_resume.py
kills a run at 20 random file-system moments and checks all of this against an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from herobench.config import RunSettings, from_dict, to_dict
from herobench.core.images import sha256_of_image
from herobench.errors import HerobenchError
from herobench.harness import checkpoint, eval_loop
from herobench.harness.checkpoint import drop_unlearned_train_rows, replayed_feedback
from herobench.harness.ledger import FeedbackLedger
from herobench.harness.parallel import accelerator_for, from_main, sample_batch
from herobench.harness.progress import Progress, eval_points
from herobench.harness.run_build import build
from herobench.harness.runlog import (
    RunDir,
    append_jsonl,
    environment_info,
    read_jsonl,
    run_dir_name,
    write_json_atomic,
    write_text_atomic,
)
from herobench.types import Feedback, RatingRequest, Rollout

__all__ = ["Run", "execute", "prepare", "run"]


def _rng(seed: int, iteration: int, stream: int) -> torch.Generator:
    """A training stream of iteration ``iteration`` (1 initial noise, 2 sampling, 4 learning; the rater's
    numpy stream is 3): seeded by ``(seed, iteration)`` alone, so a resumed iteration replays exactly."""
    return torch.Generator().manual_seed((seed * 1_000_003 + iteration * 101 + stream) % (2**63))


class Run:
    """Everything one run holds. Built by :func:`prepare`; driven by :func:`execute`.

    Its pieces come from :func:`herobench.harness.run_build.build`; checkpoints are
    :mod:`herobench.harness.checkpoint`'s and evaluation points :mod:`herobench.harness.eval_loop`'s."""

    def __init__(self, settings: RunSettings, run_dir: RunDir, progress: bool = True, accelerator=None,
                 resumed: bool = False):
        self.settings = settings
        self.dir = run_dir
        self.resumed = resumed  # a new run that fails before its first label removes its folder (execute)
        # several processes (data parallel): the main one alone rates and writes the run folder
        self.acc = accelerator
        self.main = accelerator is None or accelerator.is_main_process
        self.progress = progress and self.main
        self.phases = Progress(self.progress)  # what a person watching sees (stderr)
        self.mirror = None  # --log-with trackers (herobench.harness.tracking), attached by prepare
        built = build(settings, run_dir, self.phases, accelerator, self.main)
        self.task, self.backend, self.profile, self.model_dir = built.task, built.backend, built.profile, built.model_dir
        self.feedback_oracle, self.eval_oracle = built.feedback_oracle, built.eval_oracle
        self.method, self.gen, self.rater = built.method, built.gen, built.rater
        self.ledger, self.budget = built.ledger, built.budget
        self.iteration = 0  # iterations completed (learned from and checkpointed)
        self.labels_done = 0  # labels of those iterations (the ledger may hold one more, not yet learned)
        # time of the run's earlier processes (up to each one's last checkpoint; a resume adds its own)
        self.seconds_before = 0.0
        self.unet_seconds_before = 0.0
        self.timings: dict[str, float] = {}
        self.last_eval: dict | None = None  # this process' last "eval" row, for the checkpoint card
        self.extended_from: int | None = None  # a resume that raised the budget: the recorded one

    # ------------------------------------------------------------------ bookkeeping
    def _time(self, key: str, t0: float) -> None:
        """Add the seconds since ``t0`` to the phase ``key`` of ``timings`` (kept in checkpoints and the summary)."""
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0

    def config_record(self) -> dict:
        """``config.json``'s content: what a resume rebuilds the run from, and what produced its numbers."""
        return {
            "settings": to_dict(self.settings),
            "sampler": dataclasses.asdict(self.gen.sampler),
            "task": {"name": self.task.name, "version": self.task.version},
            "oracle": {
                "feedback": ({"name": "human", "version": None} if self.feedback_oracle is None else
                             {"name": self.feedback_oracle.name, "version": self.feedback_oracle.version}),
                "evaluation": {"name": self.eval_oracle.name, "version": self.eval_oracle.version},
                "profile": self.profile,
            },
            "method": {"name": self.method.name, "protocol": self.method.protocol,
                       "custom_eval_noise": bool(getattr(self.method, "custom_eval_noise", False)),
                       "options": to_dict(getattr(self.method, "options", None) or {})},
            "model": str(self.model_dir),
            "environment": environment_info(),
        }

    def save_checkpoint(self, seconds: float = 0.0) -> None:
        """Atomically replace ``checkpoints/latest`` (:func:`herobench.harness.checkpoint.save_checkpoint`)."""
        checkpoint.save_checkpoint(self, seconds)

    def load_checkpoint(self) -> None:
        """Restore the run from ``checkpoints/latest`` (:func:`herobench.harness.checkpoint.load_checkpoint`)."""
        checkpoint.load_checkpoint(self)

    def close(self) -> None:
        """Release what the run holds open (the human rater's web server, the trackers)."""
        close = getattr(self.rater, "close", None)
        if close is not None:
            close()
        if self.mirror is not None:
            self.mirror.close()
            self.mirror = None

    def log(self, kind: str, path: Path, row: dict) -> None:
        """Append a ``train`` or ``eval`` row to its JSONL file (the record), then to the trackers."""
        append_jsonl(path, row)
        if self.mirror is not None:
            self.mirror.record(kind, row)

    # ------------------------------------------------------------------ evaluation
    def prompt_sets(self) -> dict[str, list[str]]:
        """The evaluated prompt sets (:func:`herobench.harness.eval_loop.prompt_sets`)."""
        return eval_loop.prompt_sets(self.task)

    def evaluate(self, only: Sequence[str] | None = None) -> list[dict]:
        """An evaluation point (:func:`herobench.harness.eval_loop.evaluate`); never charged to the budget."""
        return eval_loop.evaluate(self, only)

    # ------------------------------------------------------------------ one iteration
    def step(self) -> dict:
        """One iteration: sample, rate (or replay from the ledger), record, learn; returns its ``train.jsonl`` row."""
        it = self.iteration + 1
        s = self.settings
        n = min(s.batch_size, self.budget - self.labels_done)
        t0 = time.perf_counter()
        prompts = self.method.train_prompts(self.task, n)
        groups = self.method.groups(n)
        self.phases.line(f"iteration {it}: sampling {n} images")
        noise = self.method.init_noise(n, self.gen.latent_shape, _rng(s.seed, it, 1))
        rollout = sample_batch(self.gen, self.acc, prompts, noise, _rng(s.seed, it, 2))
        self._time("sampling", t0)

        t0 = time.perf_counter()
        rater = "a person" if self.feedback_oracle is None else self.feedback_oracle.name
        self.phases.line(f"iteration {it}: rating ({rater})")
        # several processes: the main one alone rates and writes the ledger; every process learns
        feedback = from_main(self._rate(it, rollout, groups) if self.main else None, self.acc)
        self._time("rating", t0)

        t0 = time.perf_counter()
        self.phases.line(f"iteration {it}: learning ({self.method.name}, {feedback.n_labels} labels)")
        stats = self.method.learn(rollout, feedback, _rng(s.seed, it, 4))
        self._time("learning", t0)
        self.iteration = it
        self.labels_done += feedback.n_labels
        return {"iteration": it, "labels": self.labels_done, "good": int(sum(feedback.good)), **stats}

    def _rate(self, it: int, rollout: Rollout, groups: list[int] | None) -> Feedback:
        """The batch's feedback: replayed from the ledger (the rater remembers its best), or asked and recorded."""
        s, n, prompts = self.settings, len(rollout), rollout.prompts
        hashes = [sha256_of_image(img) for img in rollout.images]
        recorded = self.ledger.get(it)
        if recorded is not None:  # labels given before a crash: replay them, never ask twice
            feedback, verdict_scores = replayed_feedback(recorded, hashes)
            self.rater.remember_best(feedback, verdict_scores)  # as if it had just rated the batch
        else:
            # a person judges the images themself: no oracle is asked, and the ledger holds only their labels
            verdicts = None if self.feedback_oracle is None else self.feedback_oracle.judge(rollout.images, prompts)
            feedback = self.rater.rate(
                verdicts, self.method.protocol, groups=groups, rng=np.random.default_rng([s.seed, it, 3]),
                request=RatingRequest(rollout.images, tuple(prompts), tuple(hashes), it, self.budget,
                                      self.ledger.spent, _last_best_sha256(self.ledger), self.task.name),
            )
            judged = ([{"rater": "human"}] * n if verdicts is None else
                      [{"score": float(v.score), "reason": v.reason} for v in verdicts])
            entries = [
                {"prompt": p, "image_sha256": h, "good": bool(g), **j, "group": (groups[i] if groups else None)}
                for i, (p, h, g, j) in enumerate(zip(prompts, hashes, feedback.good, judged))
            ]
            self.ledger.record(it, entries, best=feedback.best, pairs=list(feedback.pairs), scores=feedback.scores)
        return feedback


def _last_best_sha256(ledger: FeedbackLedger) -> str | None:
    """The image hash of the ledger's latest best pick (a person's page shows it beside the batch)."""
    for it in reversed(ledger.iterations):
        rec = ledger.get(it)
        if rec.best is not None:
            return rec.entries[rec.best]["image_sha256"]
    return None


def _top_missing(path: Path) -> Path:
    """The highest ancestor of ``path`` (``path`` itself included) that does not exist yet."""
    top = path
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    return top


def _remove_new_folder(path: Path, top: Path) -> None:
    """Remove the run folder ``path``, and the folders above it up to ``top`` that ``prepare`` created,
    while they are empty (another run may have started in one of them meanwhile)."""
    shutil.rmtree(path, ignore_errors=True)
    parent = path
    while parent != top and top in parent.parents:
        parent = parent.parent
        try:
            parent.rmdir()
        except OSError:
            return


def prepare(settings: RunSettings, out: Path | str = "runs", resume: Path | str | None = None,
            progress: bool = True, log_with: Sequence[str] = (), budget: int | None = None) -> Run:
    """Create (or reopen, with ``resume``) a run folder and build the run. Under ``accelerate launch``
    with several processes every process builds the run; the main one alone creates the folder.

    The folder is ``<out>/<task name>-<method>-s<seed>`` (:func:`herobench.harness.runlog.run_dir_name`;
    ``-2``, ``-3``, ... when taken). A run that cannot be built leaves no folder behind, nor any parent
    folder this call created. ``log_with``: trackers mirroring the run's logs (:mod:`herobench.harness.tracking`).

    ``budget`` (with ``resume``): continue the run to this many labels, at least its recorded budget
    (``run.extended_from`` is then the recorded one, and ``config.json`` records the new one once the
    run is rebuilt); None keeps the recorded budget.

    Raises:
        HerobenchError: ``budget`` below the recorded budget (nothing changes), or without ``resume``.
    """
    if budget is not None and resume is None:
        raise HerobenchError("budget= extends a resumed run; a new run takes its budget from its settings")
    run = _create(settings, Path(out), progress) if resume is None else _reopen(Path(resume), progress, budget)
    if log_with and run.main:
        from herobench.harness.tracking import open_mirror

        try:
            run.mirror = open_mirror(log_with, run.dir.path, run.dir.path.name, run.config_record())
        except BaseException:
            run.close()
            raise
    return run


def _reopen(resume: Path, progress: bool, budget: int | None) -> Run:
    """The run of an existing folder, rebuilt from its ``config.json`` and restored from its checkpoint
    (``budget``: see :func:`prepare`; recorded in ``config.json`` only once the run is rebuilt)."""
    rd = RunDir(resume)
    if not rd.config_json.exists():
        raise HerobenchError(f"'{resume}' is not a herobench run folder (no config.json)")
    try:
        saved = json.loads(rd.config_json.read_text())
        settings = from_dict(RunSettings, saved["settings"], "settings")
    except HerobenchError:
        raise
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001
        raise HerobenchError(f"'{resume}' has an unreadable config.json ({type(e).__name__}: {e})") from e
    recorded = settings.budget_labels
    settings = _extended(settings, budget, rd.path)
    run = Run(settings, rd, progress, accelerator_for(settings.device), resumed=True)
    try:
        run.load_checkpoint()
        if settings.budget_labels != recorded and run.main:  # recorded only once the run rebuilt
            saved["settings"]["budget_labels"] = settings.budget_labels
            saved.setdefault("budget_extensions", []).append({"from": recorded, "to": settings.budget_labels})
            write_text_atomic(rd.config_json, json.dumps(saved, indent=2, default=str))
    except BaseException:
        run.close()  # a human rater's page is already serving
        raise
    run.extended_from = recorded if settings.budget_labels != recorded else None
    return run


def _create(settings: RunSettings, out: Path, progress: bool) -> Run:
    """A new run in a new folder ``out/<run_dir_name>`` (``-2``, ``-3``, ... when taken), with its
    ``config.json``; nothing is left behind when the run cannot be built."""
    acc = accelerator_for(settings.device)
    name = run_dir_name(settings)  # (a task that does not load fails here, before any folder exists)
    path = out / name
    main = acc is None or acc.is_main_process
    top = None
    if main:
        k = 1
        while path.exists():
            k += 1
            path = out / f"{name}-{k}"
        top = _top_missing(path)
        path.mkdir(parents=True)
    path = from_main(path, acc)
    rd = RunDir(path)
    try:
        run = Run(settings, rd, progress, acc)
    except BaseException:
        if main:
            _remove_new_folder(path, top)  # nothing was recorded yet: leave no empty run folder
        raise
    if run.main:
        try:  # (atomic: a kill leaves a complete config.json or none, and a folder without one is no run)
            write_text_atomic(rd.config_json, json.dumps(run.config_record(), indent=2, default=str))
        except BaseException:
            run.close()
            _remove_new_folder(path, top)
            raise
    return run


def _extended(settings: RunSettings, budget: int | None, path: Path) -> RunSettings:
    """``settings`` with the label budget raised to ``budget`` (None: unchanged).

    Raises:
        HerobenchError: ``budget`` is below the recorded one (a run's labels cannot be taken back)."""
    if budget is None or budget == settings.budget_labels:
        return settings
    if budget < settings.budget_labels:
        raise HerobenchError(f"--budget {budget} is below the budget of {settings.budget_labels} labels recorded in "
                             f"{path}; a resumed run can only be extended (start a new run for a smaller budget)")
    return dataclasses.replace(settings, budget_labels=budget)


def execute(run: Run) -> dict:
    """Drive a prepared run to the end of its budget; returns the summary (also in summary.json).

    A new run (not a resume) that stops on an error before it recorded its first label -- a replay log
    that does not match, a full disk -- removes its folder: nothing in it is worth resuming."""
    try:
        return _execute(run)
    except Exception:
        if run.main and not run.resumed and run.ledger.spent == 0:
            shutil.rmtree(run.dir.path, ignore_errors=True)
        raise


def _execute(run: Run) -> dict:
    s = run.settings
    t_start = time.perf_counter()

    def seconds() -> float:  # this run's execution time, over all its processes so far
        return run.seconds_before + time.perf_counter() - t_start

    every = s.eval.every_labels
    if run.main:
        drop_unlearned_train_rows(run)
    # (a resume may land between points; several processes: the main one, which wrote the evaluations, decides)
    missing = from_main(eval_loop.missing_prompt_sets(run) if run.main else None, run.acc)
    if missing:
        run.evaluate(only=missing)
    run.phases.start_bar(run.budget if run.method.trains else 0, run.labels_done,
                         eval_points(run.budget, s.batch_size, every, run.method.trains), f"{s.task}/{s.method}")
    try:
        while run.method.trains and run.labels_done < run.budget:
            before, t_iteration = run.labels_done, time.perf_counter()
            stats = run.step()
            if run.main:
                run.log("train", run.dir.train_log, stats)
            t0 = time.perf_counter()
            run.save_checkpoint(seconds())
            run._time("io", t0)
            run.phases.iterated(run.labels_done - before, time.perf_counter() - t_iteration)
            if run.labels_done // every > before // every or run.labels_done == run.budget:
                run.evaluate()
    finally:
        run.phases.close()
    if not run.method.trains:
        run.save_checkpoint(seconds())
    if not run.main:  # the main process writes the summary and hands it to the others
        return from_main(None, run.acc)
    summary = _summary(run, seconds())
    write_json_atomic(run.dir.summary, summary)
    return from_main(summary, run.acc)


def _summary(run: Run, seconds: float) -> dict:
    """``summary.json``: start and end success per prompt set, the ledger's counts and the run's times."""
    s = run.settings
    evals = read_jsonl(run.dir.evals)
    last = {e["prompt_set"]: e for e in evals if e["labels"] == run.labels_done}
    first = {e["prompt_set"]: e for e in evals if e["labels"] == 0}
    return {
        "task": s.task, "method": s.method, "seed": s.seed, "labels": run.labels_done,
        "best_picks": run.ledger.n_best_picks, "pairs": run.ledger.n_pairs, "iterations": run.iteration,
        "success_start": {k: v["success_rate"] for k, v in first.items()},
        "success_end": {k: v["success_rate"] for k, v in last.items()},
        "interval_end": {k: [v["lo"], v["hi"]] for k, v in last.items()},
        # summed over the run's processes (each up to its last checkpoint: work a kill threw away and
        # that was redone is counted once)
        "seconds": seconds,
        "timings": run.timings,
        "unet_seconds": run.unet_seconds_before + run.gen.unet_seconds,
    }


def run(settings: RunSettings, out: Path | str = "runs", resume: Path | str | None = None,
        progress: bool = True, log_with: Sequence[str] = (), budget: int | None = None) -> tuple[Path, dict]:
    """The Python API behind ``herobench run``: returns (run folder, summary). ``budget``: see
    :func:`prepare`."""
    r = prepare(settings, out, resume, progress, log_with, budget)
    try:
        return r.dir.path, execute(r)
    finally:
        r.close()
