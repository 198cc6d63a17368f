"""The regression check: tolerances from seed variance, the comparator on synthetic curves, and end to end
on a tiny model: a reference from normal runs passes, a deliberately perturbed method is caught."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch
from tinysd import build_tiny_sd

from herobench import regression
from herobench.methods import METHODS
from herobench.methods.hero import HeroMethod
from herobench.oracles import ORACLES
from herobench.regression import (
    Row,
    binomial_floor,
    compare,
    format_table,
    paired_check,
    reference_points,
    tolerance,
)
from herobench.types import Verdict

# ---------------------------------------------------------------------------------- pure functions


def test_tolerance_is_k_std_or_the_binomial_floor():
    assert binomial_floor(0.5, 64, 1.0) == pytest.approx(math.sqrt((33 / 66) * (33 / 66) / 64))
    assert binomial_floor(0.0, 64, 1.0) > 0  # smoothed: never zero, even when every seed gave 0 %
    assert binomial_floor(0.3, 64, 0.0) == 0.0
    spread = [0.2, 0.4, 0.6]  # std (ddof 1) = 0.2
    assert tolerance(spread, 64, k=3.0, z_floor=1.0) == pytest.approx(0.6)
    agree = [0.5, 0.5, 0.5]
    assert tolerance(agree, 64, k=3.0, z_floor=1.0) == pytest.approx(binomial_floor(0.5, 64, 1.0))
    assert tolerance([0.5], 64, k=3.0, z_floor=2.0) == pytest.approx(binomial_floor(0.5, 64, 2.0))


def _obs(**points):
    return {p: {"value": v, "n": 64} for p, v in points.items()}


def test_reference_points_store_mean_std_and_tolerance():
    runs = [_obs(**{"success/eval@0": 0.1, "good_rate": 0.2}), _obs(**{"success/eval@0": 0.3, "good_rate": 0.2})]
    ref = reference_points(runs, k=3.0, z_floor=1.0)
    assert list(ref) == ["success/eval@0", "good_rate"]
    p = ref["success/eval@0"]
    assert p["mean"] == pytest.approx(0.2) and p["std"] == pytest.approx(math.sqrt(0.02)) and p["n"] == 64
    assert p["tol"] == pytest.approx(3 * math.sqrt(0.02)) and p["values"] == [0.1, 0.3]
    with pytest.raises(Exception, match="different points"):
        reference_points([_obs(**{"success/eval@0": 0.1}), _obs(**{"success/eval@32": 0.1})], 3.0, 1.0)


REF = {
    "hand/hero": {
        "success/eval@0": {"mean": 0.10, "tol": 0.05},
        "success/eval@64": {"mean": 0.50, "tol": 0.10},
        "good_rate": {"mean": 0.30, "tol": 0.05},
    },
    "hand/pretrained": {"success/eval@0": {"mean": 0.10, "tol": 0.05}},
}


def test_compare_passes_within_tolerance_and_flags_a_moved_point():
    same = {"hand/hero": {"success/eval@0": 0.12, "success/eval@64": 0.41, "good_rate": 0.30},
            "hand/pretrained": {"success/eval@0": 0.10}}
    rows = compare(REF, same)
    assert len(rows) == 4 and all(r.ok for r in rows)
    moved = {**same, "hand/hero": {**same["hand/hero"], "success/eval@64": 0.35}}  # 0.15 below, tol 0.10
    rows = compare(REF, moved)
    bad = [r for r in rows if not r.ok]
    assert [(r.cell, r.point, r.status) for r in bad] == [("hand/hero", "success/eval@64", "MOVED")]
    assert bad[0].delta == pytest.approx(-0.15)
    # exactly at the tolerance is still within it
    edge = {**same, "hand/hero": {**same["hand/hero"], "success/eval@64": 0.60}}
    assert all(r.ok for r in compare(REF, edge))


def test_compare_flags_missing_and_unexpected_points_and_cells():
    obs = {"hand/hero": {"success/eval@0": 0.1, "success/eval@32": 0.2, "good_rate": 0.3}}
    status = {(r.cell, r.point): r.status for r in compare(REF, obs)}
    assert status[("hand/hero", "success/eval@64")] == "missing"
    assert status[("hand/hero", "success/eval@32")] == "unexpected"
    assert status[("hand/pretrained", "success/eval@0")] == "missing"  # the whole cell failed to run
    table = format_table(compare(REF, obs))
    assert "missing" in table and "unexpected" in table and "± tol" in table.splitlines()[0]


def test_table_shows_reference_tolerance_observed_and_delta():
    line = format_table([Row("hand/hero", "success/eval@64", 0.5, 0.1, 0.35, "MOVED")]).splitlines()[-1]
    assert line.split()[1:] == ["success/eval@64", "0.500", "0.100", "0.350", "-0.150", "-", "MOVED"]


def test_paired_check_fails_a_one_way_move_inside_the_tolerance():
    """Issue 25, item 7: 8 of 64 images turned bad -> good against the same seed's reference, none the other
    way (exact McNemar p = 2·0.5^8 = 0.0078): inside a ±0.13 tolerance, but a significant paired move."""
    ref_bits = ["0" * 32 + "1" * 32, "1" * 64]  # seeds 0 and 1
    moved = "1" * 8 + "0" * 24 + "1" * 32
    noisy = "1" * 3 + "0" * 29 + "0" * 3 + "1" * 29  # 3 gained, 3 lost: float noise, not a move
    reference = {"c": {"success/eval@8": {"mean": 0.5, "tol": 0.13, "bits": ref_bits}}}
    for bits, status, note in ((moved, "MOVED (paired)", "+8/-0 p=0.0078"), (noisy, "ok", "+3/-3 p=1"),
                               (ref_bits[0], "ok", "+0/-0 p=1")):
        rows = compare(reference, {"c": {"success/eval@8": sum(map(int, bits)) / 64}})
        observed = {"c": {0: {"success/eval@8": {"value": 0.0, "n": 64, "bits": bits}}}}
        [row] = paired_check(rows, reference, [0, 1], observed, alpha=0.05)
        assert (row.status, row.paired) == (status, note)
    # a seed the reference does not have, or a reference without per-image data: nothing to pair
    rows = compare(reference, {"c": {"success/eval@8": 0.5}})
    [row] = paired_check(rows, reference, [0, 1], {"c": {7: {"success/eval@8": {"bits": moved}}}}, 0.05)
    assert (row.status, row.paired) == ("ok", "")
    bare = {"c": {"success/eval@8": {"mean": 0.5, "tol": 0.13}}}
    [row] = paired_check(rows, bare, [0, 1], {"c": {0: {"success/eval@8": {"bits": moved}}}}, 0.05)
    assert (row.status, row.paired) == ("ok", "")
    # a point already outside the tolerance stays MOVED
    rows = compare(reference, {"c": {"success/eval@8": 0.9}})
    [row] = paired_check(rows, reference, [0, 1], {"c": {0: {"success/eval@8": {"bits": moved}}}}, 0.05)
    assert row.status == "MOVED" and not row.ok


# ---------------------------------------------------------------------------------- end to end


class BrightnessOracle:
    """Test oracle: an image succeeds when its mean brightness exceeds ``threshold``.

    GlyphWorld's exact oracle sees no hand in a random tiny model's images (every curve is flat 0), so
    the end-to-end test needs a rule that a change of the images can move."""

    name = "brightness"
    version = "test"

    def __init__(self, threshold: float):
        self.threshold = threshold

    def judge(self, images: torch.Tensor, prompts: list[str]) -> list[Verdict]:
        means = images.mean(dim=(1, 2, 3))
        return [Verdict(success=bool(m > self.threshold), score=float(m), reason=f"mean {float(m):.4f}")
                for m in means]


@pytest.fixture(scope="module")
def tiny_bright_world(tmp_path_factory) -> tuple[Path, float]:
    """A tiny random model whose backend has no task oracle (so ``settings.oracle`` also evaluates), and
    the median brightness of its held-out evaluation images (success rate ≈ 0.5 before training)."""
    from herobench.core.generator import Generator, SamplerConfig
    from herobench.core.pipeline import load_components
    from herobench.harness.eval_loop import EVAL_SEED_OFFSET
    from herobench.harness.evaluate import eval_noise

    path = build_tiny_sd(tmp_path_factory.mktemp("tinybright"), prediction_type="v_prediction", seed=3)
    (path / "herobench.json").write_text(json.dumps({"backend": "tiny-test", "sampler": {"steps": 3}}))
    gen = Generator(load_components(path), SamplerConfig(steps=3, guidance_scale=2.0))
    seed = 10_000
    noise = eval_noise(32, gen.latent_shape, seed + EVAL_SEED_OFFSET)
    images = gen.sample(["1 hand"] * 32, init_noise=noise, generator=torch.Generator().manual_seed(seed)).images
    return path, float(images.mean(dim=(1, 2, 3)).median())


def _grid(tmp_path: Path, model: Path) -> Path:
    grid = tmp_path / "regression.toml"
    grid.write_text(f"""
