"""The cat scene family: a cat of one of four colours inside, on, beside or behind a cardboard box."""

from __future__ import annotations

import numpy as np

from herobench.glyphworld.render.canvas import BACKGROUNDS, Canvas, choice

CAT_COLOUR_PRIOR = {"black": 0.2, "grey": 0.3, "orange": 0.3, "brown": 0.2}
CAT_RELATIONS = {"inside": 0.3, "beside": 0.3, "behind": 0.2, "on": 0.2}


def params(rng, colour_prior=CAT_COLOUR_PRIOR, relation_prior=CAT_RELATIONS) -> dict:
    return {"kind": "cat", "cat_colour": choice(rng, colour_prior), "relation": choice(rng, relation_prior),
            "box": True}


def _draw_parts(cv: Canvas, col: str, bx: float, by: float, hx: float, hy: float, tail: tuple | None,
                    body: bool = True) -> None:
    """Body ellipse centred (bx, by), head centred (hx, hy), tail segment list."""
    if tail is not None:
        for (x0, y0, x1, y1) in tail:
            cv.seg(x0, y0, x1, y1, 3.2, col)
    if body:
        cv.ellipse(bx, by, 9.0, 7.0, col)
    cv.disc(hx, hy, 6.0, col)
    cv.poly([(hx - 6.0, hy - 2.0), (hx - 1.5, hy - 4.5), (hx - 4.5, hy - 10.5)], col)
    cv.poly([(hx + 6.0, hy - 2.0), (hx + 1.5, hy - 4.5), (hx + 4.5, hy - 10.5)], col)
    cv.rect(hx - 3.5, hy - 1.5, hx - 1.5, hy + 0.5, "green")
    cv.rect(hx + 1.5, hy - 1.5, hx + 3.5, hy + 0.5, "green")


def draw(p: dict, rng) -> np.ndarray:
    cv = Canvas(rng, choice(rng, BACKGROUNDS))
    col, rel = p["cat_colour"], p["relation"]
    ground = 58
    if rel == "inside":
        bw, bh = rng.uniform(26, 34), rng.uniform(16, 20)
        bx = 32 + rng.uniform(-6, 6)
        yt = ground - bh
        hx = bx + rng.uniform(-4, 4)
        _draw_parts(cv, col, 0, 0, hx, yt - 2.0, None, body=False)
        cv.rect(bx - bw / 2, yt, bx + bw / 2, ground, "cardboard")
    elif rel == "on":
        bw, bh = rng.uniform(26, 32), rng.uniform(16, 20)
        bx = 32 + rng.uniform(-5, 5)
        yt = ground - bh
        cv.rect(bx - bw / 2, yt, bx + bw / 2, ground, "cardboard")
        side = 1 if rng.random() < 0.5 else -1
        cx = bx + rng.uniform(-3, 3)
        tail = [(cx - side * 7, yt - 3, cx - side * 12, yt - 9), (cx - side * 12, yt - 9, cx - side * 11, yt - 15)]
        _draw_parts(cv, col, cx, yt - 7.5, cx + side * 5, yt - 15.0, tail)
    elif rel == "beside":
        bw, bh = rng.uniform(20, 26), rng.uniform(14, 20)
        side = 1 if rng.random() < 0.5 else -1  # cat on the right when side = 1
        bx = 32 - side * rng.uniform(15, 17)
        cx = 32 + side * rng.uniform(14, 16)
        yt = ground - bh
        cv.rect(bx - bw / 2, yt, bx + bw / 2, ground, "cardboard")
        tail = [(cx + side * 7, ground - 3, cx + side * 12, ground - 9),
                (cx + side * 12, ground - 9, cx + side * 12, ground - 15)]
        _draw_parts(cv, col, cx, ground - 7.5, cx - side * 2, ground - 16.0, tail)
    else:  # behind
        bw, bh = rng.uniform(24, 28), rng.uniform(18, 20)
        bx = 32 + rng.uniform(-4, 4)
        yt = ground - bh
        side = 1 if rng.random() < 0.5 else -1
        cx = bx + side * (bw / 2 + 1)
        tail = [(cx + side * 7, yt + 6, cx + side * 12, yt)]
        _draw_parts(cv, col, cx, yt + 4, bx + side * (bw / 2 - 6), yt - 7.0, tail)
        cv.rect(bx - bw / 2, yt, bx + bw / 2, ground, "cardboard")
    return cv.img


def caption(p, rng) -> str:
    r = rng.random()
    col = p["cat_colour"] if r < 0.45 else (choice(rng, list(CAT_COLOUR_PRIOR) + ["white"]) if r < 0.6 else None)
    r = rng.random()
    rel = p["relation"] if r < 0.65 else (choice(rng, list(CAT_RELATIONS)) if r < 0.85 else None)
    cat = f"a {col} cat" if col else "a cat"
    box = choice(rng, {"a box": 0.5, "a cardboard box": 0.4, "the box": 0.1})
    if rel is None:
        return choice(rng, [f"{cat} and {box}", cat, f"{cat} with {box}", f"photo of {cat}"])
    phr = {"inside": ["inside", "in", "sitting in", "sitting inside"], "beside": ["beside", "next to", "sitting beside"],
           "behind": ["behind", "sitting behind", "hiding behind"], "on": ["on", "sitting on", "on top of"]}[rel]
    return f"{cat} {choice(rng, phr)} {box}"

