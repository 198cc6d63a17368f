"""CI regression: run a small fixed slice of the benchmark grid and compare its curves with committed
reference values (``nox -s regression`` runs ``python -m herobench.regression``).

What is compared, per cell ``<task>/<method>`` of ``benchmarks/grids/regression.toml``:

* ``success/<prompt_set>@<labels>``: the held-out success rate at every evaluated label count (the
  curve of ``evals.jsonl``);
* ``good_rate``: the fraction of images the rater labelled good over the whole run (``labels.jsonl``),
  for methods that ask for labels.

Tolerances come from seed variance. ``--update`` runs the grid with the ``[regression]
reference_seeds`` (default 0, 1, 2) and stores, per point, the mean over those seeds and

    tol = max(k * std,  z_floor * sqrt(p~ (1 - p~) / n)),   p~ = (n * mean + 1) / (n + 2)

where ``std`` is the sample standard deviation over the reference seeds (ddof 1), ``n`` the number of
images behind the rate (evaluation images, or labels) and ``k = 3``, ``z_floor = 1`` by default. The
first term is the spread that training randomness explains; the second, one binomial standard error
(Laplace-smoothed so that it is never 0), is a floor for points where the few reference seeds happen
to agree (e.g. a method that does not learn: every seed gives the same images). The check runs the
grid's ``seeds`` (default seed 0) and fails when the mean over them leaves ``mean ± tol`` at any point,
or when a point appears or disappears (e.g. a changed evaluation schedule). The settings of every cell
are stored in the reference; a grid whose settings differ is refused (run ``--update``).

Paired (issue 25, item 7): the reference also keeps every seed's per-image successes (``evals.jsonl``
``successes``). A checked seed that is also a reference seed is compared image by image with that seed's
reference run on the same evaluation noises (exact McNemar, ``herobench/stats.py``); a point whose images
moved one way at ``p < paired_alpha`` (default 0.05) fails as ``MOVED (paired)`` even inside the
tolerance. On the same code, packages and CPU the images are identical (p = 1); float noise from another
CPU flips a few images both ways, which McNemar does not count as a move.

Exit status: 0 all points within tolerance, 1 a curve moved, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from herobench.config import from_dict, recorded_settings, to_dict
from herobench.errors import HerobenchError

FORMAT = 1


@dataclass(frozen=True)
class RegressionOptions:
    """The ``[regression]`` table of a grid file."""

    reference_seeds: tuple[int, ...] = (0, 1, 2)
    k: float = 3.0
    z_floor: float = 1.0
    paired_alpha: float = 0.05

    def __post_init__(self) -> None:
        from herobench.errors import ConfigError

        if not self.reference_seeds:
            raise ConfigError("reference_seeds must not be empty")
        if self.k < 0 or self.z_floor < 0:
            raise ConfigError(f"k and z_floor must be >= 0 (got {self.k}, {self.z_floor})")
        if not 0 <= self.paired_alpha < 1:
            raise ConfigError(f"paired_alpha must be in [0, 1) (got {self.paired_alpha})")


@dataclass(frozen=True)
class Row:
    """One compared point. ``status``: ``ok``, ``MOVED``, ``missing`` (in the reference, not observed)
    or ``unexpected`` (observed, not in the reference)."""

    cell: str
    point: str
    reference: float | None
    tol: float | None
    observed: float | None
    status: str
    paired: str = ""  # e.g. "+3/-0 p=0.25" (images gained / lost against the same seed's reference run)

    @property
    def delta(self) -> float | None:
        if self.reference is None or self.observed is None:
            return None
        return self.observed - self.reference

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# --------------------------------------------------------------------------------------------------
# pure functions


def binomial_floor(p: float, n: int, z: float) -> float:
    """``z`` binomial standard errors of a rate ``p`` measured on ``n`` images (Laplace-smoothed)."""
    if n <= 0:
        return 0.0
    p_s = (p * n + 1.0) / (n + 2.0)
    return z * math.sqrt(p_s * (1.0 - p_s) / n)


def tolerance(values: Sequence[float], n: int, k: float, z_floor: float) -> float:
    """``max(k · std(values, ddof=1), binomial_floor(mean, n, z_floor))``; std is 0 for one value."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return max(k * std, binomial_floor(mean, n, z_floor))


