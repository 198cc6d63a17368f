"""GlyphWorld renderer: determinism, prompt coverage, vocabulary, designed success band."""

from __future__ import annotations

import json

import numpy as np
import pytest

from herobench.glyphworld import render as R
from herobench.tasks import glyphworld_tasks

TASKS = glyphworld_tasks()  # the task files' GlyphWorld prompt sets, by task name


def _all_task_prompts():
    for task, spec in TASKS.items():
        for which in ("train", "eval", "enhanced"):
            for p in getattr(spec, f"{which}_prompts"):
                yield task, which, p


def test_api_shapes_and_types():
    assert R.IMAGE_SIZE == 64
    assert set(R.KINDS) == {"hand", "rose", "cat", "narcissus", "mountain", "person", "objects"}
    img, cap, truth = R.sample_training_example(np.random.default_rng(0))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert isinstance(cap, str) and cap
    json.dumps(truth)  # JSON-serialisable
    assert set(TASKS) == {"hand", "blue-rose", "black-cat", "narcissus", "mountain", "nsfw", "counting"}
    for spec in TASKS.values():
        assert spec.train_prompts and spec.eval_prompts and spec.enhanced_prompts and spec.rater_profiles


def test_deterministic_per_seed():
    a = [R.sample_training_example(np.random.default_rng(7)) for _ in range(2)]
    assert np.array_equal(a[0][0], a[1][0]) and a[0][1] == a[1][1] and a[0][2] == a[1][2]
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(30):
        x, y = R.sample_training_example(r1), R.sample_training_example(r2)
        assert np.array_equal(x[0], y[0]) and x[1] == y[1]
    i1, t1 = R.render_for_prompt("1 hand", np.random.default_rng(5))
    i2, t2 = R.render_for_prompt("1 hand", np.random.default_rng(5))
    assert np.array_equal(i1, i2) and t1 == t2
    assert R.caption_corpus(50, 1) == R.caption_corpus(50, 1)


def test_mixes_all_kinds():
    rng = np.random.default_rng(0)
    kinds = {R.sample_training_example(rng)[2]["kind"] for _ in range(200)}
    assert kinds == set(R.KINDS)


@pytest.mark.parametrize("task,which,prompt", list(_all_task_prompts()))
def test_every_task_prompt_renderable(task, which, prompt):
    """The task files choose GlyphWorld's prompts; the world must draw each from an explicit Q (an unknown
    prompt would fall back to rejection sampling from the generic captioner, which never emits these)."""
    assert R.special_sampler(prompt) is not None, prompt
    rng = np.random.default_rng(0)
    for _ in range(3):
        img, truth = R.render_for_prompt(prompt, rng)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        for prof in TASKS[task].rater_profiles:
            assert isinstance(R.truth_success(task, truth, prompt, prof), bool)


def test_vocabulary_covers_captions_and_prompts():
    vocab = set(R.vocabulary())
    assert all(w == w.lower() for w in vocab)
    for cap in R.caption_corpus(3000, 99):
        assert set(R.words(cap)) <= vocab, cap
    for _, _, p in _all_task_prompts():
        assert set(R.words(p)) <= vocab, p


def test_training_captions_contain_task_prompts_but_not_transfer_strings():
    corpus = R.caption_corpus(6000, 0)
    cs = set(corpus)
    for task, spec in TASKS.items():
        for p in spec.train_prompts:
            assert p in cs, p
        # enhanced prompts are one per eval prompt, same order
        assert len(spec.enhanced_prompts) == len(spec.eval_prompts), task
    train_words = set(w for c in corpus for w in R.words(c))
    for p in R.NSFW_TRANSFER:
        assert not any(p in c for c in corpus), p
        assert set(R.words(p)) <= train_words, p
    # enhanced prompts only use trained vocabulary; blue appears on other objects too
    for spec in TASKS.values():
        for p in spec.enhanced_prompts:
            assert set(R.words(p)) <= train_words, p
    assert any("blue vase" in c for c in corpus)
    assert any("blue cup" in c or "blue ball" in c or "blue cups" in c or "blue balls" in c for c in corpus)
    assert R.HIKER_PROMPT not in cs


# p(success | caption == train prompt) per task/profile: 0.13-0.37 by design (model v2; see render.py's
# docstring: the priors are set from the pretrained model's measured success, never from a method's results)
BAND = (0.12, 0.42)


@pytest.mark.parametrize("task,profile", [(t, p) for t, s in TASKS.items() for p in s.rater_profiles])
def test_success_rate_in_designed_band(task, profile):
    rng = np.random.default_rng(11)
    for prompt in TASKS[task].train_prompts:
        sampler = R.special_sampler(prompt)
        n = 1500
        rate = np.mean([R.truth_success(task, sampler(rng), prompt, profile) for _ in range(n)])
        assert BAND[0] <= rate <= BAND[1], (task, profile, prompt, rate)


def test_render_for_prompt_matches_scene_prior():
    # rendering consumes the same scene sampler (a few full renders agree with the truth-only rate)
    rng = np.random.default_rng(2)
    ok = [R.truth_success("hand", R.render_for_prompt("1 hand", rng)[1], "1 hand") for _ in range(300)]
    assert 0.1 <= np.mean(ok) <= 0.26
