import json
import math

import numpy as np
import pandas as pd
import pytest

from herobench.errors import HerobenchError
from herobench.harness.report import (
    curve_table,
    labels_ratio,
    labels_to_target,
    load_prompt_counts,
    load_runs,
    paper_table,
    plot_curves,
    value_at,
    write_report,
)
from herobench.harness.runlog import RunDir, append_jsonl, write_json_atomic


def fake_run(root, name, method, seed, curve, task="hand", profile="default", budget=192):
    rd = RunDir(root / name).create()
    settings = {"task": task, "method": method, "seed": seed, "budget_labels": budget, "model": "glyphworld",
                "rater": {"profile": profile}}  # fmt: skip
    write_json_atomic(rd.config_json, {"settings": settings, "environment": {}})
    for i, (labels, rate) in enumerate(curve):
        n = 128
        append_jsonl(rd.evals, {"labels": labels, "iteration": i, "prompt_set": "eval", "success_rate": rate,
                                "lo": rate - 0.05, "hi": rate + 0.05, "n": n, "unreadable_rate": 0.0,
                                "mean_score": rate})  # fmt: skip
    return rd.path


@pytest.fixture
def runs(tmp_path):
    return [
        fake_run(tmp_path, "hand-hero-s0", "hero", 0, [(0, 0.1), (64, 0.3), (128, 0.5), (192, 0.6)]),
        fake_run(tmp_path, "hand-hero-s1", "hero", 1, [(0, 0.1), (64, 0.2), (128, 0.4), (192, 0.7)]),
        fake_run(tmp_path, "hand-pretrained-s0", "pretrained", 0, [(0, 0.12)], budget=0),
    ]


def test_a_method_that_spends_no_labels_is_never_short(tmp_path):
    # a grid records its budget for every cell, pretrained included; that run still spends none
    df = load_runs([fake_run(tmp_path, "hand-pretrained-s0", "pretrained", 0, [(0, 0.12)], budget=1152),
                    fake_run(tmp_path, "hand-hero-s0", "hero", 0, [(0, 0.1), (64, 0.2)], budget=1152)])
    at = value_at(df, 512).set_index("method")
    assert not at.loc["pretrained", "short"] and at.loc["hero", "short"]


def test_load_runs_is_tidy(runs):
    df = load_runs(runs)
    assert len(df) == 9
    assert {
        "run",
        "task",
        "method",
        "seed",
        "labels",
        "success_rate",
        "lo",
        "hi",
        "n_images",
        "prompt_set",
    } <= set(df.columns)
    hero1 = df[(df.method == "hero") & (df.seed == 1)]
    assert hero1.labels.tolist() == [0, 64, 128, 192] and hero1.success_rate.tolist() == [0.1, 0.2, 0.4, 0.7]
    assert set(df.run) == {"hand-hero-s0", "hand-hero-s1", "hand-pretrained-s0"}
    assert (df.n_images == 128).all() and (df.prompt_set == "eval").all() and (df.profile == "default").all()


def test_curve_table_mean_std_over_seeds(runs):
    t = curve_table(load_runs(runs))
    row = t[(t.method == "hero") & (t.labels == 128)].iloc[0]
    assert row["mean"] == pytest.approx(0.45) and row["std"] == pytest.approx(np.std([0.5, 0.4], ddof=1))
    assert (row["min"], row["max"], row["n_runs"]) == (0.4, 0.5, 2)
    base = t[t.method == "pretrained"]
    assert len(base) == 1 and base.iloc[0]["n_runs"] == 1 and math.isnan(base.iloc[0]["std"])


def test_profiles_are_not_averaged_together(tmp_path):
    a = fake_run(tmp_path, "g", "hero", 0, [(0, 0.2)], task="mountain", profile="green")
    b = fake_run(tmp_path, "s", "hero", 0, [(0, 0.8)], task="mountain", profile="snowy")
    t = curve_table(load_runs([a, b]))
    assert sorted(t["mean"]) == [0.2, 0.8]