def reference_points(seed_runs: Sequence[Mapping[str, Mapping]], k: float, z_floor: float) -> dict[str, dict]:
    """Reference entries of one cell from its runs over the reference seeds.

    Args:
        seed_runs: per seed, ``{point: {"value": rate, "n": images}}`` (as :func:`observe_run`).

    Returns:
        ``{point: {"mean", "std", "tol", "n", "values"}}`` over the points every seed has.

    Raises:
        HerobenchError: the seeds do not share the same points (their runs differ in shape).
    """
    points = [set(r) for r in seed_runs]
    if any(p != points[0] for p in points):
        raise HerobenchError(f"the reference seeds evaluated different points: {sorted(set.union(*points))}")
    out = {}
    for point in sorted(points[0], key=_point_order):
        values = [float(r[point]["value"]) for r in seed_runs]
        n = int(min(r[point]["n"] for r in seed_runs))
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        out[point] = {"mean": mean, "std": std, "tol": tolerance(values, n, k, z_floor), "n": n,
                      "values": values}
        bits = [r[point].get("bits") for r in seed_runs]
        if all(isinstance(b, str) for b in bits):
            out[point]["bits"] = bits  # per reference seed, in reference_seeds order
    return out


def mean_observation(seed_runs: Sequence[Mapping[str, Mapping]]) -> dict[str, float]:
    """``{point: mean value over the runs}`` over the points any run has."""
    points = sorted({p for r in seed_runs for p in r}, key=_point_order)
    return {p: sum(float(r[p]["value"]) for r in seed_runs if p in r) / sum(1 for r in seed_runs if p in r)
            for p in points}


def compare(reference: Mapping[str, Mapping[str, Mapping]], observed: Mapping[str, Mapping[str, float]]) -> list[Row]:
    """Compare observed points with reference points (pure).

    Args:
        reference: ``{cell: {point: {"mean", "tol", ...}}}``.
        observed: ``{cell: {point: value}}``; a cell absent here is reported point by point as missing.

    Returns:
        One :class:`Row` per point of either side, cells and points in a stable order. A point moved
        when ``|observed - mean| > tol`` (a tiny epsilon absorbs float rounding of equal values).
    """
    rows = []
    for cell in sorted(set(reference) | set(observed)):
        ref, obs = reference.get(cell, {}), observed.get(cell, {})
        for point in sorted(set(ref) | set(obs), key=_point_order):
            if point not in obs:
                rows.append(Row(cell, point, float(ref[point]["mean"]), float(ref[point]["tol"]), None, "missing"))
            elif point not in ref:
                rows.append(Row(cell, point, None, None, float(obs[point]), "unexpected"))
            else:
                mean, tol, value = float(ref[point]["mean"]), float(ref[point]["tol"]), float(obs[point])
                moved = abs(value - mean) > tol + 1e-9
                rows.append(Row(cell, point, mean, tol, value, "MOVED" if moved else "ok"))
    return rows


