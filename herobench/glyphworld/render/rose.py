"""The rose scene family: 1-4 roses of the palette's flower colours, in a vase or a garden."""

from __future__ import annotations

import numpy as np

from herobench.glyphworld.render.canvas import BACKGROUNDS, NUM_WORDS, Canvas, choice

ROSE_COLOUR_PRIOR = {"red": 0.30, "pink": 0.22, "yellow": 0.18, "orange": 0.10, "purple": 0.10, "blue": 0.10}
VASE_COLOURS = {"brown": 0.3, "grey": 0.25, "blue": 0.25, "black": 0.2}


def params(rng, n_prior=None, colour_prior=None, p_vase=0.7, p_mono=0.8) -> dict:
    n_prior = n_prior or {1: 0.35, 2: 0.30, 3: 0.20, 4: 0.15}
    colour_prior = colour_prior or ROSE_COLOUR_PRIOR
    n = int(choice(rng, n_prior))
    c0 = choice(rng, colour_prior)
    colours = [c0 if (i == 0 or rng.random() < p_mono) else choice(rng, ROSE_COLOUR_PRIOR) for i in range(n)]
    vase = bool(rng.random() < p_vase)
    return {"kind": "rose", "n_roses": n, "colours": colours, "vase": vase,
            "vase_colour": choice(rng, VASE_COLOURS) if vase else None}


def draw(p: dict, rng) -> np.ndarray:
    cv = Canvas(rng, choice(rng, BACKGROUNDS))
    n = p["n_roses"]
    spacing = rng.uniform(14.5, 15.5)
    x_c = 32 + rng.uniform(-2, 2)
    xs = [x_c + (i - (n - 1) / 2) * spacing for i in range(n)]
    if p["vase"]:
        vw, vtop = rng.uniform(16, 22), rng.uniform(38, 42)
        base_x, base_y = x_c, vtop + 1
    else:
        cv.rect(0, 57, 64, 64, "green")  # garden ground
        base_x, base_y = None, 58
    heads = []
    for x in xs:
        hy = rng.uniform(14, 22)
        heads.append((x, hy))
        bx = base_x + (x - x_c) * 0.25 if base_x is not None else x
        cv.seg(x, hy, bx, base_y, 2.6, "green")
        # a leaf on the stem
        ly = hy + rng.uniform(8, 11)
        t = (ly - hy) / max(base_y - hy, 1)
        sx = x + t * (bx - x)
        side = 1 if rng.random() < 0.5 else -1
        cv.seg(sx, ly, sx + side * 4.0, ly - 2.5, 2.6, "green")
    for (x, hy), col in zip(heads, p["colours"]):
        cv.disc(x, hy, rng.uniform(5.0, 5.8), col)
    if p["vase"]:
        vb = 60
        neck = vw * 0.6
        pts = [(x_c - neck / 2, vtop), (x_c + neck / 2, vtop), (x_c + vw / 2, vtop + 7), (x_c + vw / 2 - 1, vb),
               (x_c - vw / 2 + 1, vb), (x_c - vw / 2, vtop + 7)]
        cv.poly(pts, p["vase_colour"])
    return cv.img


def caption(p, rng) -> str:
    n = p["n_roses"]
    r = rng.random()
    said_n = n if r < 0.6 else (int(rng.integers(1, 5)) if r < 0.75 else None)
    cols = set(p["colours"])
    r = rng.random()
    col = (p["colours"][0] if len(cols) == 1 else None) if r < 0.55 else (
        choice(rng, list(ROSE_COLOUR_PRIOR)) if r < 0.7 else None)
    if said_n is None:
        head = "roses" if n > 1 or rng.random() < 0.3 else "a rose"
        if col:
            head = (col + " roses") if head == "roses" else f"a {col} rose"
    else:
        w = choice(rng, [NUM_WORDS[said_n], NUM_WORDS[said_n], "a"]) if said_n == 1 else NUM_WORDS[said_n]
        head = f"{w} {col + ' ' if col else ''}{'rose' if said_n == 1 else 'roses'}"
    r = rng.random()
    if p["vase"]:
        loc = ((" in a " + p["vase_colour"] + " vase") if rng.random() < 0.3 else " in a vase") if r < 0.6 else ""
    else:
        loc = " in a garden" if r < 0.4 else (" in a vase" if r < 0.45 else "")
    pre = choice(rng, {"": 0.5, "photo of ": 0.25, "a photo of ": 0.15, "a single " if said_n == 1 else "": 0.1})
    if pre == "a single " and head.split()[0] in ("one", "a"):
        head = head.split(" ", 1)[1]
    return (pre + head + loc).strip()

