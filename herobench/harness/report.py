"""Tables and plots derived from run folders (never the other way round).

Each run folder contributes its ``config.json`` (``{"settings": {"task", "method", "seed", ...}}``) and its
``evals.jsonl`` lines (``{"labels", "iteration", "prompt_set", "success_rate", "lo", "hi", "n", ...}``).
Curves are grouped by ``(task, model, profile, prompt_set, method)``: results on different backends, for
different rater profiles (mountain's green/snowy raters) or prompt sets are never averaged together.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from herobench.errors import HerobenchError, UnknownNameError
from herobench.harness.runlog import RunDir, iter_jsonl_lines
from herobench.harness.stats import binom_two_sided, paired

PANEL_KEYS = ["task", "model", "profile", "prompt_set"]
CURVE_KEYS = [*PANEL_KEYS, "method"]
RUN_COLUMNS = [
    "run", "path", "task", "method", "seed", "model", "profile", "budget_labels",
    "labels", "iteration", "prompt_set", "success_rate", "lo", "hi", "n_images",
    "unreadable_rate", "mean_score",
]  # fmt: skip
PROMPT_COLUMNS = [
    "run", "path", "task", "method", "seed", "model", "profile",
    "labels", "prompt_set", "prompt", "n", "successes", "unreadable",
]  # fmt: skip


def _read_run(path: Path) -> tuple[dict, list[tuple[int, dict]]]:
    """A run's identity (``run``, ``task``, ``method``, ``seed``, ...) and its ``evals.jsonl`` lines."""
    run = RunDir(path)
    if not run.path.is_dir():
        raise HerobenchError(f"not a run folder: {path} (no such folder)")
    if not run.is_run():
        raise HerobenchError(f"not a run folder: {path} (no config.json)")
    try:
        config = json.loads(run.config_json.read_text(encoding="utf-8"))
        settings = config["settings"]
        base = {
            "run": run.path.name,
            "path": str(run.path),
            "task": str(settings["task"]),
            "method": str(settings["method"]),
            "seed": int(settings.get("seed", 0)),
            "model": str(settings.get("model", "glyphworld")),
            # the runner records the profile it resolved (a task without "default" uses its first one)
            "profile": str(
                (config.get("oracle") or {}).get("profile")
                or (settings.get("rater") or {}).get("profile", "default")
            ),
            "budget_labels": settings.get("budget_labels"),
            # what makes two runs' evaluation images the same images (paired comparisons)
            "eval_key": json.dumps([settings.get("eval"), config.get("sampler"), str(config.get("model")),
                                    bool((config.get("method") or {}).get("custom_eval_noise"))],
                                   sort_keys=True, default=str),
        }
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise HerobenchError(f"{run.config_json}: not a valid run config ({type(e).__name__}: {e})") from None
    if not run.evals.exists():
        return base, []
    lines, _torn = iter_jsonl_lines(run.evals)
    for number, ev in lines:
        if not isinstance(ev, dict) or "labels" not in ev or "success_rate" not in ev:
            raise HerobenchError(f"{run.evals}: line {number} lacks 'labels' or 'success_rate'")
        labels, rate = ev["labels"], ev["success_rate"]
        # (JSON allows "NaN", strings and floats where the runner writes a label count and a rate)
        if isinstance(labels, bool) or not isinstance(labels, int) or not 0 <= labels <= 2**53:
            raise HerobenchError(f"{run.evals}: line {number}: 'labels' must be a label count, got {labels!r:.40}")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise HerobenchError(f"{run.evals}: line {number}: 'success_rate' must be a number in [0, 1], "
                                 f"got {rate!r:.40}")
    return base, lines


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
        }
        for base, lines in parsed
        for _number, ev in lines
    ]
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for col in ("lo", "hi", "n_images", "unreadable_rate", "mean_score", "success_rate"):
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
    "success_reference", "success", "gained", "lost", "p_mcnemar",
]  # fmt: skip


def _per_image(parsed: Parsed) -> dict[tuple, list[bool]]:
    """``(eval_key, panel keys..., method, seed, labels) -> successes`` of every row that recorded them."""
    from herobench.harness.evaluate import successes_of

    out = {}
    for base, lines in parsed:
        for _number, ev in lines:
            bits = successes_of(ev)
            if bits is not None:
                key = (base["eval_key"], base["task"], base["model"], base["profile"],
                       str(ev.get("prompt_set", "eval")), base["method"], base["seed"], int(ev["labels"]))
                out[key] = bits
    return out