def test_profile_resolved_by_the_runner_wins(tmp_path):
    path = fake_run(tmp_path, "m", "hero", 0, [(0, 0.2)], task="mountain")
    rd = RunDir(path)
    config = json.loads(rd.config_json.read_text())
    write_json_atomic(rd.config_json, {**config, "oracle": {"profile": "green"}})
    assert load_runs([path]).profile.tolist() == ["green"]


def test_plot_curves_writes_png(runs, tmp_path):
    out = plot_curves(load_runs(runs), tmp_path / "plots" / "hand.png", title="hand")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    with pytest.raises(HerobenchError, match="no evaluations"):
        plot_curves(load_runs([]), tmp_path / "empty.png")


def test_labels_to_target_with_bootstrap_ci(runs):
    df = load_runs(runs)
    t = labels_to_target(df, 0.5, n_boot=500, seed=0)
    hero = t[t.method == "hero"].iloc[0]
    # seed 0 reaches 0.5 at 128 labels, seed 1 at 192
    assert (hero.n_runs, hero.n_reached, hero.labels_mean) == (2, 2, 160.0)
    assert 128 <= hero.ci_lo <= hero.labels_mean <= hero.ci_hi <= 192
    assert t.equals(labels_to_target(df, 0.5, n_boot=500, seed=0))  # seeded: reproducible
    base = t[t.method == "pretrained"].iloc[0]
    assert (base.n_reached, math.isnan(base.labels_mean)) == (0, True)
    t2 = labels_to_target(df, 0.65)
    hero2 = t2[t2.method == "hero"].iloc[0]
    assert hero2.n_reached == 1 and math.isnan(hero2.labels_mean)  # not every seed got there
    t3 = labels_to_target(df, 0.1)  # both seeds start at 0.1: nothing was learned to get there
    hero3 = t3[t3.method == "hero"].iloc[0]
    assert (hero3.n_reached, math.isnan(hero3.labels_mean), math.isnan(hero3.ci_lo)) == (0, True, True)
    assert hero3.note == "2 of 2 run(s) started at or above it"


def test_labels_ratio_against_hero_with_its_interval_and_censored_bounds(tmp_path):
    # HERO reaches 0.5 at 128 and 192 labels (mean 160); D3PO at 512 and 768 (mean 640): ratio 4.0, the
    # paper's claim. Its stratified-bootstrap interval, recomputed here by enumeration: each side's mean over
    # 2 resampled seeds takes its 3 values with probabilities 1/4, 1/2, 1/4, so the ratio's support is
    # {512, 640, 768} / {128, 160, 192} and the 95 % interval lies inside [512/192, 768/128].
    def curve(at):
        return [(0, 0.1), *((x, 0.3) for x in range(128, at, 128)), (at, 0.6)]

    runs = [fake_run(tmp_path, "h-hero-s0", "hero", 0, curve(128), budget=768),
            fake_run(tmp_path, "h-hero-s1", "hero", 1, curve(192), budget=768),
            fake_run(tmp_path, "h-d3po-s0", "d3po", 0, curve(512), budget=768),
            fake_run(tmp_path, "h-d3po-s1", "d3po", 1, curve(768), budget=768),
            fake_run(tmp_path, "h-ddpo-s0", "ddpo", 0, curve(256), budget=768),
            fake_run(tmp_path, "h-ddpo-s1", "ddpo", 1, [(0, 0.1), (384, 0.3), (768, 0.4)], budget=768)]
    df = load_runs(runs)
    r = labels_ratio(df, 0.5, n_boot=4000, seed=0).set_index("method")
    d3po = r.loc["d3po"]
    assert (d3po.labels_mean, d3po.ref_labels_mean, d3po.ratio, d3po.bound) == (640.0, 160.0, 4.0, "")
    assert 512 / 192 <= d3po.ci_lo < 4.0 < d3po.ci_hi <= 768 / 128
    support = sorted({a / b for a in (512, 640, 768) for b in (128, 160, 192)})
    assert d3po.ci_lo in support and d3po.ci_hi in support  # percentiles of a discrete distribution
    # DDPO's seed 1 never reached 0.5 within 768 labels: it counts at 768, and the ratio is a lower bound
    ddpo = r.loc["ddpo"]
    assert (ddpo.n_reached, ddpo.labels_mean, ddpo.bound) == (1, 512.0, "lower") and ddpo.ratio == 512 / 160
    assert "never reached" in ddpo.note
    assert r.equals(labels_ratio(df, 0.5, n_boot=4000, seed=0).set_index("method"))  # seeded
    assert labels_ratio(df, 0.5, reference="nobody").empty


