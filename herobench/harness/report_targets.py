"""Labels to a target success rate: where each run's curve crosses it, the mean over seeds with a bootstrap
interval, and the ratio of two methods' labels (the paper's "HERO needs 4x fewer labels than D3PO")."""

from __future__ import annotations

import numpy as np
import pandas as pd

from herobench.harness.report_runs import CURVE_KEYS, same_class
from herobench.stats import stratified_bootstrap_ci


def first_reach(df: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per run (and prompt set): where its curve crosses ``target``.

    ``labels_to_target`` is the first evaluated label count with success >= ``target`` *after* the run's
    first evaluation was below it (resolution: the evaluation interval); NaN otherwise. ``status`` says why:
    ``"crossed"``, ``"never"`` (always below), ``"at start"`` (its first evaluation is already at or above
    the target: nothing was learned to get there) or ``"one point"`` (a single evaluation: no curve)."""
    rows = []
    for (_path, prompt_set), run in df.groupby(["path", "prompt_set"], sort=True):
        run = run.sort_values("labels")
        first = run.iloc[0]
        rates, labels = run["success_rate"].to_numpy(float), run["labels"].to_numpy(int)
        value, status = np.nan, "never"
        if len(run) == 1:
            status = "one point"
        elif rates[0] >= target:
            status = "at start"
        elif (rates >= target).any():
            value, status = float(labels[int(np.argmax(rates >= target))]), "crossed"
        rows.append({**{k: first[k] for k in ("run", "path", *CURVE_KEYS, "seed")}, "prompt_set": prompt_set,
                     "labels_to_target": value, "status": status})
    return pd.DataFrame(rows, columns=["run", "path", *CURVE_KEYS, "seed", "labels_to_target", "status"])


TARGET_COLUMNS = [*CURVE_KEYS, "target", "n_runs", "n_reached", "labels_mean", "ci_lo", "ci_hi", "note"]


def _target_note(statuses: list[str], reached: int) -> str:
    """Why a labels-to-target row has no value or no interval (empty when it has both)."""
    n = len(statuses)
    if reached == n:
        return "one seed: no interval" if n == 1 else ""
    counts = {s: statuses.count(s) for s in ("never", "at start", "one point") if s in statuses}
    words = {"never": "never reached it", "at start": "started at or above it",
             "one point": "had a single evaluation (no curve)"}
    return "; ".join(f"{k} of {n} run(s) {words[s]}" for s, k in counts.items())


def labels_to_target(
    df: pd.DataFrame, target: float, n_boot: int = 2000, ci: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Labels each method needs for its curve to cross ``target`` success (:func:`first_reach`), mean over
    seeds with a bootstrap interval over seeds.

    A value only where every run's curve crossed the target (else ``labels_mean`` is NaN and ``note`` says
    how many never reached it or started above it). The interval resamples runs (seeds) with replacement
    ``n_boot`` times (seeded: reproducible); with one seed there is none (NaN, ``note`` = "one seed: no
    interval"): one noisy evaluation is no interval.

    Returns:
        Columns :data:`TARGET_COLUMNS`.
    """
    per_run = first_reach(df, target)
    rng = np.random.default_rng(seed)
    alpha = (1.0 - ci) / 2
    rows = []
    for key, group in per_run.groupby(CURVE_KEYS, sort=True):
        values = group["labels_to_target"].to_numpy(dtype=float)
        reached = int((group["status"] == "crossed").sum())
        mean = lo = hi = np.nan
        if reached == len(values):
            mean = float(values.mean())
            if len(values) > 1:
                boot = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
                lo, hi = (float(q) for q in np.quantile(boot, [alpha, 1 - alpha]))
        rows.append({**dict(zip(CURVE_KEYS, key)), "target": target, "n_runs": len(values), "n_reached": reached,
                     "labels_mean": mean, "ci_lo": lo, "ci_hi": hi,
                     "note": _target_note(group["status"].tolist(), reached)})
    return pd.DataFrame(rows, columns=TARGET_COLUMNS)


RATIO_COLUMNS = [*CURVE_KEYS[:-1], "target", "method", "reference", "n_runs", "n_reached", "ref_runs",
                 "ref_reached", "labels_mean", "ref_labels_mean", "ratio", "ci_lo", "ci_hi", "bound", "note"]


def _censored_labels(df: pd.DataFrame, target: float) -> pd.DataFrame:
    """:func:`first_reach` per run, with ``labels`` = where it crossed, or its last evaluated label count for a
    run that never reached the target (a censored value: it needs more than that)."""
    per_run = first_reach(df, target)
    last = df.groupby(["path", "prompt_set"])["labels"].max().rename("last_labels").reset_index()
    per_run = per_run.merge(last, on=["path", "prompt_set"], how="left")
    per_run["labels"] = np.where(per_run["status"] == "crossed", per_run["labels_to_target"],
                                 per_run["last_labels"].astype(float))
    return per_run


def _ratio_row(a: pd.DataFrame, b: pd.DataFrame, n_boot: int, level: float, seed: int) -> dict:
    """Ratio of mean labels, method ``a`` over reference ``b``, with a stratified bootstrap interval
    (:func:`herobench.stats.stratified_bootstrap_ci`: each method's seeds resampled on their own). Censored runs enter at their last label count, which makes the
    ratio a bound: ``lower`` when only ``a`` has censored runs, ``upper`` when only ``b`` has."""
    usable = {"crossed", "never"}
    row = {"n_runs": len(a), "n_reached": int((a["status"] == "crossed").sum()), "ref_runs": len(b),
           "ref_reached": int((b["status"] == "crossed").sum()), "labels_mean": np.nan, "ref_labels_mean": np.nan,
           "ratio": np.nan, "ci_lo": np.nan, "ci_hi": np.nan, "bound": "", "note": ""}
    if not (set(a["status"]) <= usable and set(b["status"]) <= usable):
        row["note"] = "a run started at or above the target or has a single evaluation: no ratio"
        return row
    a_cens, b_cens = row["n_reached"] < len(a), row["ref_reached"] < len(b)
    if row["n_reached"] == 0 or row["ref_reached"] == 0 or (a_cens and b_cens):
        row["note"] = "too few runs reached the target on both sides: no ratio"
        return row
    x, y = a["labels"].to_numpy(float), b["labels"].to_numpy(float)
    row.update(labels_mean=float(x.mean()), ref_labels_mean=float(y.mean()), ratio=float(x.mean() / y.mean()))
    if a_cens or b_cens:
        row["bound"] = "lower" if a_cens else "upper"
        side = "method" if a_cens else "reference"
        row["note"] = f"{side} runs that never reached it count at their last label count: the ratio is a bound"
    if len(x) > 1 and len(y) > 1:
        row["ci_lo"], row["ci_hi"] = stratified_bootstrap_ci(
            lambda a, b: np.mean(a[0]) / np.mean(b[0]), [[list(x)], [list(y)]], reps=n_boot, seed=seed, level=level)
    else:
        row["note"] = (row["note"] + "; " if row["note"] else "") + "one seed on a side: no interval"
    return row


def labels_ratio(df: pd.DataFrame, target: float, reference: str = "hero", n_boot: int = 2000, ci: float = 0.95,
                 seed: int = 0) -> pd.DataFrame:
    """For every method beside ``reference`` in the same panel (task, model, rater, prompt set): mean labels
    to ``target`` over its seeds divided by the reference's, with a stratified-bootstrap interval over seeds.
    D3PO's ratio against HERO is the paper's "4x fewer labels" claim.

    A run that never reached the target counts at its last evaluated label count, so the ratio becomes a
    bound (``bound`` = ``lower`` or ``upper``, ``note`` says which side); none where both sides have such
    runs, where a side never reached it, or where a run started above it. Seeded: same input, same interval.

    Returns:
        Columns :data:`RATIO_COLUMNS`; empty when no panel has the reference method.
    """
    per_run = _censored_labels(df, target)
    panel_keys = CURVE_KEYS[:-1]
    rows = []
    for key, panel in per_run.groupby(panel_keys, sort=True):
        for method, runs in panel.groupby("method", sort=True):
            name = same_class(reference, method)  # a bf16 run against the bf16 reference only
            ref = panel[panel["method"] == name]
            if method == name or ref.empty:
                continue
            rows.append({**dict(zip(panel_keys, key)), "target": target, "method": method, "reference": name,
                         **_ratio_row(runs, ref, n_boot, ci, seed)})
    return pd.DataFrame(rows, columns=RATIO_COLUMNS)
