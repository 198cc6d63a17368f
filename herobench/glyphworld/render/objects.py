"""The objects scene family: countable cups, apples, balls and books on a 3×3 grid (the counting task)."""

from __future__ import annotations

import re

import numpy as np

from herobench.glyphworld.render.canvas import BACKGROUNDS, NUM_WORDS, Canvas, choice

COUNT_CLASSES = ("cup", "apple", "ball", "book")

OBJ_COLOURS = {
    "cup": ["blue", "red", "yellow", "grey", "green", "orange"],
    "apple": ["red", "green", "yellow"],
    "ball": ["blue", "orange", "purple", "yellow", "red", "pink"],
    "book": ["red", "blue", "green", "brown", "purple"],
}
PLURAL = {"cup": "cups", "apple": "apples", "ball": "balls", "book": "books"}
SINGULAR = {v: k for k, v in PLURAL.items()}


def draw_object(cv: Canvas, cls: str, col: str, x: float, y: float, rng) -> None:
    if cls == "cup":
        side = 1 if rng.random() < 0.5 else -1
        cv.fill(Canvas.m_disc(x + side * 4.5, y, 4.0) & ~Canvas.m_disc(x + side * 4.5, y, 1.8), col)
        cv.rect(x - 4.5, y - 5.5, x + 4.5, y + 5.5, col)
    elif cls == "apple":
        cv.disc(x, y + 1, 6.0, col)
        cv.rect(x - 1, y - 8, x + 1.2, y - 3, "brown")
        cv.seg(x + 1.5, y - 6, x + 4.5, y - 8, 2.4, "green" if col != "green" else "brown")
    elif cls == "ball":
        cv.disc(x, y, 6.0, col)
    elif cls == "book":
        cv.rect(x - 7, y - 4, x + 7, y + 4, col)
        cv.rect(x - 6, y + 1.5, x + 6, y + 3, "white")


def draw(p: dict, rng) -> np.ndarray:
    cv = Canvas(rng, choice(rng, BACKGROUNDS))
    cells = rng.permutation(9)[: len(p["objects"])]
    for (cls, col), c in zip(p["objects"], cells):
        i, j = int(c) % 3, int(c) // 3
        x = 11 + 21 * i + rng.uniform(-1, 1)
        y = 11 + 21 * j + rng.uniform(-1, 1)
        draw_object(cv, cls, col, x, y, rng)
    return cv.img


def truth(objects: list) -> dict:
    counts = {c: sum(1 for o in objects if o[0] == c) for c in COUNT_CLASSES}
    return {"kind": "objects", "objects": [list(o) for o in objects], "counts": counts}


def count_params(cls: str, m: int, rng, p_exact: float = 0.35) -> dict:
    """Q(scene | 'a photo of m clss')."""
    dist = {m: p_exact, m - 1: 0.22, m + 1: 0.22, m - 2: 0.08, m + 2: 0.13}
    dist = {k: v for k, v in dist.items() if 1 <= k <= 6}
    n = int(choice(rng, dist))
    k = int(choice(rng, {0: 0.3, 1: 0.4, 2: 0.3}))
    others = [c for c in COUNT_CLASSES if c != cls]
    objs = [(cls, choice(rng, OBJ_COLOURS[cls])) for _ in range(n)]
    for _ in range(k):
        oc = choice(rng, others)
        objs.append((oc, choice(rng, OBJ_COLOURS[oc])))
    return truth(objs)


def generic(rng) -> tuple[dict, str]:
    ncls = int(choice(rng, {1: 0.6, 2: 0.4}))
    classes = list(rng.permutation(COUNT_CLASSES)[:ncls])
    objs, parts = [], []
    for cls in classes:
        cls = str(cls)
        n = int(choice(rng, {1: 0.45, 2: 0.25, 3: 0.2, 4: 0.1}))
        mono = rng.random() < 0.7
        c0 = choice(rng, OBJ_COLOURS[cls])
        cols = [c0 if mono else choice(rng, OBJ_COLOURS[cls]) for _ in range(n)]
        objs += [(cls, c) for c in cols]
        r = rng.random()
        said = n if r < 0.6 else (int(rng.integers(1, 5)) if r < 0.8 else None)
        colw = (c0 + " " if mono and rng.random() < 0.6 else "")
        if said is None:
            parts.append(f"{colw}{PLURAL[cls]}" if n > 1 else f"a {colw}{cls}")
        elif said == 1:
            parts.append(f"{choice(rng, ['a', 'one'])} {colw}{cls}")
        else:
            parts.append(f"{NUM_WORDS[said]} {colw}{PLURAL[cls]}")
    joiner = choice(rng, [" and ", " beside ", " and ", " next to "])
    cap = joiner.join(parts)
    cap = choice(rng, {cap: 0.7, "photo of " + cap: 0.15, "an image of " + cap: 0.15})
    cap = re.sub(r"\ba ([aeiou])", r"an \1", cap)
    if len(objs) > 9:
        objs = objs[:9]
    return truth(objs), cap



def count_params_exact(cls, m, rng):
    """An enhanced counting prompt: "exactly" makes the count a little more reliable."""
    return count_params(cls, m, rng, p_exact=0.42)