def paired_frame(parsed: Parsed) -> pd.DataFrame:
    """Per-image comparisons of every evaluation point on the same images (same evaluation settings,
    sampler and model; runs whose method draws its own evaluation noise only against themselves):

    * ``reference = "start"``: against the run's own evaluation at 0 labels (the untrained model);
    * ``"pretrained"``: against the ``pretrained`` method's evaluation (any seed: its images are the same);
    * ``"hero"``: against HERO's run of the same seed at the same label count.

    ``gained`` = bad in the reference and good here, ``lost`` the reverse, ``p_mcnemar`` McNemar's exact
    two-sided p-value. Also one ``seed = -1`` row per (method, labels, reference) pooling the discordant
    counts over seeds (the Mantel–Haenszel test for matched pairs, each seed a stratum)."""
    images = _per_image(parsed)
    pretrained = {}
    for key, bits in images.items():
        if key[5] == "pretrained":
            pretrained.setdefault((*key[:5],), bits)
    rows = []
    for key, bits in sorted(images.items(), key=lambda kv: kv[0][1:]):
        eval_key, task, model, profile, prompt_set, method, seed, labels = key
        panel = (eval_key, task, model, profile, prompt_set)
        refs = {"start": images.get((*panel, method, seed, 0)),
                "pretrained": pretrained.get(panel),
                "hero": images.get((*panel, "hero", seed, labels))}
        if labels == 0 or method == "pretrained":
            continue
        for name, ref in refs.items():
            if ref is None or len(ref) != len(bits) or (name == "hero" and method == "hero"):
                continue
            r = paired(ref, bits)
            rows.append({"task": task, "model": model, "profile": profile, "prompt_set": prompt_set,
                         "method": method, "seed": seed, "labels": labels, "reference": name, "n": r.n,
                         "success_reference": r.success_a, "success": r.success_b, "gained": r.gained,
                         "lost": r.lost, "p_mcnemar": r.p})
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
                       "p_mcnemar": binom_two_sided(gained, gained + lost)})
    df = pd.concat([df, pd.DataFrame(pooled, columns=PAIRED_COLUMNS)], ignore_index=True)
    return df.sort_values([*group[:5], "reference", "labels", "seed"], ignore_index=True)


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
            cells.append(f"+{gained}/−{lost} (p={binom_two_sided(gained, gained + lost):.2g})")
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
    """Seed aggregates at ``at_labels`` labels (rliable's, see ``harness/stats.py``), per model and prompt
    set: each method's IQM of success over its runs of every task, and its probability of improvement over
    each reference method on the tasks both ran, each with a stratified-bootstrap 95 % interval (runs
    resampled within each task; seeded)."""
    from herobench.harness.stats import iqm, prob_improvement, stratified_bootstrap_ci

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