def paired_check(rows: Sequence[Row], reference: Mapping[str, Mapping[str, Mapping]], reference_seeds: Sequence[int],
                 observed: Mapping[str, Mapping[int, Mapping[str, Mapping]]], alpha: float) -> list[Row]:
    """``rows`` with the paired comparison filled in (pure).

    Args:
        rows: :func:`compare`'s rows.
        reference: ``{cell: {point: {..., "bits": [per reference seed]}}}``.
        reference_seeds: the seeds the reference's ``bits`` are in the order of.
        observed: ``{cell: {seed: {point: {"value", "n", "bits"}}}}``.
        alpha: a point moved when any checked seed's exact McNemar p-value is below it.

    Returns:
        The rows, each ``ok`` row whose images moved turned ``MOVED (paired)``; points without per-image
        data on either side keep ``paired = ""``.
    """
    from herobench.harness.evaluate import successes_of
    from herobench.stats import paired as paired_stats

    out = []
    for row in rows:
        ref_bits = (reference.get(row.cell, {}).get(row.point) or {}).get("bits") or []
        notes, moved = [], False
        for seed, run in sorted(observed.get(row.cell, {}).items()):
            if seed not in reference_seeds or row.point not in run:
                continue
            i = list(reference_seeds).index(seed)
            a = successes_of({"successes": ref_bits[i]}) if i < len(ref_bits) else None
            b = successes_of({"successes": run[row.point].get("bits")})
            if a is None or b is None or len(a) != len(b):
                continue
            pr = paired_stats(a, b)
            notes.append(f"+{pr.gained}/-{pr.lost} p={pr.p:.2g}")
            moved |= pr.p < alpha
        status = "MOVED (paired)" if moved and row.status == "ok" else row.status
        out.append(Row(row.cell, row.point, row.reference, row.tol, row.observed, status, "; ".join(notes)))
    return out


def format_table(rows: Sequence[Row]) -> str:
    """A fixed-width table: cell, point, reference ± tolerance, observed, delta, status."""
    def num(x: float | None, signed: bool = False) -> str:
        return "-" if x is None else (f"{x:+.3f}" if signed else f"{x:.3f}")

    header = (f"{'cell':<24} {'point':<22} {'reference':>9} {'± tol':>7} {'observed':>9} {'delta':>7}  "
              f"{'paired (same seed)':<20}  status")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.cell:<24} {r.point:<22} {num(r.reference):>9} {num(r.tol):>7} {num(r.observed):>9} "
                     f"{num(r.delta, True):>7}  {r.paired or '-':<20}  {r.status}")
    return "\n".join(lines)


def _point_order(point: str) -> tuple:
    # success/<set>@<labels> in label order, then good_rate
    name, _, labels = point.partition("@")
    return (name == "good_rate", name, int(labels) if labels.isdigit() else -1)


# --------------------------------------------------------------------------------------------------
# run folders


def observe_run(run_dir: str | Path) -> dict[str, dict]:
    """``{point: {"value", "n"}}`` of one finished run folder (see the module docstring)."""
    from herobench.harness.runlog import read_jsonl

    run_dir = Path(run_dir)
    out: dict[str, dict] = {}
    for ev in read_jsonl(run_dir / "evals.jsonl"):
        point = f"success/{ev.get('prompt_set', 'eval')}@{int(ev['labels'])}"
        out[point] = {"value": float(ev["success_rate"]), "n": int(ev.get("n", 0))}
        if isinstance(ev.get("successes"), str):
            out[point]["bits"] = ev["successes"]
    labels_file = run_dir / "labels.jsonl"
    if labels_file.exists():
        good = [bool(r["good"]) for r in read_jsonl(labels_file) if "good" in r]
        if good:
            out["good_rate"] = {"value": sum(good) / len(good), "n": len(good)}
    return out


def cell_key(settings) -> str:
    return f"{settings.task}/{settings.method}"


def _settings_without_seed(settings) -> dict:
    d = json.loads(json.dumps(to_dict(settings)))
    d.pop("seed")
    return d


def _reference_settings(stored: Mapping) -> dict:
    """A reference cell's settings as today's herobench writes them (keys added since take their defaults:
    a reference made before ``precision`` existed is fp32)."""
    d = recorded_settings({**stored, "seed": 0})
    d.pop("seed", None)
    return d


def _relative(path: Path) -> str:
    """``path`` relative to the working directory when inside it (no machine paths in the reference)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over the model's weights and configs (relative path + content): tells whether the model
    changed. The card's documents (README, calibration table, loss curve, training log) do not count."""
    model_dir = Path(model_dir)

    def counts(q: Path) -> bool:
        return q.is_file() and (q.parent != model_dir or q.name in ("model_index.json", "herobench.json"))

    h = hashlib.sha256()
    for p in sorted(q for q in model_dir.rglob("*") if counts(q)):
        h.update(str(p.relative_to(model_dir)).encode())
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# the command


