"""A report that cannot mislead (issue 28): one run per seed, skipped folders named, tables at the data's
own label counts, † only for runs that stopped before their own budget, labels-to-target only where a
curve crosses, and plots fitted to the data."""

import math
import os

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from herobench.cli import main
from herobench.errors import HerobenchError
from herobench.harness.plots import curve_bands, curves_figure, fitted_ylim, plot_curves
from herobench.harness.report import (
    labels_to_target,
    load_runs,
    paper_table,
    table_label_points,
    write_report,
)
from herobench.harness.report_runs import select_runs
from herobench.harness.runlog import RunDir, append_jsonl, write_json_atomic


def make_run(root, name, method="hero", seed=0, curve=((0, 0.1), (64, 0.3)), budget=64, complete=True,
             task="hand", extra_settings=None, n=128, interval=True):
    """A run folder: config.json, one evals.jsonl line per ``(labels, success)`` of ``curve`` (``n`` images
    each, a ±0.05 recorded interval unless ``interval`` is False) and, when ``complete``, summary.json."""
    rd = RunDir(root / name).create()
    settings = {"task": task, "method": method, "seed": seed, "budget_labels": budget, "model": "glyphworld",
                **(extra_settings or {})}
    write_json_atomic(rd.config_json, {"settings": settings, "environment": {}})
    for labels, rate in curve:
        band = {"lo": rate - 0.05, "hi": rate + 0.05} if interval else {}
        append_jsonl(rd.evals, {"labels": labels, "prompt_set": "eval", "success_rate": rate, "n": n, **band})
    if complete:
        write_json_atomic(rd.summary, {"labels": curve[-1][0]})
    return rd.path


# ------------------------------------------------------------------------------------------ duplicate seeds


def test_a_rerun_of_the_same_seed_is_reported_as_a_duplicate_never_averaged(tmp_path):
    runs = tmp_path / "runs"
    full = make_run(runs, "hand-hero-s0", curve=[(0, 0.1), (128, 0.3), (256, 0.5)], budget=256)
    quick = make_run(runs, "hand-hero-s0-2", curve=[(0, 0.1), (10, 0.9)], budget=10)
    lines = []
    written = write_report([full, quick], tmp_path / "rep", echo=lines.append)
    assert len(lines) == 1 and lines[0].startswith("duplicate seed: hand/glyphworld/default/hero seed 0")
    assert f"using {full} (complete, 256 of 256 labels)" in lines[0]
    assert f"left out {quick} (complete, 10 of 10 labels)" in lines[0]
    curves = pd.read_csv(written["curves.csv"])
    assert (curves["n_runs"] == 1).all() and curves["labels"].tolist() == [0, 128, 256]  # no 10-label zig-zag
    assert lines[0] in written["tables.md"].read_text()


def test_a_complete_duplicate_wins_over_an_incomplete_one_with_more_labels(tmp_path):
    done = make_run(tmp_path, "a", curve=[(0, 0.1), (64, 0.2)], budget=64)
    killed = make_run(tmp_path, "b", curve=[(0, 0.1), (64, 0.2), (128, 0.3)], budget=512, complete=False)
    sel = select_runs([killed, done])
    assert [base["path"] for base, _ in sel.parsed] == [str(done)]
    assert f"left out {killed} (incomplete, 128 of 512 labels)" in sel.notes[0]


