"""Tables and plots derived from run folders (never the other way round).

Each run folder contributes its ``config.json`` (``{"settings": {"task", "method", "seed", ...}}``) and its
``evals.jsonl`` lines (``{"labels", "iteration", "prompt_set", "success_rate", "lo", "hi", "n", ...}``).
Curves are grouped by ``(task, model, profile, prompt_set, method)``: results on different backends, for
different rater profiles (mountain's green/snowy raters) or prompt sets are never averaged together.
Which folders are used (one run per seed; skipped folders named) is ``report_runs.py``; the plots are
``plots.py``. Tables are written at the label budgets the runs recorded, never at a fixed count.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from herobench.errors import HerobenchError, UnknownNameError
from herobench.harness.plots import curves_figure, plot_curves  # noqa: F401 (re-exported)
from herobench.harness.report_runs import (  # noqa: F401
    CURVE_KEYS,
    PANEL_KEYS,
    Selection,
    keep_records,
    read_run,
    same_class,
    select_runs,
)
from herobench.harness.report_targets import (  # noqa: F401 (re-exported)
    TARGET_COLUMNS,
    first_reach,
    labels_ratio,
    labels_to_target,
)
from herobench.stats import binom_two_sided, paired

RUN_COLUMNS = [
    "run", "path", "task", "method", "precision", "seed", "model", "profile", "budget_labels",
    "labels", "iteration", "prompt_set", "success_rate", "lo", "hi", "n_images",
    "unreadable_rate", "mean_score", "pixel_diversity", "success_diversity", "attr_entropy_mean",
    "cpu_capability",
]  # fmt: skip
GUARD_COLUMNS = ("unreadable_rate", "pixel_diversity", "success_diversity", "attr_entropy_mean")  # issue 25, 3
PROMPT_COLUMNS = [
    "run", "path", "task", "method", "seed", "model", "profile",
    "labels", "prompt_set", "prompt", "n", "successes", "unreadable",
]  # fmt: skip


_read_run = read_run  # (the name the tests and older callers use)


Parsed = list[tuple[dict, list[tuple[int, dict]]]]  # what _read_run returns, per run


def _runs_frame(parsed: Parsed) -> pd.DataFrame:
    rows = [
        {
            **base,
            "labels": int(ev["labels"]),
            "iteration": ev.get("iteration"),
            "prompt_set": str(ev.get("prompt_set", "eval")),
            "success_rate": float(ev["success_rate"]),
            "lo": ev.get("lo", np.nan),
            "hi": ev.get("hi", np.nan),
            "n_images": ev.get("n", np.nan),
            "unreadable_rate": ev.get("unreadable_rate", np.nan),
            "mean_score": ev.get("mean_score", np.nan),
            "pixel_diversity": ev.get("pixel_diversity", np.nan),  # NaN for rows written before the guards
            "success_diversity": ev.get("success_diversity", np.nan),
            "attr_entropy_mean": ev.get("attr_entropy_mean", np.nan),
        }
        for base, lines in parsed
        for _number, ev in lines
    ]
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for col in ("lo", "hi", "n_images", "unreadable_rate", "mean_score", "success_rate", "pixel_diversity",
                "success_diversity", "attr_entropy_mean"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for col in ("seed", "labels"):
        df[col] = df[col].astype(int)
    return df.sort_values(["task", "method", "seed", "prompt_set", "labels"], ignore_index=True)


def _prompts_frame(parsed: Parsed) -> pd.DataFrame:
    rows = []
    for base, lines in parsed:
        for number, ev in lines:
            per_prompt = ev.get("per_prompt")
            if per_prompt is None:
                continue
            try:
                for prompt, c in per_prompt.items():
                    rows.append({**{k: base[k] for k in PROMPT_COLUMNS[:7]}, "labels": int(ev["labels"]),
                                 "prompt_set": str(ev.get("prompt_set", "eval")), "prompt": str(prompt),
                                 "n": int(c["n"]), "successes": int(c["successes"]),
                                 "unreadable": int(c["unreadable"])})
            except (AttributeError, KeyError, TypeError, ValueError) as e:
                raise HerobenchError(
                    f"{base['path']}/evals.jsonl: line {number} has a malformed 'per_prompt' "
                    f"({type(e).__name__}: {e})"
                ) from None
    df = pd.DataFrame(rows, columns=PROMPT_COLUMNS)
    return df.sort_values(["task", "method", "seed", "prompt_set", "labels"], ignore_index=True, kind="stable")


PAIRED_COLUMNS = [
    "task", "model", "profile", "prompt_set", "method", "seed", "labels", "reference", "n",
    "success_reference", "success", "gained", "lost", "p_mcnemar", "same_cpu",
]  # fmt: skip


def _per_image(parsed: Parsed) -> tuple[dict[tuple, list[bool]], dict[tuple, str]]:
    """``(eval_key, panel keys..., method, seed, labels) -> successes`` of every row that recorded them, and
    the same keys' run's CPU capability."""
    from herobench.harness.evaluate import successes_of

    out, cpu = {}, {}
    for base, lines in parsed:
        for _number, ev in lines:
            bits = successes_of(ev)
            if bits is not None:
                key = (base["eval_key"], base["task"], base["model"], base["profile"],
                       str(ev.get("prompt_set", "eval")), base["method"], base["seed"], int(ev["labels"]))
                out[key], cpu[key] = bits, base.get("cpu_capability", "unknown")
    return out, cpu


def paired_frame(parsed: Parsed) -> pd.DataFrame:
    """Per-image comparisons of every evaluation point on the same images (same evaluation settings,
    sampler, model and precision; runs whose method draws its own evaluation noise only against themselves):

    * ``reference = "start"``: against the run's own evaluation at 0 labels (the untrained model);
    * ``"pretrained"``: against the ``pretrained`` method's evaluation (any seed: its images are the same);
    * ``"hero"``: against HERO's run of the same seed at the same label count.

    ``gained`` = bad in the reference and good here, ``lost`` the reverse, ``p_mcnemar`` McNemar's exact
    two-sided p-value. Also one ``seed = -1`` row per (method, labels, reference) pooling the discordant
    counts over seeds (the Mantel–Haenszel test for matched pairs, each seed a stratum)."""
    images, cpu = _per_image(parsed)
    pretrained = {}
    for key in images:
        if key[5] == same_class("pretrained", key[5]):
            pretrained.setdefault((*key[:5],), key)
    rows = []
    for key, bits in sorted(images.items(), key=lambda kv: kv[0][1:]):
        eval_key, task, model, profile, prompt_set, method, seed, labels = key
        panel = (eval_key, task, model, profile, prompt_set)  # (eval_key holds the precision: one class)
        hero = same_class("hero", method)
        refs = {"start": (*panel, method, seed, 0), "pretrained": pretrained.get(panel),
                "hero": (*panel, hero, seed, labels)}
        if labels == 0 or method == same_class("pretrained", method):
            continue
        for name, ref_key in refs.items():
            ref = images.get(ref_key) if ref_key is not None else None
            if ref is None or len(ref) != len(bits) or (name == "hero" and method == hero):
                continue
            r = paired(ref, bits)
            rows.append({"task": task, "model": model, "profile": profile, "prompt_set": prompt_set,
                         "method": method, "seed": seed, "labels": labels, "reference": name, "n": r.n,
                         "success_reference": r.success_a, "success": r.success_b, "gained": r.gained,
                         "lost": r.lost, "p_mcnemar": r.p, "same_cpu": cpu[ref_key] == cpu[key]})
    df = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    if df.empty:
        return df
    group = ["task", "model", "profile", "prompt_set", "method", "labels", "reference"]
    pooled = []
    for keys, g in df.groupby(group, sort=True):
        if len(g) < 2:
            continue
        gained, lost = int(g["gained"].sum()), int(g["lost"].sum())
        pooled.append({**dict(zip(group, keys)), "seed": -1, "n": int(g["n"].sum()),
                       "success_reference": float(g["success_reference"].mean()),
                       "success": float(g["success"].mean()), "gained": gained, "lost": lost,
                       "p_mcnemar": binom_two_sided(gained, gained + lost),
                       "same_cpu": bool(g["same_cpu"].all())})
    df = pd.concat([df, pd.DataFrame(pooled, columns=PAIRED_COLUMNS)], ignore_index=True)
    return df.sort_values([*group[:5], "reference", "labels", "seed"], ignore_index=True)


def cpu_notes(parsed: Parsed) -> list[str]:
    """One line per evaluation panel whose runs ran on different CPU capabilities (AVX2, AVX512, ...).

    The evaluation at 0 labels of every method that learns from zero-initialised LoRA weights, and of
    ``pretrained``, is the untrained model on the shared evaluation noises: the same images up to rounding.
    On one capability they agree image for image (the line says whether they did); across two, the images
    where they disagree measure the rounding noise that every cross-capability pair carries (``same_cpu``
    false in ``paired.csv``, ‡ in ``tables.md``). Methods that spend no labels but change the images
    (``enhanced``) are left out."""
    images, cpu = _per_image(parsed)
    starts: dict[tuple, list[tuple[str, list[bool]]]] = {}
    for key, bits in images.items():
        method = key[5]
        if key[7] == 0 and (method == same_class("pretrained", method) or _method_trains(method)):
            starts.setdefault((*key[:5],), []).append((cpu[key], bits))
    lines = []
    for panel, runs in sorted(starts.items(), key=lambda kv: kv[0][1:]):
        cpus = sorted({c for c, _ in runs})
        if len(cpus) < 2:
            continue
        tally = {True: [0, 0], False: [0, 0]}  # same capability? -> [differing images, image pairs]
        for i, (cpu_a, a) in enumerate(runs):
            for cpu_b, b in runs[i + 1:]:
                if len(a) == len(b):
                    tally[cpu_a == cpu_b][0] += sum(x != y for x, y in zip(a, b))
                    tally[cpu_a == cpu_b][1] += len(a)
        _eval_key, task, _model, profile, prompt_set = panel
        name = task if profile == "default" else f"{task} ({profile})"
        (d, n), (dw, nw) = tally[False], tally[True]
        lines.append(f"{name}, {prompt_set} prompts: runs on {' and '.join(cpus)}. The untrained model's "
                     f"evaluations (every run's at 0 labels) disagree across capabilities on {d} of {n} image "
                     f"pairs ({d / max(n, 1):.1%}), on one capability on {dw} of {nw}.")
    return lines


def paired_table(paired_df: pd.DataFrame) -> str:
    """Markdown: at each method's last label point, against the untrained model (its own start) and HERO,
    images gained/lost summed over seeds and the pooled McNemar p-value."""
    if paired_df.empty:
        return "(no per-image verdicts recorded: runs written before herobench recorded them)"
    lines = ["| task | prompts | method | labels | seeds | vs untrained: +/− (p) | vs HERO: +/− (p) |",
             "|---|---|---|---|---|---|---|"]
    per_seed = paired_df[paired_df["seed"] >= 0]
    for (task, profile, prompt_set, method), g in per_seed.groupby(["task", "profile", "prompt_set", "method"]):
        at = int(g["labels"].max())
        cells = []
        for ref in ("start", "hero"):
            h = g[(g["labels"] == at) & (g["reference"] == ref)]
            if h.empty:
                cells.append("—")
                continue
            gained, lost = int(h["gained"].sum()), int(h["lost"].sum())
            mark = "" if bool(h["same_cpu"].all()) else " ‡"
            cells.append(f"+{gained}/−{lost} (p={binom_two_sided(gained, gained + lost):.2g}){mark}")
        name = task if profile == "default" else f"{task} ({profile})"
        seeds = g[(g["labels"] == at)]["seed"].nunique()
        lines.append(f"| {name} | {prompt_set} | {method} | {at} | {seeds} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


AGGREGATE_COLUMNS = [
    "model", "prompt_set", "labels", "method", "tasks", "runs", "iqm", "iqm_lo", "iqm_hi",
    "reference", "p_improvement", "p_improvement_lo", "p_improvement_hi",
]  # fmt: skip


def aggregate_frame(df: pd.DataFrame, at_labels: int, references: Sequence[str] = ("pretrained", "hero"),
                    reps: int = 2000) -> pd.DataFrame:
    """Seed aggregates at ``at_labels`` labels (rliable's, see ``herobench/stats.py``), per model and prompt
    set: each method's IQM of success over its runs of every task, and its probability of improvement over
    each reference method on the tasks both ran, each with a stratified-bootstrap 95 % interval (runs
    resampled within each task; seeded)."""
    from herobench.stats import iqm, prob_improvement, stratified_bootstrap_ci

    vals = value_at(df, at_labels)
    rows = []
    for (model, prompt_set), g in vals.groupby(["model", "prompt_set"], sort=True):
        g = g.assign(column=[t if p == "default" else f"{t} ({p})" for t, p in zip(g["task"], g["profile"])])
        by_method = {m: {c: h["success_rate"].tolist() for c, h in mg.groupby("column")}
                     for m, mg in g.groupby("method")}
        for method, tasks in sorted(by_method.items()):
            scores = list(tasks.values())
            lo, hi = stratified_bootstrap_ci(lambda x: iqm([s for t in x for s in t]), [scores], reps=reps)
            base = {"model": model, "prompt_set": prompt_set, "labels": at_labels, "method": method,
                    "tasks": len(tasks), "runs": sum(map(len, scores)),
                    "iqm": iqm([s for t in scores for s in t]), "iqm_lo": lo, "iqm_hi": hi}
            rows.append(base | {"reference": "", "p_improvement": np.nan, "p_improvement_lo": np.nan,
                                "p_improvement_hi": np.nan})
            for ref in references:
                ref = same_class(ref, method)  # a bf16 run against bf16 references only
                common = sorted(set(tasks) & set(by_method.get(ref, {}))) if ref != method else []
                if not common:
                    continue
                xs = [tasks[c] for c in common]
                ys = [by_method[ref][c] for c in common]
                plo, phi = stratified_bootstrap_ci(prob_improvement, [xs, ys], reps=reps)
                rows.append(base | {"reference": ref, "p_improvement": prob_improvement(xs, ys),
                                    "p_improvement_lo": plo, "p_improvement_hi": phi})
    return pd.DataFrame(rows, columns=AGGREGATE_COLUMNS)


def load_runs(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """A tidy table: one row per evaluation of each run (columns :data:`RUN_COLUMNS`).

    Raises:
        HerobenchError: a folder is not a run folder (named), or a malformed line in its files.
    """
    return _runs_frame([_read_run(Path(d)) for d in run_dirs])


def load_prompt_counts(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per prompt of each evaluation (columns :data:`PROMPT_COLUMNS`): the images shown that
    prompt, their successes and unreadable verdicts, from each ``evals.jsonl`` line's ``per_prompt``
    (older runs, written before it was recorded, contribute nothing).

    Raises:
        HerobenchError: a folder is not a run folder, or a ``per_prompt`` entry is malformed (named).
    """
    return _prompts_frame([_read_run(Path(d)) for d in run_dirs])


def curve_table(df: pd.DataFrame) -> pd.DataFrame:
    """Success rate per ``(task, model, profile, prompt_set, method, labels)`` across seeds:
    ``mean``, ``std`` (ddof 1; NaN with one seed), ``min``, ``max`` and ``n_runs``."""
    if df.empty:
        return pd.DataFrame(columns=[*CURVE_KEYS, "labels", "mean", "std", "min", "max", "n_runs"])
    out = (
        df.groupby([*CURVE_KEYS, "labels"], sort=True)["success_rate"]
        .agg(mean="mean", std="std", min="min", max="max", n_runs="count")
        .reset_index()
    )
    return out


# row order of the paper-style tables (HERO's Table 2 lists baselines first); other methods follow by name
TABLE_METHOD_ORDER = ["pretrained", "enhanced", "dreambooth", "ddpo", "d3po", "hero-no-repr", "hero-no-fgg", "hero"]


@functools.cache
def _method_trains(name: str) -> bool:
    """Whether a registered method spends labels (pretrained/enhanced do not); unknown names are assumed to."""
    from herobench.methods import METHODS

    try:
        return bool(METHODS.get(name)().trains)
    except UnknownNameError:  # a method not registered in this version of herobench
        return True


def _own_budget(run: pd.DataFrame) -> float | None:
    """A run's own label budget: the recorded one for a method that spends labels (its last evaluated
    label count when none was recorded); None for a run that spends none (a baseline, or budget 0)."""
    first = run.iloc[0]
    if not _method_trains(str(first["method"])):
        return None
    budget = pd.to_numeric(first["budget_labels"], errors="coerce")
    budget = float(budget) if np.isfinite(budget) else float(run["labels"].max())
    return budget if budget > 0 else None


VALUE_COLUMNS = [*CURVE_KEYS, "seed", "labels", "success_rate", "short", "budget", "last_labels"]


def value_at(df: pd.DataFrame, at_labels: int) -> pd.DataFrame:
    """Per run and prompt set: the success rate at the last evaluation with at most ``at_labels`` labels.

    A run that spends labels and finished a budget below ``at_labels`` is left out (it belongs to its own
    budget's table). ``short`` is True when the run stopped before its own recorded budget and before
    ``at_labels`` (killed, or still running): its last point is used. A run that spends no labels is shown
    at its single evaluation and is never short. ``budget`` (NaN for those) and ``last_labels`` (its last
    evaluated label count) say why."""
    rows = []
    for (_path, prompt_set), run in df.groupby(["path", "prompt_set"], sort=True):
        upto = run[run["labels"] <= at_labels].sort_values("labels")
        budget, last_labels = _own_budget(run), int(run["labels"].max())
        if upto.empty or (budget is not None and budget < at_labels and last_labels >= budget):
            continue
        last = upto.iloc[-1]
        short = budget is not None and last_labels < min(budget, at_labels)
        rows.append({**{k: last[k] for k in (*CURVE_KEYS, "seed")}, "prompt_set": prompt_set,
                     "labels": int(last["labels"]), "success_rate": float(last["success_rate"]),
                     "short": short, "budget": np.nan if budget is None else budget, "last_labels": last_labels})
    return pd.DataFrame(rows, columns=VALUE_COLUMNS)


def _columns(vals: pd.DataFrame) -> pd.Series:
    column = pd.Series([t if p == "default" else f"{t} ({p})" for t, p in zip(vals["task"], vals["profile"])],
                       index=vals.index)
    return column + " [" + vals["model"] + "]" if vals["model"].nunique() > 1 else column


def paper_table(df: pd.DataFrame, at_labels: int, prompt_set: str = "eval") -> str:
    """HERO's Table-2 layout in markdown: one row per method, one column per task (and rater profile),
    each cell the mean (std over seeds) success rate at ``at_labels`` labels on ``prompt_set``.

    A cell marked † includes a seed that stopped before its own budget (its last point is used; a footnote
    under the table names each); a method that spends no labels is shown at its single evaluation; runs
    that finished a smaller budget are not in this table."""
    vals = value_at(df[df["prompt_set"] == prompt_set], at_labels)
    if vals.empty:
        return f"(no evaluations on the '{prompt_set}' prompts at or below {at_labels} labels)"
    vals["column"] = _columns(vals)
    columns = sorted(vals["column"].unique())
    known = [m for m in TABLE_METHOD_ORDER if m in set(vals["method"])]
    methods = known + sorted(set(vals["method"]) - set(known))
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method in methods:
        cells = []
        for col in columns:
            g = vals[(vals["method"] == method) & (vals["column"] == col)]
            if g.empty:
                cells.append("—")
                continue
            r = g["success_rate"].to_numpy(float)
            std = f" ({r.std(ddof=1):.3f})" if len(r) > 1 else ""
            cells.append(f"{r.mean():.3f}{std}{' †' if g['short'].any() else ''} n={len(r)}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    for _i, s in vals[vals["short"]].sort_values(["column", "method", "seed"]).iterrows():
        lines.append(f"\n† {s['column']} {s['method']} seed {s['seed']}: stopped at {s['last_labels']} of its "
                     f"{int(s['budget'])} labels (value at {s['labels']})")
    return "\n".join(lines)


def guard_table(df: pd.DataFrame, prompt_set: str = "eval") -> str:
    """Per task and method, at each run's last evaluation on ``prompt_set``: success beside the guard
    metrics (unreadable rate, pixel diversity within a prompt, the same among the successful images, mean
    entropy in bits of the oracle's parsed attributes), each the mean over seeds. A method that gains success
    by collapsing its images shows a falling diversity or entropy in the same row; ``—`` where the runs
    predate a guard."""
    d = df[df["prompt_set"] == prompt_set]
    if d.empty:
        return f"(no evaluations on the '{prompt_set}' prompts)"
    last = d.sort_values("labels").groupby("path", sort=True).tail(1)
    lines = ["| task | method | labels | success | unreadable | pixel diversity | among successes "
             "| attribute entropy (bits) |", "|---|---|---|---|---|---|---|---|"]
    for (task, method), g in last.groupby(["task", "method"], sort=True):
        cells = [f"{g[c].mean():.3f}" if g[c].notna().any() else "—" for c in ("success_rate", *GUARD_COLUMNS)]
        lines.append(f"| {task} | {method} | {int(g['labels'].max())} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_label_points(df: pd.DataFrame) -> list[int]:
    """The label counts the paper-style tables are written at, from the data: every budget recorded by a
    run that spends labels (its last evaluated label count when it recorded none); the largest evaluated
    label count when no run spends labels (baselines only)."""
    points = set()
    for _path, run in df.groupby("path", sort=True):
        budget = _own_budget(run)
        if budget is not None:
            points.add(int(budget))
    return sorted(points) or ([int(df["labels"].max())] if len(df) else [])


def write_tables(df: pd.DataFrame, path: str | Path, at_labels: Sequence[int] | None = None,
                 paired_df: pd.DataFrame | None = None, notes: Sequence[str] = (),
                 cpu: Sequence[str] = ()) -> Path:
    """``tables.md``: :func:`paper_table` at each label count (default :func:`table_label_points`), then
    :func:`paired_table` when ``paired_df`` is given, then ``cpu`` (:func:`cpu_notes`), then ``notes``
    (the run folders skipped, incomplete or left out as duplicates,
    :func:`herobench.harness.report_runs.select_runs`)."""
    parts = ["# Success rate at a label budget (HERO Table-2 layout)", "",
             "Mean (std over seeds) success on each task's evaluation prompts; n = runs (seeds). † = a seed "
             "stopped before its own budget: its last point is used (named under the table). Methods that "
             "spend no labels are shown at their single evaluation; runs that finished a smaller budget are "
             "only in that budget's table.", ""]
    for at in at_labels or table_label_points(df):
        parts += [f"## At {at:,} labels", "", paper_table(df, at), ""]
    parts += ["## Guards: is success bought by collapse?", "", guard_table(df), ""]
    if paired_df is not None:
        parts += ["## Paired, image by image, at each method's last point", "",
                  "Images bad→good (+) and good→bad (−) on the same evaluation noises, summed over seeds, "
                  "against the run's own untrained start and against HERO (same seed); p = McNemar's exact "
                  "test on the pooled discordant images (paired.csv has every seed and point). ‡ = some "
                  "pairs ran on different CPU capabilities (below).", "",
                  paired_table(paired_df), ""]
    if cpu:
        parts += ["## CPU capabilities", "", "Runs on different CPU kernels round differently, so on the same "
                  "noises their images may differ before any training; how much:", "",
                  *(f"- {n}" for n in cpu), ""]
    if notes:
        parts += ["## Run folders", "", *(f"- {n}" for n in notes), ""]
    path = Path(path)
    path.write_text("\n".join(parts))
    return path


def default_out_dir(run_dirs: Sequence[str | Path]) -> Path:
    """``<runs dir>/report``: beside the runs (the folder holding them all), never the current folder."""
    parents = [str(Path(d).resolve().parent) for d in run_dirs]
    return Path(os.path.commonpath(parents)) / "report"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def write_report(
    run_dirs: Iterable[str | Path], out_dir: str | Path | None = None, targets: Sequence[float] = (),
    echo: Callable[[str], None] = _stderr, keep: bool = False,
) -> dict[str, Path]:
    """Write ``runs.csv`` (tidy), ``curves.csv``, ``curves_<task>.png`` per task, ``tables.md`` (the
    paper-style tables), ``paired.csv`` (:func:`paired_frame`, when the runs recorded per-image verdicts),
    ``aggregates.csv`` (:func:`aggregate_frame`: IQM and probability of improvement over seeds),
    ``prompts.csv`` (successes per prompt, when the runs recorded them) and
    ``labels_to_target.csv`` and ``labels_ratio.csv`` (every method's labels over HERO's, :func:`labels_ratio`)
    when ``targets`` are given; ``runs.parquet`` too if pyarrow is installed.

    ``out_dir`` None: :func:`default_out_dir`. Folders are chosen by
    :func:`herobench.harness.report_runs.select_runs` (one run per seed, skipped folders named); each of its
    lines goes to ``echo`` and into ``tables.md``. ``keep``: also copy what the report read of each run
    to ``<out>/records/`` (:func:`herobench.harness.report_runs.keep_records`).

    Returns:
        name -> path of every file written.
    """
    run_dirs = list(run_dirs)
    for t in targets:
        if not 0.0 < t <= 1.0:  # (also refuses NaN)
            raise HerobenchError(f"target success rate must be in (0, 1], got {t}")
    if not run_dirs:
        raise HerobenchError("no run folders given")
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dirs)
    if out.exists() and not out.is_dir():
        raise HerobenchError(f"report folder {out} exists and is not a folder")
    selection = select_runs(run_dirs, out)
    for note in selection.notes:
        echo(note)
    out.mkdir(parents=True, exist_ok=True)
    if keep:
        for note in keep_records(selection.parsed, out):
            echo(note)
    return _write_files(selection, out, targets)


def _write_files(selection: Selection, out: Path, targets: Sequence[float]) -> dict[str, Path]:
    parsed = selection.parsed  # each run's files read once, for every table
    df = _runs_frame(parsed)
    written: dict[str, Path] = {"runs.csv": out / "runs.csv", "curves.csv": out / "curves.csv"}
    df.to_csv(written["runs.csv"], index=False)
    if importlib.util.find_spec("pyarrow") is not None:
        written["runs.parquet"] = out / "runs.parquet"
        df.to_parquet(written["runs.parquet"], index=False)
    curve_table(df).to_csv(written["curves.csv"], index=False)
    target = targets[0] if targets else None
    for task, sub in df.groupby("task", sort=True):
        name = f"curves_{task}.png"
        written[name] = plot_curves(sub, out / name, title=str(task), target=target)
    aggregates = pd.concat([aggregate_frame(df, at) for at in table_label_points(df)], ignore_index=True)
    if not aggregates.empty:
        written["aggregates.csv"] = out / "aggregates.csv"
        aggregates.to_csv(written["aggregates.csv"], index=False)
    pairs = paired_frame(parsed)
    written["tables.md"] = write_tables(df, out / "tables.md", paired_df=pairs, notes=selection.notes,
                                        cpu=cpu_notes(parsed))
    if not pairs.empty:
        written["paired.csv"] = out / "paired.csv"
        pairs.to_csv(written["paired.csv"], index=False)
    prompts = _prompts_frame(parsed)
    if not prompts.empty:
        written["prompts.csv"] = out / "prompts.csv"
        prompts.to_csv(written["prompts.csv"], index=False)
    if targets:
        written["labels_to_target.csv"] = out / "labels_to_target.csv"
        table = pd.concat([labels_to_target(df, t) for t in targets], ignore_index=True)
        table.to_csv(written["labels_to_target.csv"], index=False)
        ratios = pd.concat([labels_ratio(df, t) for t in targets], ignore_index=True)
        if not ratios.empty:
            written["labels_ratio.csv"] = out / "labels_ratio.csv"
            ratios.to_csv(written["labels_ratio.csv"], index=False)
    return written