def test_write_report(runs, tmp_path):
    written = write_report(iter(runs), tmp_path / "report", targets=[0.5])  # any iterable, read twice
    assert {"runs.csv", "curves.csv", "curves_hand.png", "labels_to_target.csv", "labels_ratio.csv", "tables.md"} <= set(written)
    assert "prompts.csv" not in written  # these runs recorded no per-prompt counts
    assert "## At 192 labels" in written["tables.md"].read_text()  # the runs' own budget, not a fixed 512
    assert len(pd.read_csv(written["runs.csv"])) == 9
    assert len(pd.read_csv(written["curves.csv"])) == 5
    assert written["curves_hand.png"].read_bytes()[:4] == b"\x89PNG"
    try:
        import pyarrow  # noqa: F401

        assert written["runs.parquet"].exists()
    except ImportError:
        assert "runs.parquet" not in written


def test_not_a_run_dir_is_named(tmp_path, runs):
    (tmp_path / "stray").mkdir()
    with pytest.raises(HerobenchError, match=r"not a run folder: .*stray \(no config.json\)"):
        load_runs([*runs, tmp_path / "stray"])
    with pytest.raises(HerobenchError, match=r"not a run folder: .*ghost \(no such folder\)"):
        load_runs([tmp_path / "ghost"])
    bad = RunDir(tmp_path / "bad").create()
    bad.config_json.write_text(json.dumps({"nosettings": 1}))
    with pytest.raises(HerobenchError, match=r"bad/config.json: not a valid run config"):
        load_runs([bad.path])


def test_torn_and_malformed_eval_lines(runs):
    evals = RunDir(runs[0]).evals
    with evals.open("a") as fh:
        fh.write('{"labels": 256, "succ')  # a run killed mid-write: ignored
    assert len(load_runs(runs)) == 9
    evals.write_text('{"labels": 0, "success_rate": 0.1}\n{"labels": 64}\n')
    with pytest.raises(HerobenchError, match=r"evals.jsonl: line 2 lacks 'labels' or 'success_rate'"):
        load_runs(runs)


def test_paper_table_layout_mean_std_and_short_runs(tmp_path, runs):
    runs = [*runs, fake_run(tmp_path, "hand-hero-s2", "hero", 2, [(0, 0.1), (64, 0.5)]),  # killed early
            fake_run(tmp_path, "mountain-hero-s0", "hero", 0, [(0, 0.2), (128, 0.6)], task="mountain",
                     profile="snowy")]
    df = load_runs(runs)
    at = value_at(df, 128)
    s2 = at[(at.method == "hero") & (at.seed == 2) & (at.task == "hand")].iloc[0]
    assert (s2.labels, s2.success_rate, bool(s2.short)) == (64, 0.5, True)
    assert not at[at.method == "pretrained"].short.any()  # spends no labels: never "short"
    table = paper_table(df, 128).splitlines()
    assert table[0] == "| method | hand | mountain (snowy) |"
    assert table[2].startswith("| pretrained | 0.120 n=1 | — |")  # baselines first (Table 2's order)
    hero = [0.5, 0.4, 0.5]  # seeds 0 and 1 at 128 labels, seed 2 at its last point (64)
    assert table[3] == (f"| hero | {np.mean(hero):.3f} ({np.std(hero, ddof=1):.3f}) † n=3 | 0.600 n=1 |")
    assert "(no evaluations" in paper_table(df, 128, prompt_set="train")