def _default_grid() -> Path:
    from herobench.paths import project_root

    root = project_root()
    if root is None:
        raise HerobenchError("not in a source checkout: pass --grid path/to/regression.toml")
    return root / "benchmarks" / "grids" / "regression.toml"


def _default_reference() -> Path:
    from herobench.paths import data_dir

    return data_dir("results", must_exist=False) / "regression" / "reference.json"


def _run_grid(spec, seeds, out: Path, jobs: int, echo) -> dict[str, dict[int, dict]]:
    """Run the cells for ``seeds``; ``{cell key: {seed: observation}}`` of the cells that finished."""
    from herobench.harness.bench import cells, describe, run_cells

    grid_cells = cells(spec, seeds)
    results = run_cells(grid_cells, out, jobs, on_result=lambda r: echo(f"  {describe(r)}"))
    observed: dict[str, dict[int, dict]] = {}
    for cell, result in zip(grid_cells, results):
        if result.status != "failed":
            observed.setdefault(cell_key(cell.settings), {})[cell.settings.seed] = observe_run(result.path)
    return observed


def update(spec, grid_path: Path, reference_path: Path, overrides: Sequence[str], out: Path, jobs: int,
           echo=print) -> dict:
    """Run the reference seeds and (re)write the reference file; returns its content."""
    from herobench.harness.bench import cells
    from herobench.harness.runlog import environment_info
    from herobench.modelcard import resolve_model

    opts = from_dict(RegressionOptions, spec.regression, "regression")
    echo(f"regression --update: running seeds {list(opts.reference_seeds)} into {out}")
    grid_cells = cells(spec, opts.reference_seeds)
    observed = _run_grid(spec, opts.reference_seeds, out, jobs, echo)
    entries = {}
    for cell in grid_cells:
        key = cell_key(cell.settings)
        if key in entries:
            continue
        by_seed = observed.get(key, {})
        runs = [by_seed[seed] for seed in opts.reference_seeds if seed in by_seed]
        if len(runs) != len(opts.reference_seeds):
            raise HerobenchError(f"cell {key} failed for some reference seed (see {out / 'failed'}); nothing written")
        entries[key] = {"settings": _settings_without_seed(cell.settings),
                        "points": reference_points(runs, opts.k, opts.z_floor)}
    model = resolve_model(grid_cells[0].settings.model)
    ref = {
        "format": FORMAT,
        "about": "herobench regression reference: per point the mean over the reference seeds and the "
                 "tolerance max(k*std, z_floor*sqrt(p~(1-p~)/n)), p~=(n*mean+1)/(n+2); "
                 "see herobench/regression.py. Rewrite with `python -m herobench.regression --update`.",
        "grid": _relative(grid_path),
        "overrides": list(overrides),
        "tolerance": {"k": opts.k, "z_floor": opts.z_floor, "paired_alpha": opts.paired_alpha},
        "reference_seeds": list(opts.reference_seeds),
        "model": {"name": grid_cells[0].settings.model, "fingerprint": model_fingerprint(model)},
        "environment": environment_info(),
        "cells": entries,
    }
    reference_path.parent.mkdir(parents=True, exist_ok=True)
    reference_path.write_text(json.dumps(ref, indent=2) + "\n")
    echo(f"wrote {reference_path} ({sum(len(e['points']) for e in entries.values())} points, "
         f"{len(entries)} cells)")
    return ref


def load_reference(path: Path) -> dict:
    if not path.is_file():
        raise HerobenchError(f"no regression reference at {path}; create it with "
                             f"`python -m herobench.regression --update`")
    try:
        ref = json.loads(path.read_text())
        if ref.get("format") != FORMAT or not isinstance(ref.get("cells"), dict):
            raise ValueError(f"format {ref.get('format')!r}, expected {FORMAT}")
    except (json.JSONDecodeError, ValueError, AttributeError) as e:
        raise HerobenchError(f"{path}: not a regression reference ({e})") from None
    return ref


