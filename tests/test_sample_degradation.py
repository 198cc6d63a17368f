"""Issue 25 item 5: the sample-degradation estimator (benchmarks/sample_degradation.py) recovers known
degradations of renders, and every GlyphWorld exact oracle agrees >= 99 % with the renderer's truth at the
degradation measured on the models' samples (blur 0.88 px; noise 0.43, rounded up to 0.5, on the 0-255 scale)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import oracle_agreement as OA  # noqa: E402
import sample_degradation as SD  # noqa: E402

from herobench.glyphworld import render as R  # noqa: E402
from herobench.oracles import glyphworld_exact as O  # noqa: E402

# measured by `python benchmarks/sample_degradation.py --n 64` on v3, then the candidate scratch/v3b-cfg3 (all tasks
# pooled: blur 0.88, noise 0.43; v2: 0.88, 0.42), the noise rounded up: docs/GLYPHWORLD.md, "Oracle accuracy"
MEASURED_BLUR, MEASURED_NOISE = 0.88, 0.5


def _prompts(per_task: int) -> list[str]:
    return [p for t, spec in OA.TASKS.items() for p in (list(spec.train_prompts) * per_task)[:per_task]]


def test_degrade_batch_matches_oracle_agreement_degrade():
    # the estimator calibrates on degrade_batch, the agreement benchmark degrades with degrade(): same blur
    img = SD.reference_renders(_prompts(1)[:3], 0)
    rng = np.random.default_rng(0)
    batch = SD.degrade_batch(img, 0.9, 0.0, rng)
    one = np.stack([OA.degrade(i, 0.9, 0.0, rng) for i in img])
    assert np.abs(batch.astype(int) - one.astype(int)).max() <= 1


def test_statistics_move_with_each_degradation():
    # hard palette edges have sharpness exactly 1; the noise statistic rises with noise (its floor on clean
    # renders, from the interpolated median of mostly-zero responses, is calibrated away by estimate()) and the
    # sharpness falls with blur
    img = SD.reference_renders(_prompts(2), 0)
    clean = SD.statistics(img)
    assert clean["sharpness"] == 1.0 and clean["edge_px"] > 1000
    noisy = [SD.statistics(SD.degrade_batch(img, 0.0, s, np.random.default_rng(0)))["noise"] for s in (0.5, 1, 2, 4)]
    assert clean["noise"] < noisy[0] < noisy[1] < noisy[2] < noisy[3]
    sharp = [SD.statistics(SD.degrade_batch(img, b, 0.0, np.random.default_rng(0)))["sharpness"] for b in (0.5, 1, 1.5)]
    assert 1.0 > sharp[0] > sharp[1] > sharp[2]


@pytest.mark.parametrize("blur,noise", [(0.0, 0.0), (0.5, 2.0), (0.9, 0.5), (1.3, 6.0)])
def test_estimator_recovers_known_degradation(blur, noise):
    # calibration renders and target renders are different draws (seeds 1 and 7): the fit must not rely on
    # seeing the same scenes; coarse grids keep it fast, so the tolerance is about half a grid step
    prompts = _prompts(4)
    ref = SD.reference_renders(prompts, 1)
    target = SD.degrade_batch(SD.reference_renders(prompts, 7), blur, noise, np.random.default_rng(3))
    est = SD.estimate(target, ref, seed=0, blur_grid=np.arange(0.0, 2.01, 0.2), noise_grid=np.arange(0.0, 10.1, 1.0))
    assert abs(est["blur"] - blur) <= 0.1, est
    assert abs(est["noise"] - noise) <= 0.5, est


def _agreement(task: str, profile: str, n: int, blur: float, noise: float, seed: int = 0) -> float:
    spec = OA.TASKS[task]
    prompts = list(dict.fromkeys([*spec.train_prompts, *spec.eval_prompts, *spec.enhanced_prompts]))
    rng = np.random.default_rng(seed)
    agree = 0
    for i in range(n):
        p = prompts[i % len(prompts)]
        img, truth = R.render_for_prompt(p, rng)
        if blur > 0 or noise > 0:
            img = OA.degrade(img, blur, noise, rng)
        agree += O.judge_image(task, img, p, profile).success == R.truth_success(task, truth, p, profile)
    return agree / n


ROWS = [(t, prof) for t, spec in OA.TASKS.items() for prof in spec.rater_profiles]


@pytest.mark.slow
@pytest.mark.parametrize("task,profile", ROWS)
def test_oracle_agreement_at_measured_degradation(task, profile):
    # 300 seeded renders per task (about 3-4 s each on one thread); the 2,000-render numbers are in the doc
    assert _agreement(task, profile, 300, MEASURED_BLUR, MEASURED_NOISE) >= 0.99


@pytest.mark.parametrize("task", ["counting", "black-cat"])
def test_blur_fixes_hold_on_a_small_set(task):
    # the two oracles that missed 99 % at this degradation before version 4 (counting 0.91, black-cat 0.98 at
    # 300 renders); 100 renders keep this in the fast suite
    assert _agreement(task, "default", 100, MEASURED_BLUR, MEASURED_NOISE, seed=11) >= 0.99
    assert _agreement(task, "default", 100, 0.0, 0.0, seed=11) == 1.0
