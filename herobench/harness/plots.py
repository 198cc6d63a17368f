"""Success-vs-labels plots of a report (``curves_<task>.png``), drawn from the tidy runs table.

What the reader must be able to see: the y-axis is fitted to the data (a 0.45–0.52 range is not a flat line
at the bottom of 0–1), every curve has an interval band (the min–max over seeds; with one seed the 95 %
Wilson interval of each evaluation's success from its ``n`` images), the ``--target`` line is drawn, and the
legend sits outside the data. Up to :data:`OVERLAY_MAX` methods share one axes per panel; more are drawn as
small multiples (one axes per method, the other methods in grey behind it), so 10 methods stay readable.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from herobench.errors import HerobenchError
from herobench.harness.report_runs import CURVE_KEYS, PANEL_KEYS

OVERLAY_MAX = 4  # methods drawn on one axes; more become small multiples
GRID_COLUMNS = 5  # small multiples per row
MIN_SPAN = 0.1  # smallest y range shown (success rate): noise of one evaluation is not magnified further


def _wilson(rate: float, n: float) -> tuple[float, float]:
    """The 95 % Wilson interval of a success rate from ``n`` images (NaNs without ``n``)."""
    if not np.isfinite(n) or n <= 0:
        return math.nan, math.nan
    from herobench.stats import wilson_interval

    return wilson_interval(round(rate * n), int(n))


def curve_bands(df: pd.DataFrame) -> pd.DataFrame:
    """Per ``(task, model, profile, prompt_set, method, labels)``: ``mean`` success over seeds, ``n_runs``
    and the band ``[band_lo, band_hi]``: min–max over seeds, or for one seed the evaluation's recorded
    Wilson interval (``lo``/``hi``; computed from ``n_images`` when not recorded). ``band`` names which."""
    rows = []
    for key, g in df.groupby([*CURVE_KEYS, "labels"], sort=True):
        rates = g["success_rate"].to_numpy(float)
        row = {**dict(zip([*CURVE_KEYS, "labels"], key)), "mean": float(rates.mean()), "n_runs": len(rates)}
        if len(rates) > 1:
            row |= {"band_lo": float(rates.min()), "band_hi": float(rates.max()), "band": "min–max over seeds"}
        else:
            lo, hi = float(g["lo"].iloc[0]), float(g["hi"].iloc[0])
            if not (np.isfinite(lo) and np.isfinite(hi)):
                lo, hi = _wilson(rates[0], float(g["n_images"].iloc[0]))
            row |= {"band_lo": lo, "band_hi": hi, "band": "95 % Wilson (one seed)"}
        rows.append(row)
    return pd.DataFrame(rows, columns=[*CURVE_KEYS, "labels", "mean", "n_runs", "band_lo", "band_hi", "band"])


def fitted_ylim(values: np.ndarray) -> tuple[float, float]:
    """Y limits around every finite value drawn (means, bands, target): a 10 % margin, at least
    :data:`MIN_SPAN` wide, inside [0, 1]."""
    v = values[np.isfinite(values)]
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
    pad = max(0.1 * (hi - lo), (MIN_SPAN - (hi - lo)) / 2, 0.01)
    lo, hi = lo - pad, hi + pad
    if lo < 0:
        lo, hi = 0.0, min(1.0, hi - lo)
    if hi > 1:
        lo, hi = max(0.0, lo - (hi - 1)), 1.0
    return lo, hi


def _label(curve: pd.DataFrame) -> str:
    """``hero (3 seeds)``; ``ddpo (3–4 seeds)`` when a seed stopped early (its later points have fewer)."""
    lo, hi = int(curve["n_runs"].min()), int(curve["n_runs"].max())
    count = f"{lo}–{hi}" if lo != hi else str(hi)
    return f"{curve['method'].iloc[0]} ({count} seed{'s' if hi != 1 else ''})"


def _draw(ax, curve: pd.DataFrame, colour: str, xmax: float, context: bool = False) -> None:
    """One method's curve on ``ax``: line and band, or for a single label point (a method that does not
    learn) a dashed horizontal line and band across the panel. ``context``: thin grey, no band."""
    style = {"color": "0.75", "lw": 0.9, "zorder": 1} if context else {"color": colour, "lw": 1.8, "zorder": 3}
    label = None if context else _label(curve)
    if len(curve) == 1:
        ax.axhline(float(curve["mean"].iloc[0]), ls="--", label=label, **style)
        if not context:  # edges, not a fill: a band across the whole panel would cover every other curve
            for edge in (curve["band_lo"].iloc[0], curve["band_hi"].iloc[0]):
                ax.axhline(float(edge), color=colour, ls="--", lw=0.7, alpha=0.5, zorder=2)
        return
    ax.plot(curve["labels"], curve["mean"], marker=None if context else "o", ms=3, label=label, **style)
    if not context:
        one_seed = int(curve["n_runs"].max()) == 1  # Wilson bands are wide: lighter, so overlaps stay legible
        ax.fill_between(curve["labels"], curve["band_lo"], curve["band_hi"], color=colour,
                        alpha=0.12 if one_seed else 0.2, lw=0)


def _panel_names(keys: list[tuple], with_task: bool) -> list[str]:
    """A short name per panel from the keys that differ between the figure's panels (the title already
    names the task unless ``with_task``); "" when there is a single panel."""
    names = []
    for key in keys:
        parts = []
        for i, (name, value) in enumerate(zip(PANEL_KEYS, key)):
            varies = len({k[i] for k in keys}) > 1
            if varies or (name == "task" and with_task):
                parts.append(f"{value} prompts" if name == "prompt_set" else str(value))
        names.append(" / ".join(parts))
    return names


def _finish(ax, xmax: float, ylim: tuple[float, float], target: float | None) -> None:
    if target is not None:
        ax.axhline(target, color="black", ls=":", lw=1.4, zorder=2, label=f"target {target:g}")
    ax.set_xlim(0, xmax * 1.02)
    ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)


def _panel_values(panel: pd.DataFrame, target: float | None) -> np.ndarray:
    extra = [target] if target is not None else []
    return np.concatenate([panel[["mean", "band_lo", "band_hi"]].to_numpy(float).ravel(), extra])


def _layout(panels: list, methods: list[str]) -> tuple[bool, int, int]:
    """(small multiples?, rows, columns) of the figure's axes."""
    if len(methods) <= OVERLAY_MAX:
        ncols = min(3, len(panels))
        return False, -(-len(panels) // ncols), ncols
    ncols = min(GRID_COLUMNS, -(-len(methods) // 2))  # two rows before a sixth column (8 methods: 4 x 2)
    return True, len(panels) * -(-len(methods) // ncols), ncols


def curves_figure(df: pd.DataFrame, title: str | None = None, target: float | None = None):
    """A matplotlib ``Figure`` of success rate (y, a fraction) against labels (x, feedback count) from the
    tidy runs table (``report.RUN_COLUMNS``): one panel per ``(task, model, profile, prompt_set)`` with one
    line per method (mean over seeds, band per :func:`curve_bands`), or with more than :data:`OVERLAY_MAX`
    methods one axes per method and panel. ``title`` is drawn once (the figure's), ``target`` as a dotted
    line.

    Raises:
        HerobenchError: no evaluations to plot.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state (Agg via savefig)

    bands = curve_bands(df)
    if bands.empty:
        raise HerobenchError("no evaluations to plot")
    panels = list(bands.groupby(PANEL_KEYS, sort=True))
    methods = sorted(bands["method"].unique())
    palette = "tab10" if len(methods) <= 10 else "tab20"
    colours = {m: f"C{i}" if palette == "tab10" else _tab20(i) for i, m in enumerate(methods)}
    multiples, nrows, ncols = _layout(panels, methods)
    fig = Figure(figsize=(3.4 * ncols if multiples else 5.2 * ncols + 2.0, (2.6 if multiples else 3.6) * nrows + 0.9),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    draw = _draw_multiples if multiples else _draw_overlay
    used = draw(axes, panels, methods, colours, target, title is None)
    for ax in axes.ravel()[used:]:
        ax.set_visible(False)
    _figure_legend(fig, axes.ravel()[:used], multiples, bands)
    for column in axes.T:  # the x label once per column, under its lowest visible axes
        shown = [ax for ax in column if ax.get_visible()]
        for ax in shown:
            ax.tick_params(labelsize=8)
        if shown:
            shown[-1].set_xlabel("labels (feedback)", fontsize=9)
    fig.supylabel("success rate", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def _tab20(i: int) -> tuple:
    from matplotlib import colormaps

    return colormaps["tab20"](i % 20)


def _draw_overlay(axes, panels, methods, colours, target, with_task) -> int:
    flat = axes.ravel()
    names = _panel_names([k for k, _ in panels], with_task)
    for ax, name, (_key, panel) in zip(flat, names, panels):
        xmax = max(float(panel["labels"].max()), 1.0)
        for method, curve in panel.groupby("method", sort=True):
            _draw(ax, curve, colours[method], xmax)
        _finish(ax, xmax, fitted_ylim(_panel_values(panel, target)), target)
        if name:
            ax.set_title(name, fontsize=10)
    return len(panels)


def _draw_multiples(axes, panels, methods, colours, target, with_task) -> int:
    ncols = axes.shape[1]
    rows_per_panel = -(-len(methods) // ncols)
    flat = axes.ravel()
    names = _panel_names([k for k, _ in panels], with_task)
    for p, (_key, panel) in enumerate(panels):
        name = names[p]
        xmax = max(float(panel["labels"].max()), 1.0)
        ylim = fitted_ylim(_panel_values(panel, target))  # shared within a panel: methods compare by eye
        curves = dict(list(panel.groupby("method", sort=True)))
        for i, method in enumerate(methods):
            ax = flat[p * rows_per_panel * ncols + i]
            for other, curve in curves.items():
                if other != method:
                    _draw(ax, curve, colours[other], xmax, context=True)
            if method in curves:
                _draw(ax, curves[method], colours[method], xmax)
            _finish(ax, xmax, ylim, target)
            heading = _label(curves[method]) if method in curves else f"{method} (no runs)"
            ax.set_title(f"{heading} · {name}" if name else heading, fontsize=9)
        for i in range(len(methods), rows_per_panel * ncols):
            flat[p * rows_per_panel * ncols + i].set_visible(False)
    return len(flat)


def _figure_legend(fig, axes, multiples: bool, bands: pd.DataFrame) -> None:
    """One legend for the figure, below the axes (never over the data), and the band's meaning."""
    from matplotlib.lines import Line2D

    handles, labels = {}, []
    for ax in axes:
        if not ax.get_visible():
            continue
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles and not (multiples and not lab.startswith("target")):
                handles[lab] = h
    if multiples:
        handles = {"the panel's method": Line2D([], [], color="C0", lw=1.8),
                   "the other methods": Line2D([], [], color="0.75", lw=0.9), **handles}
    labels = list(handles)
    kinds = "\n".join(sorted(bands["band"].unique()))
    where = {"loc": "outside lower center", "ncols": min(len(labels), 5)} if multiples else \
        {"loc": "outside right upper", "ncols": 1}  # one method a row: 10 names stay readable
    fig.legend(list(handles.values()), labels, **where, fontsize=8, frameon=False,
               title=f"line: mean over seeds\nband: {kinds}", title_fontsize=8, alignment="left")


def plot_curves(df: pd.DataFrame, path: str | Path, title: str | None = None, target: float | None = None) -> Path:
    """Write :func:`curves_figure` as a PNG at ``path`` (parent folders made) and return the path."""
    fig = curves_figure(df, title=title, target=target)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, format="png")
    return path