[grid]
tasks = ["hand"]
methods = ["hero", "pretrained"]
seeds = [0]
[settings]
budget_labels = 8
batch_size = 4
model = "{model}"
oracle = "brightness"
[settings.sampler]
steps = 3
guidance_scale = 2.0
[settings.eval]
n_images = 32
every_labels = 4
batch_size = 32
[method_options.hero]
encoder_epochs = 3
[regression]
reference_seeds = [0, 1]
""")
    return grid


def test_regression_passes_on_the_same_code_and_catches_a_perturbed_method(
    tiny_bright_world, tmp_path, monkeypatch, capsys
):
    model, threshold = tiny_bright_world
    monkeypatch.setitem(ORACLES._factories, "brightness", lambda task, profile="default": BrightnessOracle(threshold))
    grid, ref = _grid(tmp_path, model), tmp_path / "reference.json"
    args = ["--grid", str(grid), "--reference", str(ref)]

    assert regression.main([*args, "--update"]) == 0
    stored = json.loads(ref.read_text())
    assert stored["reference_seeds"] == [0, 1] and set(stored["cells"]) == {"hand/hero", "hand/pretrained"}
    hero = stored["cells"]["hand/hero"]["points"]
    assert set(hero) == {"success/eval@0", "success/eval@4", "success/eval@8", "good_rate"}
    assert 0.2 < hero["success/eval@0"]["mean"] < 0.8  # the threshold makes the rule informative
    assert [len(b) for b in hero["success/eval@8"]["bits"]] == [32, 32]  # per seed, per image
    capsys.readouterr()

    assert regression.main(args) == 0
    assert "PASS" in capsys.readouterr().out

    # a units bug: HERO's learning rate x1000 (registered under the same name, so the cell is the same)
    monkeypatch.setitem(METHODS._factories, "hero", partial(HeroMethod, name="hero", fixed={"lr": 1.0}))
    assert regression.main(args) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "hand/hero" in out.split("FAIL")[1] and "hand/pretrained" not in out.split("FAIL")[1]
    moved = [line for line in out.splitlines() if "MOVED" in line]
    assert moved and all(line.startswith("hand/hero") for line in moved)


def test_regression_refuses_a_grid_whose_settings_changed(tiny_bright_world, tmp_path, monkeypatch, capsys):
    model, threshold = tiny_bright_world
    grid, ref = _grid(tmp_path, model), tmp_path / "reference.json"
    assert regression.main(["--grid", str(grid), "--reference", str(ref)]) == 2
    assert "no regression reference" in capsys.readouterr().err
    ref.write_text(json.dumps({"format": 1, "cells": {
        "hand/hero": {"settings": {"budget_labels": 64}, "points": {}},
        "hand/pretrained": {"settings": {}, "points": {}}}}))
    assert regression.main(["--grid", str(grid), "--reference", str(ref)]) == 2
    assert "budget_labels: grid 8, reference 64" in capsys.readouterr().err
