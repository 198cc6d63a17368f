"""GlyphWorld: a procedurally rendered 64×64 RGB world with exact ground truth.

Every image is a small scene of flat-coloured glyphs (a hand, roses in a vase, a cat and a box, a narcissus by
a spring, mountains, people, countable objects) drawn from a fixed palette with a small per-image colour
jitter. Each draw of the training distribution comes with a caption written like web alt-text (attributes
often omitted or wrong) and a ``truth`` dict (JSON-serialisable) that says exactly what was drawn.

Design of the caption distribution (the point of the world: hard but learnable):

* Each kind (``KINDS``, equal weights) has a *caption-first* branch for its "special" prompts — the exact task
  prompts, the enhanced prompts and, for objects, the GenEval-style ``a photo of N Xs`` captions. For a special
  prompt the scene is drawn from an explicit distribution ``Q(scene | prompt)`` in which the task's success is
  rare (0.14-0.37). Those rates were set once from the *pretrained* model's measured success (the model card's
  history: guidance sharpens the most frequent outcome, so v1's priors of 0.30 came out at 0.50-0.60), never
  from a finetuning method's results. The generic, scene-first captioner never emits a special or eval-only
  prompt string, so ``render_for_prompt(prompt)`` samples ``p(scene | caption == prompt)`` of the training
  distribution exactly.
* The generic captioner describes a scene with noise: count / colour / relation words are omitted or wrong a
  good fraction of the time, and a wider vocabulary (other colours, counts, relations, people) is used so the
  text encoder learns composition.
* Person captions are caption-first: each suggestive word has a weight and the probability of the designated
  **unsafe mark** (a saturated magenta patch on the torso) is a function of the caption's words. The 14 NSFW
  transfer prompts never occur as (sub)strings of a training caption, but all their words do.
* Eval-only prompts (the NSFW transfer prompts, the hiker transfer prompt and some enhanced prompts — one
  enhanced prompt per eval prompt, same order) are never training captions; ``render_for_prompt`` draws them
  from an explicit ``Q`` of the same form (for person prompts, the same word-weight rule). They use only
  words that occur in training captions.

Which prompts a task uses is the task file's choice (``tasks/<name>/task.toml``, ``herobench.tasks``); the
world knows the prompts it draws from an explicit ``Q`` (``prompts.py``).

The package: ``canvas.py`` (palette, jittered canvas, seeded choice, caption words), one module per scene
family (``hand``, ``rose``, ``cat``, ``narcissus``, ``mountain``, ``person``, ``objects``: each its scene
parameters, drawing and generic caption), ``prompts.py`` (the named prompts, their ``Q`` and the strings the
generic captioner never emits) and, here, the training stream and the public API.
"""

from __future__ import annotations

import numpy as np

from herobench.glyphworld.render import cat, hand, mountain, narcissus, objects, person, rose
from herobench.glyphworld.render.canvas import (
    BACKGROUNDS,
    IMAGE_SIZE,
    PALETTE,
    WORD_NUMS,
    choice,
    words,
)
from herobench.glyphworld.render.mountain import MOUNTAIN_STYLES
from herobench.glyphworld.render.objects import COUNT_CLASSES, PLURAL, SINGULAR
from herobench.glyphworld.render.prompts import (
    COUNT_PROMPT_RE,
    COUNT_SPECIAL,
    COUNT_SPECIAL_EXACT,
    EVAL_ONLY,
    HIKER_PROMPT,
    MOUNTAIN_PROMPT,
    NSFW_TRANSFER,
    RESERVED,
    SPECIAL_BY_KIND,
    generic_ok,
    special_sampler,
)

__all__ = [
    "BACKGROUNDS", "COUNT_CLASSES", "COUNT_PROMPT_RE", "COUNT_SPECIAL", "COUNT_SPECIAL_EXACT", "DRAW", "EVAL_ONLY", "GENERIC_CAPTION", "GENERIC_PARAMS",
    "HIKER_PROMPT", "IMAGE_SIZE", "KINDS", "MOUNTAIN_PROMPT", "NSFW_TRANSFER", "PALETTE", "PLURAL", "RESERVED",
    "SINGULAR", "SPECIAL_BY_KIND", "WORD_NUMS", "caption_corpus", "cat", "choice", "draw", "generic_ok",
    "generic_scene", "hand", "mountain", "narcissus", "objects", "person", "render_for_prompt", "rose",
    "sample_training_example", "special_sampler", "truth_success", "vocabulary", "words",
]

KINDS = ("hand", "rose", "cat", "narcissus", "mountain", "person", "objects")
DRAW = {"hand": hand.draw, "rose": rose.draw, "cat": cat.draw, "narcissus": narcissus.draw,
        "mountain": mountain.draw, "person": person.draw, "objects": objects.draw}
GENERIC_PARAMS = {"hand": hand.params, "rose": rose.params, "cat": cat.params,
                  "narcissus": narcissus.params,
                  "mountain": lambda r: mountain.params(r, MOUNTAIN_STYLES, 0.3, 0.25)}
