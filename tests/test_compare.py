"""``herobench compare``: the in-memory grid, its plan and measured estimate (``--dry-run``), and a tiny
comparison end to end through the bench grid runner and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tinysd import build_tiny_sd

from herobench.cli import main
from herobench.errors import ConfigError, UnknownNameError
from herobench.harness.bench import cells, plan
from herobench.harness.compare import Calibration, compare_grid, duration, estimate, recorded_ratios
from herobench.harness.progress import eval_points
from herobench.harness.runlog import cpu_model, read_jsonl

TINY = ["--set", "batch_size=4", "--set", "sampler.steps=3", "--set", "sampler.guidance_scale=2.0",
        "--set", "eval.n_images=8", "--set", "eval.every_labels=4", "--set", "eval.batch_size=8",
        "--set", "method_options.hero.encoder_epochs=3"]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    path = build_tiny_sd(tmp_path_factory.mktemp("tinyworld"), prediction_type="v_prediction", seed=3)
    (path / "herobench.json").write_text(json.dumps({"backend": "glyphworld", "sampler": {"steps": 3}}))
    return path


def _compare(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["compare", *args], catch_exceptions=False)
    return res.exit_code, res.output


def test_the_grid_is_task_by_methods_by_seeds_with_method_options_routed():
    spec = compare_grid("hand", ["hero", "ddpo", "pretrained"], 2, 16,
                        ["batch_size=4", "method_options.hero.encoder_epochs=3"])
    grid = cells(spec)
    assert [c.name for c in grid] == ["hand-hero-s0", "hand-hero-s1", "hand-ddpo-s0", "hand-ddpo-s1",
                                      "hand-pretrained-s0", "hand-pretrained-s1"]
    assert {c.settings.budget_labels for c in grid} == {16} and {c.settings.batch_size for c in grid} == {4}
    assert [c.settings.method_options for c in grid[:3]] == [{"encoder_epochs": 3}, {"encoder_epochs": 3}, {}]


@pytest.mark.parametrize("methods, seeds, sets, error, needle", [
    (["hero"], 0, [], ConfigError, "--seeds must be >= 1"),
    ([""], 1, [], ConfigError, "give at least one method"),
    (["hero"], 1, ["method_options.ddpo.lr=1"], ConfigError, "for one of hero"),
    (["hero", "hero"], 1, [], ConfigError, "lists a value twice"),
    (["hero"], 1, ["seed=3"], ConfigError, "the grid sets 'seed'"),
])
def test_bad_comparisons_are_refused_with_the_reason(methods, seeds, sets, error, needle):
    with pytest.raises(error, match=needle):
        compare_grid("hand", methods, seeds, 8, sets)


def test_an_unknown_method_gets_did_you_mean_before_anything_runs(tmp_path):
    with pytest.raises(UnknownNameError, match="did you mean 'ddpo'"):
        plan(compare_grid("hand", ["dpo"], 1, 8), tmp_path)
    code, out = _compare("--task", "hand", "--methods", "hero,dpo", "--out", str(tmp_path / "c"), "--dry-run")
    assert code == 2 and len(out.strip().splitlines()) == 1 and "did you mean 'ddpo'" in out, out
    assert not (tmp_path / "c").exists()


def test_eval_points_follow_the_runner_rule():
    assert eval_points(10, 4, 4) == [0, 4, 8, 10]
    assert eval_points(512, 64, 64) == [0, *range(64, 513, 64)]
    assert eval_points(100, 64, 64) == [0, 64, 100]
    assert eval_points(512, 64, 64, trains=False) == [0] and eval_points(0, 64, 64) == [0]


def test_the_estimate_counts_images_and_scales_learning_from_matching_finished_runs(tmp_path):
    spec = compare_grid("hand", ["ddpo", "pretrained"], 1, 8, ["batch_size=4", "sampler.steps=3"])
    rows = plan(spec, tmp_path)
    cal = Calibration(images=4, steps=3, seconds=1.2, load_seconds=2.0)  # 0.1 s per image-step
    est = estimate(rows, tmp_path, calibration=cal)
    ddpo, pre = est.methods
    # hand evaluates 128 images on one prompt set at labels 0, 8 (every_labels 64 > budget: the end only)
    assert (ddpo.sample_images, ddpo.eval_images, pre.sample_images, pre.eval_images) == (8, 256, 0, 128)
    assert ddpo.learn_ratio is None and ddpo.seconds == pytest.approx(2.0 + (8 + 256) * 3 * 0.1)
    # a finished ddpo run at the same sampler and batch on this CPU gives its learning / sampling ratio
    fake = tmp_path / "old" / "hand-ddpo-s9"
    fake.mkdir(parents=True)
    (fake / "summary.json").write_text(json.dumps({"method": "ddpo", "timings": {"sampling": 2.0, "learning": 3.0}}))
    (fake / "config.json").write_text(json.dumps({"environment": {"cpu": cpu_model()}, "sampler": {"steps": 3},
                                                  "settings": {"batch_size": 4}}))
    assert recorded_ratios([tmp_path / "old"], cpu_model()) == {("ddpo", 3, 4): [1.5]}
    assert recorded_ratios([tmp_path / "old"], "another cpu") == {}
    ddpo = estimate(rows, tmp_path, roots=[tmp_path / "old"], calibration=cal).methods[0]
    assert ddpo.learn_ratio == 1.5 and ddpo.seconds == pytest.approx(2.0 + (8 + 256) * 0.3 + 1.5 * 8 * 0.3)
    assert [duration(s) for s in (45, 720, 11_100)] == ["45 s", "12 min", "3 h 05 min"]


def test_dry_run_prints_the_plan_and_a_measured_estimate_and_runs_nothing(tiny_world, tmp_path):
    out = tmp_path / "cmp"
    code, text = _compare("--task", "hand", "--methods", "ddpo,pretrained", "--seeds", "2", "--budget", "8",
                          "--out", str(out), "--set", f"model={json.dumps(str(tiny_world))}", *TINY[:-2],
                          "--dry-run", "--jobs", "2")
    assert code == 0, text
    assert "compare hand: 1 tasks x 2 methods x 2 seeds = 4 cells" in text and "hand-ddpo-s1" in text
    assert "estimated time, measured here: 8 images sampled in" in text and "at 3 DDIM steps" in text
    assert "learning NOT included" in text and "at least" in text and "--jobs 2" in text
    assert not out.exists()


def test_a_tiny_comparison_runs_resumes_and_reports(tiny_world, tmp_path):
    out = tmp_path / "cmp"
    args = ["--task", "hand", "--methods", "hero,pretrained", "--seeds", "2", "--budget", "8", "--out", str(out),
            "--set", f"model={json.dumps(str(tiny_world))}", *TINY]
    code, text = _compare(*args)
    assert code == 0, text
    for name in ("hand-hero-s0", "hand-hero-s1", "hand-pretrained-s0", "hand-pretrained-s1"):
        assert (out / name / "summary.json").is_file(), text
    assert [e["labels"] for e in read_jsonl(out / "hand-hero-s1" / "evals.jsonl")] == [0, 4, 8]
    tables = out / "report" / "tables.md"
    assert f"{tables}:" in text and tables.read_text().strip().splitlines()[0] in text
    pngs = [line.removeprefix("curve: ") for line in text.splitlines() if line.startswith("curve: ")]
    assert pngs and all(Path(p).is_file() and p.endswith(".png") for p in pngs), text
    assert json.loads((out / "bench.json").read_text())["compare"]["methods"] == ["hero", "pretrained"]
    # rerunning is resuming: every cell is done, nothing is left to estimate or run
    code, again = _compare(*args, "--dry-run")
    assert code == 0 and "0 new, 0 partial, 4 done" in again and "nothing left to run" in again, again