def plot_curves(df: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """PNG of success rate vs labels: one panel per ``(task, model, profile, prompt_set)``, one line per
    method (mean over seeds, min–max band). A method evaluated at a single label count (a baseline
    that does not learn) is drawn as a dashed horizontal line."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state (Agg via savefig)

    table = curve_table(df)
    if table.empty:
        raise HerobenchError("no evaluations to plot")
    panels = list(table.groupby(PANEL_KEYS, sort=True))
    methods = sorted(table["method"].unique())
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(5.0 * ncols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (key, panel) in zip(axes, panels):
        xmax = max(float(panel["labels"].max()), 1.0)
        for method, curve in panel.groupby("method", sort=True):
            n_runs = int(curve["n_runs"].max())
            label = f"{method} (n={n_runs})"
            if len(curve) == 1:
                ax.axhline(float(curve["mean"].iloc[0]), ls="--", color=colours[method], label=label)
                continue
            ax.plot(curve["labels"], curve["mean"], marker="o", ms=3, color=colours[method], label=label)
            ax.fill_between(curve["labels"], curve["min"], curve["max"], color=colours[method], alpha=0.2)
        ax.set_xlim(0, xmax * 1.02)
        ax.set_ylim(0, 1)
        ax.set_xlabel("labels (feedback)")
        ax.set_ylabel("success rate")
        ax.set_title(" / ".join(str(k) for k in key if k not in ("default", "eval")), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, format="png")
    return path


def first_reach(df: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per run (and prompt set): the first evaluated label count whose success rate is >= ``target``
    (NaN when never reached). Resolution is the evaluation interval."""
    rows = []
    for (_path, prompt_set), run in df.groupby(["path", "prompt_set"], sort=True):
        run = run.sort_values("labels")
        hit = run.loc[run["success_rate"] >= target, "labels"]
        first = run.iloc[0]
        rows.append(
            {
                **{k: first[k] for k in ("run", "path", *CURVE_KEYS, "seed")},
                "prompt_set": prompt_set,
                "labels_to_target": float(hit.iloc[0]) if len(hit) else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=["run", "path", *CURVE_KEYS, "seed", "labels_to_target"])


def labels_to_target(
    df: pd.DataFrame, target: float, n_boot: int = 2000, ci: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Labels each method needs to reach ``target`` success, mean over seeds with a bootstrap CI.

    The CI resamples runs (seeds) with replacement ``n_boot`` times (seeded: reproducible). When some
    run never reaches the target, the mean is undefined and reported as NaN; ``n_reached`` says how
    many runs did.

    Returns:
        Columns ``task, model, profile, prompt_set, method, target, n_runs, n_reached, labels_mean,
        ci_lo, ci_hi``.
    """
    per_run = first_reach(df, target)
    rng = np.random.default_rng(seed)
    alpha = (1.0 - ci) / 2
    rows = []
    for key, group in per_run.groupby(CURVE_KEYS, sort=True):
        values = group["labels_to_target"].to_numpy(dtype=float)
        reached = int(np.isfinite(values).sum())
        mean = lo = hi = np.nan
        if reached == len(values):
            mean = float(values.mean())
            boot = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
            lo, hi = (float(q) for q in np.quantile(boot, [alpha, 1 - alpha]))
        rows.append(
            {
                **dict(zip(CURVE_KEYS, key)),
                "target": target,
                "n_runs": len(values),
                "n_reached": reached,
                "labels_mean": mean,
                "ci_lo": lo,
                "ci_hi": hi,
            }
        )
    cols = [*CURVE_KEYS, "target", "n_runs", "n_reached", "labels_mean", "ci_lo", "ci_hi"]
    return pd.DataFrame(rows, columns=cols)


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


def value_at(df: pd.DataFrame, at_labels: int) -> pd.DataFrame:
    """Per run and prompt set: the success rate at the last evaluation with at most ``at_labels`` labels.
    ``short`` is True when a run that spends labels (a training method, budget > 0) stopped before
    ``at_labels``."""
    rows = []
    for (_path, prompt_set), run in df.groupby(["path", "prompt_set"], sort=True):
        upto = run[run["labels"] <= at_labels].sort_values("labels")
        if upto.empty:
            continue
        last = upto.iloc[-1]
        budget = pd.to_numeric(last["budget_labels"], errors="coerce")
        spends = bool(np.isfinite(budget) and budget > 0 and _method_trains(str(last["method"])))
        rows.append({**{k: last[k] for k in (*CURVE_KEYS, "seed")}, "prompt_set": prompt_set,
                     "labels": int(last["labels"]), "success_rate": float(last["success_rate"]),
                     "short": spends and int(last["labels"]) < at_labels})
    return pd.DataFrame(rows, columns=[*CURVE_KEYS, "seed", "labels", "success_rate", "short"])


def paper_table(df: pd.DataFrame, at_labels: int, prompt_set: str = "eval") -> str:
    """HERO's Table-2 layout in markdown: one row per method, one column per task (and rater profile),
    each cell the mean (std over seeds) success rate at ``at_labels`` labels on ``prompt_set``.

    A cell marked † includes a seed that stopped before ``at_labels`` (its last point is used); a method
    that spends no labels is shown at its single evaluation."""
    vals = value_at(df[df["prompt_set"] == prompt_set], at_labels)
    if vals.empty:
        return f"(no evaluations on the '{prompt_set}' prompts at or below {at_labels} labels)"
    vals["column"] = [t if p == "default" else f"{t} ({p})" for t, p in zip(vals["task"], vals["profile"])]
    if vals["model"].nunique() > 1:
        vals["column"] = vals["column"] + " [" + vals["model"] + "]"
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
    return "\n".join(lines)


def table_label_points(df: pd.DataFrame) -> list[int]:
    """The label counts the paper-style tables are written at: 512 (Table 2's ~0.5K) and every larger
    budget the runs had (e.g. 1,152 for hand)."""
    budgets = pd.to_numeric(df["budget_labels"], errors="coerce").dropna().astype(int)
    return sorted({512, *(int(b) for b in budgets if b > 512)})


def write_tables(df: pd.DataFrame, path: str | Path, at_labels: Sequence[int] | None = None,
                 paired_df: pd.DataFrame | None = None) -> Path:
    """``tables.md``: :func:`paper_table` at each label count (default :func:`table_label_points`), then
    :func:`paired_table` when ``paired_df`` is given."""
    parts = ["# Success rate at a label budget (HERO Table-2 layout)", "",
             "Mean (std over seeds) success on each task's evaluation prompts; n = runs (seeds). † = a seed "
             "stopped before the budget: its last point is used. Methods that spend no labels are shown at "
             "their single evaluation.", ""]
    for at in at_labels or table_label_points(df):
        parts += [f"## At {at:,} labels", "", paper_table(df, at), ""]
    if paired_df is not None:
        parts += ["## Paired, image by image, at each method's last point", "",
                  "Images bad→good (+) and good→bad (−) on the same evaluation noises, summed over seeds, "
                  "against the run's own untrained start and against HERO (same seed); p = McNemar's exact "
                  "test on the pooled discordant images (paired.csv has every seed and point).", "",
                  paired_table(paired_df), ""]
    path = Path(path)
    path.write_text("\n".join(parts))
    return path


def write_report(
    run_dirs: Iterable[str | Path], out_dir: str | Path, targets: Sequence[float] = ()
) -> dict[str, Path]:
    """Write ``runs.csv`` (tidy), ``curves.csv``, ``curves_<task>.png`` per task, ``tables.md`` (the
    paper-style tables), ``paired.csv`` (:func:`paired_frame`, when the runs recorded per-image verdicts),
    ``aggregates.csv`` (:func:`aggregate_frame`: IQM and probability of improvement over seeds),
    ``prompts.csv`` (successes per prompt, when the runs recorded them) and
    ``labels_to_target.csv`` when ``targets`` are given; ``runs.parquet`` too if pyarrow is installed.

    Returns:
        name -> path of every file written.
    """
    run_dirs = list(run_dirs)
    seen: dict[Path, str] = {}
    for d in run_dirs:
        key = Path(d).resolve()
        if key in seen:
            raise HerobenchError(f"run folder given twice: {seen[key]} and {d} (each run counts once)")
        seen[key] = str(d)
    for t in targets:
        if not 0.0 < t <= 1.0:  # (also refuses NaN)
            raise HerobenchError(f"target success rate must be in (0, 1], got {t}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise HerobenchError(f"report folder {out} exists and is not a folder")
    parsed = [_read_run(Path(d)) for d in run_dirs]  # each run's files read once, for both tables
    df = _runs_frame(parsed)
    if df.empty:
        raise HerobenchError("the given run folders hold no evaluations yet")
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    written["runs.csv"] = out / "runs.csv"
    df.to_csv(written["runs.csv"], index=False)
    if importlib.util.find_spec("pyarrow") is not None:
        written["runs.parquet"] = out / "runs.parquet"
        df.to_parquet(written["runs.parquet"], index=False)
    written["curves.csv"] = out / "curves.csv"
    curve_table(df).to_csv(written["curves.csv"], index=False)
    for task, sub in df.groupby("task", sort=True):
        name = f"curves_{task}.png"
        written[name] = plot_curves(sub, out / name, title=str(task))
    aggregates = pd.concat([aggregate_frame(df, at) for at in table_label_points(df)], ignore_index=True)
    if not aggregates.empty:
        written["aggregates.csv"] = out / "aggregates.csv"
        aggregates.to_csv(written["aggregates.csv"], index=False)
    pairs = paired_frame(parsed)
    written["tables.md"] = write_tables(df, out / "tables.md", paired_df=pairs)
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
    return written
