"""The task specs in tasks/ and the GlyphWorld world must describe the same prompts."""

import pytest

from herobench.glyphworld import render
from herobench.harness.tasks import for_backend, list_tasks, load_task


@pytest.mark.parametrize("name", sorted(render.TASK_PROMPTS))
def test_task_prompts_match_the_world(name):
    spec = for_backend(load_task(name), "glyphworld")
    world = render.TASK_PROMPTS[name]
    assert list(spec.train_prompts) == list(world["train"])
    assert list(spec.eval_prompts) == list(world["eval"])
    assert list(spec.enhanced_prompts) == list(world["enhanced"])
    vocab = set(render.vocabulary())
    for p in (*spec.train_prompts, *spec.eval_prompts, *spec.enhanced_prompts):
        missing = [w for w in render.words(p) if w not in vocab]
        assert not missing, f"{p!r} uses words GlyphWorld never captions: {missing}"


def test_every_task_has_a_world():
    assert set(list_tasks()) == set(render.TASK_PROMPTS)