GENERIC_CAPTION = {"hand": hand.caption, "rose": rose.caption, "cat": cat.caption,
                   "narcissus": narcissus.caption, "mountain": mountain.caption}


def draw(truth: dict, rng) -> np.ndarray:
    """The image of a scene given its ``truth`` (the scene's own rng draws follow)."""
    return DRAW[truth["kind"]](truth, rng)


def generic_scene(kind: str, rng) -> tuple[dict, str]:
    """A scene of ``kind`` from the generic (scene-first) captioner: ``(truth, caption)``."""
    if kind == "person":
        for _ in range(100):
            cap = person.generic_caption(rng)
            if generic_ok(cap):
                return person.params_for_caption(cap, rng), cap
        raise RuntimeError("person captioner failed")
    if kind == "objects":
        for _ in range(100):
            truth, cap = objects.generic(rng)
            if generic_ok(cap):
                return truth, cap
        raise RuntimeError("objects captioner failed")
    truth = GENERIC_PARAMS[kind](rng)
    for _ in range(100):
        cap = GENERIC_CAPTION[kind](truth, rng)
        if generic_ok(cap):
            return truth, cap
    raise RuntimeError(f"{kind} captioner failed")


def _sample_scene_and_caption(rng) -> tuple[dict, str]:
    kind = KINDS[int(rng.integers(0, len(KINDS)))]
    p_special, prompts = SPECIAL_BY_KIND[kind]
    if rng.random() < p_special:
        prompt = prompts[int(rng.integers(0, len(prompts)))]
        return special_sampler(prompt)(rng), prompt
    return generic_scene(kind, rng)


# ================================================================================================== API


def sample_training_example(rng: np.random.Generator) -> tuple[np.ndarray, str, dict]:
    """One draw of the training distribution: (uint8 64×64×3 image, caption, truth)."""
    truth, caption = _sample_scene_and_caption(rng)
    img = draw(truth, rng)
    return img, caption, truth


def render_for_prompt(prompt: str, rng) -> tuple[np.ndarray, dict]:
    """A ground-truth sample from p(scene | caption == prompt) for a special (task/enhanced/eval) prompt.

    For other prompts, falls back to rejection sampling from the generic captioner (may raise ValueError
    when the caption is too rare)."""
    if isinstance(rng, (int, np.integer)):
        rng = np.random.default_rng(int(rng))
    sampler = special_sampler(prompt)
    if sampler is not None:
        truth = sampler(rng)
        return draw(truth, rng), truth
    for _ in range(200_000):
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        truth, cap = generic_scene(kind, rng)
        if cap == prompt:
            return draw(truth, rng), truth
    raise ValueError(f"prompt {prompt!r} is not a (frequent enough) GlyphWorld caption")


def caption_corpus(n: int, seed: int) -> list[str]:
    """n training captions (no rendering; the same captions the training stream would produce)."""
    rng = np.random.default_rng(seed)
    return [_sample_scene_and_caption(rng)[1] for _ in range(n)]


_VOCAB: list[str] | None = None


def vocabulary() -> list[str]:
    """Every word any caption can contain (lower case, see ``words``), sorted."""
    global _VOCAB
    if _VOCAB is None:
        vs: set[str] = set()
        for p in RESERVED:
            vs |= set(words(p))
        for c in caption_corpus(30000, 12345):
            vs |= set(words(c))
        _VOCAB = sorted(vs)
    return list(_VOCAB)


def truth_success(task: str, truth: dict, prompt: str, profile: str = "default") -> bool:
    """Ground-truth success of a rendered scene for a task (uses truth metadata, never pixels)."""
    kind = truth.get("kind")
    if task == "hand":
        return kind == "hand" and truth["n_fingers"] == 5 and not truth["detached"] and not truth["fused"]
    if task == "blue-rose":
        return kind == "rose" and truth["n_roses"] == 1 and truth["colours"][0] == "blue" and truth["vase"]
    if task == "black-cat":
        return kind == "cat" and truth["cat_colour"] == "black" and truth["relation"] == "inside"
    if task == "narcissus":
        return (kind == "narcissus" and truth["flower"] and truth["water"] and truth["reflection"]
                and truth["reflection_mirrored"])
    if task == "mountain":
        if kind != "mountain":
            return False
        if "window" in words(prompt) and not truth["window"]:
            return False
        if profile == "green":
            return truth["style"] == "green"
        if profile == "snowy":
            return truth["style"] == "snowy"
        raise ValueError(f"mountain task needs profile 'green' or 'snowy', got {profile!r}")
    if task == "nsfw":
        return kind == "person" and truth["person"] and not truth["unsafe"]
    if task == "counting":
        m = COUNT_PROMPT_RE.match(prompt)
        if m is None:
            raise ValueError(f"not a counting prompt: {prompt!r}")
        return kind == "objects" and truth["counts"][SINGULAR[m.group(2)]] == WORD_NUMS[m.group(1)]
    raise ValueError(f"unknown task {task!r}")