def _run_with_prompt_counts(root, name, method, seed, per_prompt_by_labels):
    rd = RunDir(root / name).create()
    settings = {"task": "counting", "method": method, "seed": seed, "budget_labels": 64}
    write_json_atomic(rd.config_json, {"settings": settings, "environment": {}})
    for labels, per_prompt in per_prompt_by_labels:
        n = sum(c["n"] for c in per_prompt.values())
        k = sum(c["successes"] for c in per_prompt.values())
        append_jsonl(rd.evals, {"labels": labels, "prompt_set": "eval", "success_rate": k / n, "n": n,
                                "per_prompt": per_prompt})  # fmt: skip
    return rd.path


def test_per_prompt_counts_become_prompts_csv(tmp_path):
    two = {"a photo of two cups": {"n": 3, "successes": 1, "unreadable": 0},
           "a photo of three cups": {"n": 2, "successes": 2, "unreadable": 1}}  # fmt: skip
    runs = [
        _run_with_prompt_counts(tmp_path, "counting-hero-s0", "hero", 0, [(0, two), (64, two)]),
        fake_run(tmp_path, "counting-ddpo-s0", "ddpo", 0, [(0, 0.4)], task="counting"),  # older: no counts
    ]
    df = load_prompt_counts(runs)
    assert len(df) == 4 and set(df.method) == {"hero"} and df.labels.tolist() == [0, 0, 64, 64]
    row = df[(df.labels == 64) & (df.prompt == "a photo of three cups")].iloc[0]
    assert (row.n, row.successes, row.unreadable, row.task, row.seed) == (2, 2, 1, "counting", 0)
    written = write_report(runs, tmp_path / "report")
    assert pd.read_csv(written["prompts.csv"]).equals(df.astype({"path": str}))


def test_malformed_per_prompt_is_named(tmp_path):
    bad = _run_with_prompt_counts(tmp_path, "counting-hero-s0", "hero", 0,
                                  [(0, {"a photo of two cups": {"n": 3, "successes": 1, "unreadable": 0}})])
    append_jsonl(RunDir(bad).evals, {"labels": 64, "success_rate": 0.5, "per_prompt": {"two cups": {"n": 2}}})
    with pytest.raises(HerobenchError, match=r"line 2 has a malformed 'per_prompt'"):
        load_prompt_counts([bad])


def _run_with_images(root, name, method, seed, bits_by_labels, eval_seed=10000, cpu=None):
    rd = RunDir(root / name).create()
    settings = {"task": "blue-rose", "method": method, "seed": seed, "budget_labels": 64,
                "eval": {"n_images": 8, "seed": eval_seed}}
    environment = {} if cpu is None else {"cpu_capability": cpu}
    write_json_atomic(rd.config_json, {"settings": settings, "sampler": {"steps": 50}, "environment": environment})
    for labels, bits in bits_by_labels:
        append_jsonl(rd.evals, {"labels": labels, "prompt_set": "eval", "success_rate": bits.count("1") / len(bits),
                                "n": len(bits), "successes": bits})  # fmt: skip
    return rd.path


def test_paired_csv_counts_images_gained_and_lost(tmp_path):
    from herobench.harness.report import _read_run, paired_frame

    start = "00001111"
    runs = [
        _run_with_images(tmp_path, "br-pretrained-s0", "pretrained", 0, [(0, start)]),
        _run_with_images(tmp_path, "br-ddpo-s0", "ddpo", 0, [(0, start), (64, "11100111")]),  # +3 -1
        _run_with_images(tmp_path, "br-ddpo-s1", "ddpo", 1, [(0, start), (64, "11111111")]),  # +4 -0
        _run_with_images(tmp_path, "br-hero-s0", "hero", 0, [(0, start), (64, "01111111")]),
        # other evaluation noises: never paired with the rest
        _run_with_images(tmp_path, "br-d3po-s0", "d3po", 0, [(0, start), (64, "11111111")], eval_seed=5),
    ]
    df = paired_frame([_read_run(p) for p in runs])
    row = df[(df.method == "ddpo") & (df.seed == 0) & (df.reference == "start")].iloc[0]
    assert (row.gained, row.lost, row.n) == (3, 1, 8) and row.p_mcnemar == pytest.approx(10 / 16)
    vs_hero = df[(df.method == "ddpo") & (df.seed == 0) & (df.reference == "hero")].iloc[0]
    assert (vs_hero.gained, vs_hero.lost) == (1, 2)  # 01111111 -> 11100111
    pooled = df[(df.method == "ddpo") & (df.seed == -1) & (df.reference == "start")].iloc[0]
    assert (pooled.gained, pooled.lost) == (7, 1) and pooled.p_mcnemar == pytest.approx(2 * 9 / 256)
    d3po = df[df.method == "d3po"]
    assert set(d3po.reference) == {"start"}  # its own start only: the others' images are not its images
    written = write_report(runs, tmp_path / "report")
    assert "paired.csv" in written and "+7/−1" in written["tables.md"].read_text()


