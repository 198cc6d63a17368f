"""A run's checkpoint and what a resume reads back: ``checkpoints/latest`` (the LoRA in diffusers format,
the method's state, the harness' counters and times, a Hub model card), written atomically, and the checks
that a reopened run folder is consistent before anything changes in it.

Layout of ``checkpoints/latest``: ``lora/`` (methods that train), ``method.pt`` (``method.state_dict()``),
``harness.json`` (``iteration``, ``labels``, ``best_score``, ``seconds``, ``timings``, ``unet_seconds``)
and ``README.md`` (:mod:`herobench.harness.checkpoint_card`). A new checkpoint is written to
``latest.tmp`` and swapped in through ``latest.old``; :func:`load_checkpoint` repairs a kill at any point
of that swap. The functions take the :class:`herobench.harness.runner.Run` they save or restore.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import torch

from herobench.core.lora import load_lora, save_lora
from herobench.errors import FileSystemError, HerobenchError, errno_in_text
from herobench.harness.checkpoint_card import write_card
from herobench.harness.runlog import RunDir, read_jsonl, write_bytes, write_text_atomic
from herobench.types import Feedback


def save_checkpoint(run, seconds: float = 0.0) -> None:
    """Atomically replace ``checkpoints/latest`` (LoRA + method state + harness state); the main
    process' alone (every process holds the same state). ``seconds``: the run's execution time so
    far, over all its processes (kept so that a resumed run's summary adds them up).

    Raises:
        FileSystemError, OSError: it could not be written (disk full, ...). What was half-written
            (``latest.tmp``) is removed first; ``latest`` is still the previous checkpoint.
    """
    if not run.main:
        return
    final = run.dir.checkpoints / "latest"
    tmp = run.dir.checkpoints / "latest.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    state = {"iteration": run.iteration, "best_score": run.rater.best_score, "labels": run.labels_done,
             "seconds": seconds, "timings": run.timings,
             "unet_seconds": run.unet_seconds_before + run.gen.unet_seconds}
    try:
        tmp.mkdir(parents=True)
        if run.method.trains:
            save_lora(run.gen.components.unet, tmp / "lora")
        write_card(run, tmp)
        # serialised in memory, then written: a failed write is an OSError naming the file (torch's own
        # writer reports a full disk as "unexpected pos ...")
        buf = io.BytesIO()
        torch.save(run.method.state_dict(), buf)
        write_bytes(tmp / "method.pt", buf.getvalue())
        write_bytes(tmp / "harness.json", json.dumps(state).encode())
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        converted = _file_system_error(e, tmp)
        if converted is None:
            raise
        raise converted from e
    old = run.dir.checkpoints / "latest.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(run) -> None:
    """Restore ``run`` from ``checkpoints/latest`` (nothing when there is none yet), after repairing a kill
    inside :func:`save_checkpoint`; then check the ledger against it (the main process').

    Raises:
        HerobenchError: a corrupt checkpoint, or a ledger that does not commit exactly what it learned.
    """
    ckpt = run.dir.checkpoints / "latest"
    old = run.dir.checkpoints / "latest.old"
    if not ckpt.exists() and old.exists() and run.main:  # killed between the two renames
        old.rename(ckpt)
    if run.main:  # a kill inside save_checkpoint: a half-written new one, or a half-removed old one
        shutil.rmtree(run.dir.checkpoints / "latest.tmp", ignore_errors=True)
        if ckpt.exists():
            shutil.rmtree(old, ignore_errors=True)
    if run.acc is not None:
        run.acc.wait_for_everyone()  # every process loads the checkpoint the main one fixed up
    if ckpt.exists():
        try:
            state = json.loads((ckpt / "harness.json").read_text())
            iteration, labels, best_score = int(state["iteration"]), int(state["labels"]), state["best_score"]
            if best_score is not None:
                best_score = float(best_score)
            times = _times(state)  # (a checkpoint written before they were kept: zeros)
            if run.method.trains:
                load_lora(run.gen.components.unet, ckpt / "lora")
            run.method.load_state_dict(torch.load(ckpt / "method.pt", weights_only=False))
        except HerobenchError:
            raise
        except Exception as e:  # noqa: BLE001 - any corruption becomes one line
            raise HerobenchError(f"checkpoint {ckpt} is corrupt ({type(e).__name__}: {e})") from e
        run.iteration, run.labels_done, run.rater.best_score = iteration, labels, best_score
        # a finished run resumed: its summary holds the times up to the end (the last evaluation too)
        times = _finished_times(run.dir, iteration, labels) or times
        run.seconds_before, run.timings, run.unet_seconds_before = times
    if run.ledger is not None:
        check_ledger_matches_checkpoint(run)


def check_ledger_matches_checkpoint(run) -> None:
    """The ledger must hold exactly the iterations the checkpoint learned from (1..iteration, with
    its label count), plus at most the next one (recorded, not yet learned: it is replayed)."""
    learned = [it for it in run.ledger.iterations if it <= run.iteration]
    held = sum(len(run.ledger.get(it).entries) for it in learned)
    extra = [it for it in run.ledger.iterations if it > run.iteration]
    if learned != list(range(1, run.iteration + 1)) or held != run.labels_done or extra not in (
        [], [run.iteration + 1]
    ):
        raise HerobenchError(
            f"{run.ledger.path} does not match the checkpoint: it commits iterations {_span(learned + extra)} "
            f"({held} labels up to iteration {run.iteration}), but the checkpoint learned iterations "
            f"1-{run.iteration} ({run.labels_done} labels); nothing was changed"
        )


def _span(iterations: list[int]) -> str:
    """``1-4`` for a contiguous run of iterations, else the list (for the mismatch message)."""
    if not iterations:
        return "none"
    return f"{iterations[0]}-{iterations[-1]}" if iterations == list(range(iterations[0], iterations[-1] + 1)) \
        else ", ".join(map(str, iterations))


def drop_unlearned_train_rows(run) -> None:
    """Keep one ``train.jsonl`` row per iteration the checkpoint learned: a kill between a row's append
    and its checkpoint leaves the row of an iteration that is redone (and logged again) on resume."""
    path = run.dir.train_log
    if not path.exists():
        return
    rows = read_jsonl(path)
    keep, seen = [], set()
    for r in rows:
        it = r.get("iteration")
        if isinstance(it, int) and (it > run.iteration or it in seen):
            continue
        seen.add(it)
        keep.append(r)
    if len(keep) < len(rows):
        write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))


def replayed_feedback(rec, hashes: list[str]) -> tuple[Feedback, list[float] | None]:
    """The feedback of a batch recorded before a kill (``rec``, the ledger's record of its iteration) and
    its verdict scores (None when a person labelled it), once the images sampled again match it.

    Raises:
        HerobenchError: the batch sampled again is not the recorded one (other machine, seed or code).
    """
    if [e["image_sha256"] for e in rec.entries] != hashes:
        raise HerobenchError(
            "the replayed batch differs from the recorded one (image hashes do not match): "
            "resume on the same machine type, seed and code version"
        )
    if any("score" not in e for e in rec.entries):  # labelled by a person
        return rec.feedback(), None
    return rec.feedback(), [float(e["score"]) for e in rec.entries]


def _file_system_error(e: BaseException, where: Path) -> FileSystemError | None:
    """A library's wrapped file-system failure (safetensors' ``(os error 28)``, torch's "unexpected pos"
    on a full disk) as one line naming ``where`` and the cause; None for anything else (an ``OSError``
    stays one: the CLI words it, naming its own path)."""
    if not isinstance(e, Exception) or isinstance(e, OSError | HerobenchError):
        return None
    number = errno_in_text(str(e))
    if number is not None:
        return FileSystemError(where, os.strerror(number).lower())
    try:
        full = shutil.disk_usage(where.parent).free == 0
    except OSError:
        full = False
    return FileSystemError(where, "no space left on device") if full else None


def _times(state: dict) -> tuple[float, dict[str, float], float]:
    """(seconds, timings, unet_seconds) of a checkpoint's or a summary's record."""
    timings = state.get("timings") or {}
    if not isinstance(timings, dict):
        raise TypeError(f"timings must be an object, got {timings!r}")
    return (float(state.get("seconds") or 0.0), {str(k): float(v) for k, v in timings.items()},
            float(state.get("unet_seconds") or 0.0))


def _finished_times(rd: RunDir, iteration: int, labels: int) -> tuple[float, dict[str, float], float] | None:
    """The times in ``summary.json`` when it records the state the checkpoint holds (a finished run)."""
    try:
        summary = json.loads(rd.summary.read_text())
        if summary.get("iterations") == iteration and summary.get("labels") == labels:
            return _times(summary)
    except (OSError, ValueError, TypeError, AttributeError):
        pass  # no summary, or an unreadable one: the checkpoint's times
    return None
