"""Evaluation samples the same images at every iteration (herobench.harness.eval_loop).

At η 1 each DDIM step adds fresh noise, and on GlyphWorld that noise decides hand verdicts; if it
depended on the iteration, a method's curve would move with no learning at all and two methods'
evaluations would no longer be paired image by image. The first test pins it; the second runs the
mutation (a step seed that reads the run's iteration) and shows the first test's check catches it.
"""

from __future__ import annotations

import pytest
import torch
from test_runner import settings, tiny_world  # noqa: F401 - fixture

from herobench.harness import eval_loop
from herobench.harness.runner import prepare


@pytest.fixture
def untrained(tiny_world, tmp_path):  # noqa: F811 - fixture
    """A run of a method that never learns, so nothing but the iteration changes between evaluations."""
    run = prepare(settings(tiny_world, method="pretrained", budget_labels=0), out=tmp_path, progress=False)
    assert run.gen.sampler.eta == 1.0  # the per-step noise is drawn: the case the pin is about
    yield run
    run.close()


def _evaluate_at(run, iteration: int, monkeypatch) -> tuple[list[dict], torch.Tensor]:
    """The run's evaluation rows and every image it sampled, as if ``iteration`` iterations were done."""
    run.iteration, run.labels_done = iteration, 4 * iteration
    images = []
    real = eval_loop.sample_batch

    def spy(*args, **kwargs):
        rollout = real(*args, **kwargs)
        images.append(rollout.images.clone())
        return rollout

    monkeypatch.setattr(eval_loop, "sample_batch", spy)
    rows = run.evaluate()
    monkeypatch.setattr(eval_loop, "sample_batch", real)
    return rows, torch.cat(images)


def _same_evaluation(a: tuple[list[dict], torch.Tensor], b: tuple[list[dict], torch.Tensor]) -> bool:
    """Identical images, and identical per-image verdicts in every prompt set's row."""
    per_image = [[(r["prompt_set"], r["successes"], r["scores"]) for r in rows] for rows, _ in (a, b)]
    return torch.equal(a[1], b[1]) and per_image[0] == per_image[1]


def test_evaluation_noise_is_the_same_at_every_iteration(untrained, monkeypatch):
    first = _evaluate_at(untrained, 0, monkeypatch)
    later = _evaluate_at(untrained, 7, monkeypatch)
    assert [r["iteration"] for r in first[0] + later[0]] == [0] * len(first[0]) + [7] * len(later[0])
    assert len(first[1]) == untrained.settings.eval.n_images * len(first[0])
    assert _same_evaluation(first, later)


def test_an_iteration_dependent_step_seed_would_be_caught(untrained, monkeypatch):
    reference = _evaluate_at(untrained, 0, monkeypatch)
    real = eval_loop.step_generator

    def mutant(eval_seed: int, first_image: int) -> torch.Generator:  # the mutation the pin guards against
        return real(eval_seed + 1_000 * untrained.iteration, first_image)

    monkeypatch.setattr(eval_loop, "step_generator", mutant)
    assert _same_evaluation(reference, _evaluate_at(untrained, 0, monkeypatch))  # iteration 0: the same seed
    mutated = _evaluate_at(untrained, 7, monkeypatch)
    assert not torch.equal(reference[1], mutated[1])  # the mutant's images move with the iteration ...
    assert not _same_evaluation(reference, mutated)  # ... so the pin above fails under it