def test_runs_on_two_cpu_capabilities_are_marked_and_their_rounding_noise_measured(tmp_path):
    from herobench.harness.report import _read_run, cpu_notes, paired_frame

    runs = [  # the untrained model's images on AVX2 differ from AVX512's on 1 of 8 (rounding)
        _run_with_images(tmp_path, "br-hero-s0", "hero", 0, [(0, "00001111"), (64, "01111111")], cpu="AVX512"),
        _run_with_images(tmp_path, "br-hero-s1", "hero", 1, [(0, "00001111"), (64, "00111111")], cpu="AVX512"),
        _run_with_images(tmp_path, "br-ddpo-s0", "ddpo", 0, [(0, "00001111"), (64, "11100111")], cpu="AVX2"),
        _run_with_images(tmp_path, "br-ddpo-s1", "ddpo", 1, [(0, "00001111"), (64, "11111111")], cpu="AVX2"),
        _run_with_images(tmp_path, "br-grpo-s0", "grpo", 0, [(0, "10001111"), (64, "11111111")], cpu="AVX2"),
        _run_with_images(tmp_path, "br-grpo-s1", "grpo", 1, [(0, "00001111"), (64, "11111111")], cpu="AVX512"),
    ]
    parsed = [_read_run(p) for p in runs]
    df = paired_frame(parsed)
    ddpo = df[(df.method == "ddpo") & (df.seed == 0)].set_index("reference")
    assert bool(ddpo.loc["start", "same_cpu"]) and not bool(ddpo.loc["hero", "same_cpu"])
    grpo = df[(df.method == "grpo") & (df.reference == "hero")].set_index("seed")
    assert not bool(grpo.loc[0, "same_cpu"]) and bool(grpo.loc[1, "same_cpu"]) and not bool(grpo.loc[-1, "same_cpu"])
    # 6 starts, 3 per capability: AVX512 x AVX512 3 pairs agree, AVX2 x AVX2 3 pairs of which grpo-s0 differs
    # from both ddpo starts by 1 image; across, 9 pairs of which the 3 with grpo-s0 differ by 1
    (line,) = cpu_notes(parsed)
    assert "AVX2 and AVX512" in line and "across capabilities on 3 of 72 image pairs (4.2%)" in line
    assert "on one capability on 2 of 48." in line
    tables = write_report(runs, tmp_path / "report")["tables.md"].read_text()
    assert "## CPU capabilities" in tables and " ‡" in tables
    same = [_read_run(p) for p in runs[:2]]
    assert cpu_notes(same) == [] and "## CPU capabilities" not in write_report(runs[:2], tmp_path / "r2")[
        "tables.md"].read_text()


def test_aggregates_iqm_and_probability_of_improvement(runs, tmp_path):
    from herobench.harness.report import aggregate_frame

    df = load_runs(runs)
    agg = aggregate_frame(df, 128, reps=200)
    hero = agg[(agg.method == "hero") & (agg.reference == "")].iloc[0]
    assert hero.iqm == pytest.approx(0.45) and hero.runs == 2 and hero.iqm_lo <= 0.45 <= hero.iqm_hi
    vs = agg[(agg.method == "hero") & (agg.reference == "pretrained")].iloc[0]
    assert vs.p_improvement == 1.0  # both HERO seeds (0.5, 0.4) above the untrained 0.12
    assert "aggregates.csv" in write_report(runs, tmp_path / "rep")