def check(spec, reference: dict, out: Path, jobs: int, echo=print) -> list[Row]:
    """Run the grid's seeds and compare with ``reference``; returns the rows (printing is the caller's).

    Raises:
        HerobenchError: a cell's settings differ from the reference's, or the grid has a cell the
            reference lacks (both mean: run ``--update``).
    """
    from herobench.harness.bench import cells, settings_diff
    from herobench.modelcard import resolve_model

    grid_cells = cells(spec)
    for cell in grid_cells:
        key = cell_key(cell.settings)
        entry = reference["cells"].get(key)
        if entry is None:
            raise HerobenchError(f"the reference has no cell {key}; run `python -m herobench.regression --update`")
        want = _settings_without_seed(cell.settings)
        have = _reference_settings(entry["settings"])
        precisions = want.get("precision", "fp32"), have.get("precision", "fp32")
        if precisions[0] != precisions[1]:
            raise HerobenchError(
                f"cell {key}: precision {precisions[0]} against a {precisions[1]} reference; a "
                "bf16 run is its own determinism class (other images): check it against a reference made in "
                "the same precision (--update --reference other.json), never the fp32 one")
        if have != want:
            raise HerobenchError(f"cell {key}: the grid's settings differ from the reference's "
                                 f"({settings_diff(want, have, ('grid', 'reference'))}); run --update")
    fingerprint = (reference.get("model") or {}).get("fingerprint")
    if fingerprint and fingerprint != model_fingerprint(resolve_model(grid_cells[0].settings.model)):
        echo("note: the model differs from the one the reference was made with; moved curves may come from it")
    echo(f"regression: running seeds {sorted({c.settings.seed for c in grid_cells})} into {out}")
    observed = _run_grid(spec, None, out, jobs, echo)
    wanted = {cell_key(c.settings) for c in grid_cells}
    ref_points = {k: v["points"] for k, v in reference["cells"].items() if k in wanted}
    rows = compare(ref_points, {k: mean_observation(list(v.values())) for k, v in observed.items()})
    alpha = float(reference.get("tolerance", {}).get("paired_alpha", RegressionOptions.paired_alpha))
    return paired_check(rows, ref_points, reference.get("reference_seeds", []), observed, alpha)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m herobench.regression",
        description="Run the regression slice of the benchmark grid and compare it with the reference.",
        epilog="examples:\n  python -m herobench.regression\n  python -m herobench.regression --jobs 2\n"
               "  python -m herobench.regression --update   # maintainers: rewrite the reference",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--grid", type=Path, default=None, help="grid file [benchmarks/grids/regression.toml]")
    ap.add_argument("--reference", type=Path, default=None, help="[results/regression/reference.json]")
    ap.add_argument("--out", type=Path, default=None,
                    help="keep the run folders here (finished cells are reused!) [a temporary folder]")
    ap.add_argument("--jobs", type=int, default=1, help="cells run in parallel [1]")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a [settings] key of the grid (repeatable)")
    ap.add_argument("--update", action="store_true", help="rerun the reference seeds and rewrite the reference")
    args = ap.parse_args(argv)
    from herobench.harness.bench import load_grid

    tmp = None
    try:
        grid = args.grid or _default_grid()
        reference_path = args.reference or _default_reference()
        spec = load_grid(grid, args.overrides)
        from_dict(RegressionOptions, spec.regression, "regression")  # fail early on a bad table
        out = args.out
        if out is None:
            tmp = tempfile.mkdtemp(prefix="herobench-regression-")
            out = Path(tmp)
        if args.update:
            update(spec, grid, reference_path, args.overrides, out, args.jobs)
            return 0
        rows = check(spec, load_reference(reference_path), out, args.jobs)
    except HerobenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(format_table(rows))
    bad = [r for r in rows if not r.ok]
    if bad:
        cells_moved = sorted({r.cell for r in bad})
        print(f"\nFAIL: {len(bad)} of {len(rows)} points outside tolerance or moved image by image "
              f"({', '.join(cells_moved)})")
        return 1
    print(f"\nPASS: {len(rows)} points within tolerance")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
