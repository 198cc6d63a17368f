"""Which run folders a report uses: reading each one, naming the ones left out, and one run per seed.

A report must never average two runs of the same seed (re-running a command makes ``hand-hero-s0-2`` beside
``hand-hero-s0``), nor drop a folder without a word. :func:`select_runs` returns the runs to use and one
line per folder left out or used with a caveat; ``report.write_report`` prints those lines and records them
in ``tables.md``.

Rules (what a researcher re-running a command expects):

* a path that does not exist is an error (a typo);
* a file, a folder without ``config.json`` (the report's own folder, ``failed/``), a folder with an
  unreadable ``config.json`` or ``evals.jsonl``, or one without evaluations yet is **skipped**, named, with
  the reason;
* a run without ``summary.json`` (stopped, or still running) is **used** up to its last evaluation and named
  ("incomplete");
* a run with ``precision = "bf16"`` is reported under its own method name (``hero [bf16]``,
  :func:`method_label`), never averaged or paired with fp32 runs;
* two or more folders holding the same ``(task, model, profile, method, seed)`` are **duplicates**: when
  their settings agree apart from the label budget (a re-run), the one that got furthest is used (complete
  before incomplete, then most labels evaluated, then the newest ``config.json``) and the others are named as
  left out; when their settings differ in anything else, the report refuses (one line naming both folders and
  the first differing setting): they are different experiments under one method name.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from herobench.errors import HerobenchError
from herobench.harness.runlog import RunDir, iter_jsonl_lines

PANEL_KEYS = ["task", "model", "profile", "prompt_set"]  # one plot panel / table column each
CURVE_KEYS = [*PANEL_KEYS, "method"]  # one curve each (its seeds averaged)
SEED_KEYS = ("task", "model", "profile", "method", "seed")  # one run per such key in a report


def method_label(method: str, precision: str) -> str:
    """The name a run's method has in a report: ``hero`` for fp32 (the default), ``hero [bf16]`` for the
    opt-in bf16 fast path. Its images differ from fp32's, so its runs are their own determinism class: their
    own rows, curves and seeds, and paired only with runs of the same precision (``eval_key``)."""
    return method if precision == "fp32" else f"{method} [{precision}]"


def same_class(reference: str, method: str) -> str:
    """The reference method (``hero``, ``pretrained``) of ``method``'s determinism class: ``hero [bf16]``
    for ``ddpo [bf16]``, ``hero`` for ``ddpo``."""
    i = method.find(" [")
    return reference if i < 0 else reference + method[i:]


def read_run(path: Path) -> tuple[dict, list[tuple[int, dict]]]:
    """A run's identity (``run``, ``task``, ``method``, ``seed``, ... and its raw ``settings``) and its
    ``evals.jsonl`` lines as ``(line number, record)``.

    Raises:
        HerobenchError: not a run folder, an unreadable config or a malformed evaluation line (named).
    """
    run = RunDir(path)
    if not run.path.is_dir():
        raise HerobenchError(f"not a run folder: {path} (no such folder)")
    if not run.is_run():
        raise HerobenchError(f"not a run folder: {path} (no config.json)")
    try:
        config = json.loads(run.config_json.read_text(encoding="utf-8"))
        settings = config["settings"]
        precision = str(settings.get("precision", "fp32"))  # (runs recorded before issue 30 ran fp32)
        base = {
            "run": run.path.name,
            "path": str(run.path),
            "task": str(settings["task"]),
            "method": method_label(str(settings["method"]), precision),
            "precision": precision,
            "seed": int(settings.get("seed", 0)),
            "model": str(settings.get("model", "glyphworld")),
            # the runner records the profile it resolved (a task without "default" uses its first one)
            "profile": str(
                (config.get("oracle") or {}).get("profile")
                or (settings.get("rater") or {}).get("profile", "default")
            ),
            "budget_labels": settings.get("budget_labels"),
            # the kernels torch ran (AVX2, AVX512, ...): runs on different ones round differently, so their
            # images on the same noises may differ (report.cpu_notes measures by how much)
            "cpu_capability": str((config.get("environment") or {}).get("cpu_capability") or "unknown"),
            # what makes two runs' evaluation images the same images (paired comparisons)
            "eval_key": json.dumps([settings.get("eval"), config.get("sampler"), str(config.get("model")),
                                    bool((config.get("method") or {}).get("custom_eval_noise")), precision],
                                   sort_keys=True, default=str),
            "settings": dict(settings),
        }
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise HerobenchError(f"{run.config_json}: not a valid run config ({type(e).__name__}: {e})") from None
    if not run.evals.exists():
        return base, []
    lines, _torn = iter_jsonl_lines(run.evals)
    for number, ev in lines:
        _check_eval_line(run.evals, number, ev)
    return base, lines


def _check_eval_line(evals: Path, number: int, ev: object) -> None:
    if not isinstance(ev, dict) or "labels" not in ev or "success_rate" not in ev:
        raise HerobenchError(f"{evals}: line {number} lacks 'labels' or 'success_rate'")
    labels, rate = ev["labels"], ev["success_rate"]
    # (JSON allows "NaN", strings and floats where the runner writes a label count and a rate)
    if isinstance(labels, bool) or not isinstance(labels, int) or not 0 <= labels <= 2**53:
        raise HerobenchError(f"{evals}: line {number}: 'labels' must be a label count, got {labels!r:.40}")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise HerobenchError(f"{evals}: line {number}: 'success_rate' must be a number in [0, 1], "
                             f"got {rate!r:.40}")


@dataclass
class Selection:
    """The runs a report uses (``parsed``: what :func:`read_run` returns, per run) and ``notes``: one line
    per folder skipped, used with a caveat, or left out as a duplicate."""

    parsed: list[tuple[dict, list[tuple[int, dict]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _progress(base: dict, lines: list) -> tuple[bool, int]:
    """(complete: has ``summary.json``, the most labels evaluated)."""
    complete = RunDir(Path(base["path"])).summary.is_file()
    return complete, max((int(ev["labels"]) for _n, ev in lines), default=-1)


def _describe(base: dict, lines: list) -> str:
    complete, labels = _progress(base, lines)
    budget = base.get("budget_labels")
    state = "complete" if complete else "incomplete"
    return f"{base['path']} ({state}, {labels} of {budget} labels)"


def _first_difference(a: dict, b: dict, where: str = "") -> str | None:
    """The first dotted setting whose value differs between two settings tables (``budget_labels``
    ignored: a re-run with another budget is the same experiment), or None."""
    for key in sorted(set(a) | set(b)):
        dotted = f"{where}{key}"
        if dotted == "budget_labels":
            continue
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            found = _first_difference(x, y, f"{dotted}.")
            if found:
                return found
        elif x != y:
            return f"{dotted}: {x!r:.40} vs {y!r:.40}"
    return None


def _pick(group: list[tuple[dict, list]]) -> tuple[tuple[dict, list], list[tuple[dict, list]]]:
    """The run of a duplicate group to use (complete, most labels, newest) and the others.

    Raises:
        HerobenchError: two runs of the group differ in a setting other than the budget.
    """
    first = group[0][0]
    for base, _lines in group[1:]:
        diff = _first_difference(first["settings"], base["settings"])
        if diff:
            raise HerobenchError(
                f"{first['path']} and {base['path']} are both {first['task']}/{first['method']} seed "
                f"{first['seed']} but their settings differ ({diff}): report them separately")

    def rank(item: tuple[dict, list]) -> tuple:
        complete, labels = _progress(*item)
        return complete, labels, RunDir(Path(item[0]["path"])).config_json.stat().st_mtime_ns

    ordered = sorted(group, key=rank, reverse=True)
    return ordered[0], ordered[1:]


def _read_or_skip(path: Path, out_dir: Path | None, sel: Selection) -> tuple[dict, list] | None:
    if not path.exists():
        raise HerobenchError(f"not a run folder: {path} (no such folder)")
    if out_dir is not None and path.resolve() == out_dir.resolve():
        sel.notes.append(f"skipped {path}: the report's own output folder")
        return None
    if not path.is_dir():
        sel.notes.append(f"skipped {path}: a file, not a run folder")
        return None
    try:
        base, lines = read_run(path)
    except HerobenchError as e:
        reason = "not a run folder (no config.json)" if not RunDir(path).is_run() else str(e)
        sel.notes.append(f"skipped {path}: {reason}")
        return None
    if not lines:
        sel.notes.append(f"skipped {path}: no evaluations yet (no evals.jsonl lines)")
        return None
    return base, lines


def select_runs(run_dirs: Iterable[str | Path], out_dir: str | Path | None = None) -> Selection:
    """Read every folder of ``run_dirs`` and keep one run per seed (the rules in the module docstring).

    Raises:
        HerobenchError: a path does not exist, a folder is given twice, duplicate seeds with different
            settings, or no folder holds a readable run with evaluations.
    """
    sel, seen, kept = Selection(), {}, []
    run_dirs = [Path(d) for d in run_dirs]
    for path in run_dirs:
        key = path.resolve()
        if key in seen:
            raise HerobenchError(f"run folder given twice: {seen[key]} and {path} (each run counts once)")
        seen[key] = str(path)
        item = _read_or_skip(path, None if out_dir is None else Path(out_dir), sel)
        if item is not None:
            kept.append(item)
    groups: dict[tuple, list] = {}
    for item in kept:
        groups.setdefault(tuple(item[0][k] for k in SEED_KEYS), []).append(item)
    for key, group in groups.items():
        use, others = _pick(group) if len(group) > 1 else (group[0], [])
        if others:
            sel.notes.append(
                f"duplicate seed: {'/'.join(map(str, key[:4]))} seed {key[4]} is in {len(group)} run folders; "
                f"using {_describe(*use)}; left out {', '.join(_describe(*o) for o in others)}")
        if not _progress(*use)[0]:
            sel.notes.append(f"incomplete: {_describe(*use)} has no summary.json (stopped or still "
                             "running); its evaluations so far are used")
        sel.parsed.append(use)
    if not sel.parsed:
        raise HerobenchError(f"none of the {len(run_dirs)} given folder(s) holds a run with evaluations"
                             + (f" ({sel.notes[0]})" if sel.notes else ""))
    return sel


RECORDS_DIR = "records"
RECORD_FILES = ("config.json", "evals.jsonl", "summary.json")  # all a report reads of a run


def copy_record(src: Path, dest: Path) -> None:
    """``RECORD_FILES`` of run folder ``src`` into ``dest`` (made), each file replaced atomically; a file
    ``src`` lacks is removed from ``dest`` (a record of a finished run, replaced by an unfinished one)."""
    dest.mkdir(parents=True, exist_ok=True)
    for file in RECORD_FILES:
        if (src / file).is_file():
            tmp = dest / f".{file}.tmp"
            shutil.copy2(src / file, tmp)
            os.replace(tmp, dest / file)
        elif (dest / file).exists():
            (dest / file).unlink()


def keep_records(parsed: Sequence[tuple[dict, list]], out: Path) -> list[str]:
    """Copy what a report reads of each run it uses (``RECORD_FILES``; no checkpoints, labels or images)
    to ``<out>/records/<run folder name>/``, so a committed results folder can be reported again, and
    extended with new runs, on a machine where the run folders are gone:
    ``herobench report <out>/records/* runs/new-* --out <out> --keep-records``.

    A record that is itself one of the inputs is left as it is; a record of a run not in this report is
    kept, and named in the returned lines (nothing recorded is deleted).

    Raises:
        HerobenchError: two runs of the report have the same folder name (their records would collide).
    """
    folder = out / RECORDS_DIR
    names: dict[str, str] = {}
    for base, _lines in parsed:
        name, src = base["run"], Path(base["path"])
        if name in names:
            raise HerobenchError(f"--keep-records: {names[name]} and {src} have the same folder name "
                                 f"'{name}'; rename one of them")
        names[name] = str(src)
        dest = folder / name
        if dest.exists() and dest.resolve() == src.resolve():
            continue
        copy_record(src, dest)
    stale = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in names) if folder.is_dir() else []
    return [f"kept {folder / s}: a record of a run not in this report (not deleted)" for s in stale]