def test_duplicates_with_other_settings_are_refused_naming_both(tmp_path):
    a = make_run(tmp_path, "hand-hero-s0")
    b = make_run(tmp_path, "hand-hero-s0-2", extra_settings={"rater": {"flip_rate": 0.1}})
    with pytest.raises(HerobenchError, match=r"hand-hero-s0 and .*hand-hero-s0-2 are both hand/hero seed 0 "
                                             r"but their settings differ \(rater: None vs \{'flip_rate'"):
        write_report([a, b], tmp_path / "rep")
    res = CliRunner().invoke(main, ["report", str(a), str(b), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "report them separately" in res.output


# ------------------------------------------------------------------------------------------ skipped folders


def test_every_skipped_folder_is_named_with_its_reason(tmp_path):
    runs = tmp_path / "runs"
    good = make_run(runs, "hand-hero-s0")
    (runs / "bench.json").write_text("{}")
    (runs / "failed").mkdir()
    empty = RunDir(runs / "hand-ddpo-s0").create()  # started: config.json, no evaluation yet
    write_json_atomic(empty.config_json, {"settings": {"task": "hand", "method": "ddpo", "budget_labels": 64}})
    broken = RunDir(runs / "hand-d3po-s0").create()
    broken.config_json.write_text("{not json")
    killed = make_run(runs, "hand-hero-s1", seed=1, curve=[(0, 0.1)], budget=64, complete=False)
    torn = make_run(runs, "hand-hero-s2", seed=2)
    RunDir(torn).evals.write_text('{"labels": 0, "success_rate": 0.1}\n{"labels": 64}\n')
    res = CliRunner().invoke(main, ["report", *sorted(str(p) for p in runs.iterdir())])
    assert res.exit_code == 0, res.output
    notes = [line for line in res.output.splitlines() if not line.startswith("wrote ")]
    assert notes == [
        f"skipped {runs / 'bench.json'}: a file, not a run folder",
        f"skipped {runs / 'failed'}: not a run folder (no config.json)",
        f"skipped {broken.path}: {broken.config_json}: not a valid run config (JSONDecodeError: Expecting "
        "property name enclosed in double quotes: line 1 column 2 (char 1))",
        f"skipped {empty.path}: no evaluations yet (no evals.jsonl lines)",
        f"skipped {torn}: {RunDir(torn).evals}: line 2 lacks 'labels' or 'success_rate'",
        f"incomplete: {killed} (incomplete, 0 of 64 labels) has no summary.json (stopped or still running); "
        "its evaluations so far are used",
    ]
    assert set(load_runs([good, killed])["run"]) == set(pd.read_csv(runs / "report" / "runs.csv")["run"])


def test_report_goes_beside_the_runs_and_skips_itself_the_next_time(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    make_run(runs, "hand-hero-s0")
    monkeypatch.chdir(tmp_path)
    lines = []
    written = write_report(sorted(runs.iterdir()), echo=lines.append)
    assert written["tables.md"].parent == runs.resolve() / "report" and lines == []
    assert not (tmp_path / "report").exists()  # not the current folder
    write_report(sorted(runs.iterdir()), echo=lines.append)  # runs/* now holds runs/report
    assert lines == [f"skipped {runs / 'report'}: the report's own output folder"]


def test_no_readable_run_and_a_missing_path_are_errors(tmp_path):
    (tmp_path / "stray").mkdir()
    with pytest.raises(HerobenchError, match=r"none of the 1 given folder\(s\) holds a run with evaluations "
                                             r"\(skipped .*stray: not a run folder \(no config.json\)\)"):
        write_report([tmp_path / "stray"], tmp_path / "rep")
    with pytest.raises(HerobenchError, match=r"not a run folder: .*ghost \(no such folder\)"):
        write_report([make_run(tmp_path, "r"), tmp_path / "ghost"], tmp_path / "rep")


# ------------------------------------------------------------------------------------------ tables


def test_tables_are_at_the_runs_own_budgets_and_dagger_marks_only_early_stops(tmp_path):
    short = make_run(tmp_path, "hand-ddpo-s0", "ddpo", curve=[(0, 0.1), (64, 0.2)], budget=64)
    long = make_run(tmp_path, "hand-hero-s0", curve=[(0, 0.1), (64, 0.3), (128, 0.4), (256, 0.6)], budget=256)
    killed = make_run(tmp_path, "hand-hero-s1", seed=1, curve=[(0, 0.1), (64, 0.2), (128, 0.5)], budget=256,
                      complete=False)
    base = make_run(tmp_path, "hand-pretrained-s0", "pretrained", curve=[(0, 0.1)], budget=256)
    df = load_runs([short, long, killed, base])
    assert table_label_points(df) == [64, 256]  # from the data: no fixed 512
    at64, at256 = paper_table(df, 64), paper_table(df, 256)
    assert "†" not in at64  # every run reached 64 labels (or spends none)
    assert "| ddpo | 0.200 n=1 |" in at64 and "| hero | 0.250 (0.071) n=2 |" in at64
    assert "| ddpo |" not in at256  # finished its 64-label budget: in its own table only
    assert "| pretrained | 0.100 n=1 |" in at256  # spends no labels: its single evaluation, never †
    assert "| hero | 0.550 (0.071) † n=2 |" in at256
    assert "† hand hero seed 1: stopped at 128 of its 256 labels (value at 128)" in at256
    text = write_report([short, long, killed, base], tmp_path / "rep", echo=lambda _: None)["tables.md"]
    headings = [line for line in text.read_text().splitlines() if line.startswith("## At")]
    assert headings == ["## At 64 labels", "## At 256 labels"]


# ------------------------------------------------------------------------------------------ labels to target


def test_labels_to_target_only_where_the_curve_crosses(tmp_path):
    runs = [make_run(tmp_path, "h0", seed=0, curve=[(0, 0.2), (64, 0.4), (128, 0.6)], budget=128),
            make_run(tmp_path, "h1", seed=1, curve=[(0, 0.2), (64, 0.55), (128, 0.7)], budget=128),
            make_run(tmp_path, "d0", "ddpo", curve=[(0, 0.2), (64, 0.6)]),  # one seed
            make_run(tmp_path, "k0", "d3po", curve=[(0, 0.2), (64, 0.3)]),  # never crosses
            make_run(tmp_path, "g0", "dreambooth", curve=[(0, 0.6), (64, 0.7)])]  # already there at start
    t = labels_to_target(load_runs(runs), 0.5, n_boot=500).set_index("method")
    hero = t.loc["hero"]
    assert (hero.n_reached, hero.labels_mean, hero.note) == (2, 96.0, "")
    assert 64 <= hero.ci_lo < hero.ci_hi <= 128  # an interval from the two seeds
    ddpo = t.loc["ddpo"]
    assert ddpo.labels_mean == 64 and math.isnan(ddpo.ci_lo) and math.isnan(ddpo.ci_hi)
    assert ddpo.note == "one seed: no interval"
    assert math.isnan(t.loc["d3po", "labels_mean"]) and t.loc["d3po", "note"] == "1 of 1 run(s) never reached it"
    assert math.isnan(t.loc["dreambooth", "labels_mean"])
    assert t.loc["dreambooth", "note"] == "1 of 1 run(s) started at or above it"


# ------------------------------------------------------------------------------------------ plots


def _flat_runs(tmp_path, methods=("hero", "ddpo")):
    runs = [make_run(tmp_path, f"{m}-s{s}", m, s, curve=[(0, 0.48), (64, 0.45 + 0.02 * s), (128, 0.52)])
            for m in methods for s in (0, 1)]
    return load_runs(runs)


def test_the_y_axis_is_fitted_to_the_data_and_the_target_is_drawn(tmp_path):
    fig = curves_figure(_flat_runs(tmp_path), title="hand", target=0.5)
    (ax,) = [a for a in fig.axes if a.get_visible()]
    lo, hi = ax.get_ylim()
    assert 0.3 < lo <= 0.45 and 0.52 <= hi < 0.7  # not 0-1: the 0.45-0.52 range fills the axes
    assert any(list(line.get_ydata()) == [0.5, 0.5] and line.get_label() == "target 0.5" for line in ax.lines)
    assert ax.get_legend() is None and len(fig.legends) == 1  # the legend is outside the axes
    assert fig.get_suptitle() == "hand" and ax.get_title() == ""  # the title once
    assert len(ax.collections) == 2  # one band per method


def test_fitted_ylim_keeps_a_minimum_span_inside_zero_one():
    assert fitted_ylim(np.array([0.5, 0.5])) == pytest.approx((0.45, 0.55))
    lo, hi = fitted_ylim(np.array([0.0, 0.02, np.nan]))
    assert lo == 0.0 and hi == pytest.approx(0.1)
    assert fitted_ylim(np.array([0.97, 1.0]))[1] == 1.0


def test_ten_methods_become_small_multiples(tmp_path):
    methods = [f"m{i}" for i in range(10)]
    fig = curves_figure(_flat_runs(tmp_path, methods), title="hand", target=0.5)
    shown = [a for a in fig.axes if a.get_visible()]
    assert sorted(a.get_title() for a in shown) == sorted(f"{m} (2 seeds)" for m in methods)
    assert len({a.get_ylim() for a in shown}) == 1  # one y scale: panels compare by eye


def test_one_seed_has_the_wilson_interval_of_its_images(tmp_path):
    recorded = load_runs([make_run(tmp_path, "a", curve=[(0, 0.5), (64, 0.6)])])
    bands = curve_bands(recorded)
    assert bands["band_lo"].tolist() == pytest.approx([0.45, 0.55]) and set(bands["band"]) == {"95 % Wilson (one seed)"}
    unrecorded = load_runs([make_run(tmp_path, "b", curve=[(0, 0.5), (64, 0.6)], n=100, interval=False)])
    from herobench.stats import wilson_interval

    assert curve_bands(unrecorded)[["band_lo", "band_hi"]].iloc[0].tolist() == pytest.approx(wilson_interval(50, 100))
    several = curve_bands(_flat_runs(tmp_path / "c"))
    row = several[(several.method == "hero") & (several.labels == 64)].iloc[0]
    assert (row.band_lo, row.band_hi, row.band) == (pytest.approx(0.45), pytest.approx(0.47), "min–max over seeds")


def test_plot_curves_writes_a_png(tmp_path):
    path = plot_curves(_flat_runs(tmp_path), tmp_path / "plots" / "hand.png", title="hand", target=0.5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 5_000


def test_a_seed_that_stopped_early_shows_in_the_seed_count(tmp_path):
    runs = [make_run(tmp_path, "a", seed=0, curve=[(0, 0.5), (64, 0.6), (128, 0.6)], budget=128),
            make_run(tmp_path, "b", seed=1, curve=[(0, 0.5), (64, 0.55)], budget=128, complete=False)]
    fig = curves_figure(load_runs(runs), title="hand")
    assert fig.legends[0].get_texts()[0].get_text() == "hero (1–2 seeds)"


# ------------------------------------------------------------------------------------------ kept records


def test_kept_records_make_the_same_report_without_the_run_folders_and_grow_with_new_runs(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "results"
    make_run(runs, "hand-hero-s0", curve=((0, 0.1), (64, 0.3)))
    make_run(runs, "hand-pretrained-s0", method="pretrained", curve=((0, 0.1),), budget=0)
    # checkpoints/ (RunDir.create makes it) is what a record must not carry
    (runs / "hand-hero-s0" / "checkpoints" / "step.ckpt").write_bytes(b"x" * 100)
    r = CliRunner().invoke(main, ["report", str(runs / "hand-hero-s0"), str(runs / "hand-pretrained-s0"),
                                  "--out", str(out), "--keep-records"])
    assert r.exit_code == 0, r.output
    first = (out / "runs.csv").read_text()
    record = out / "records" / "hand-hero-s0"
    assert sorted(p.name for p in record.iterdir()) == ["config.json", "evals.jsonl", "summary.json"]
    assert record.joinpath("evals.jsonl").read_bytes() == (runs / "hand-hero-s0" / "evals.jsonl").read_bytes()

    import shutil

    shutil.rmtree(runs)  # a new machine: only the committed results folder is left
    make_run(runs, "hand-hero-s1", seed=1, curve=((0, 0.1), (64, 0.5)))
    records = sorted(str(p) for p in (out / "records").iterdir())
    r = CliRunner().invoke(main, ["report", *records, str(runs / "hand-hero-s1"), "--out", str(out),
                                  "--keep-records"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out / "runs.csv")
    assert sorted(set(df["seed"][df["method"] == "hero"])) == [0, 1]
    old = pd.read_csv(pd.io.common.StringIO(first))
    both = df[df["seed"] == 0].drop(columns=["run", "path"], errors="ignore").reset_index(drop=True)
    assert both.equals(old.drop(columns=["run", "path"], errors="ignore").reset_index(drop=True))
    assert (out / "records" / "hand-hero-s1" / "summary.json").is_file()


def test_a_record_of_a_run_left_out_is_kept_and_named_and_name_clashes_are_refused(tmp_path):
    out = tmp_path / "results"
    a = make_run(tmp_path / "a", "hand-hero-s0")
    make_run(tmp_path / "a", "old-run", seed=5)
    write_report([a, tmp_path / "a" / "old-run"], out, keep=True, echo=lambda m: None)
    notes = []
    write_report([a], out, keep=True, echo=notes.append)
    assert any("records/old-run" in n and "not deleted" in n for n in notes)
    assert (out / "records" / "old-run" / "config.json").is_file()
    b = make_run(tmp_path / "b", "hand-hero-s0", task="counting")
    with pytest.raises(HerobenchError, match="same folder name 'hand-hero-s0'"):
        write_report([a, b], out, keep=True, echo=lambda m: None)
