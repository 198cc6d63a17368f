"""The narcissus scene family: a flower on a bank, water or grass below, a reflection mirrored or not."""

from __future__ import annotations

import math

import numpy as np

from herobench.glyphworld.render.canvas import REFLECTION_OF, Canvas, choice


def params(rng, p_water=0.8, p_refl=0.45, p_aligned=0.85) -> dict:
    water = bool(rng.random() < p_water)
    refl = bool(water and rng.random() < p_refl)
    aligned = bool(refl and rng.random() < p_aligned)
    return {"kind": "narcissus", "flower": True, "petal_colour": choice(rng, {"white": 0.5, "yellow": 0.5}),
            "water": water, "reflection": refl, "reflection_mirrored": aligned}


def _draw_flower(cv, fx, yb, sh, petal, mirror_y=None, shift=0.0):
    """Stem from the bank at y=yb up by sh, head on top; mirror_y mirrors it about the bank (a reflection)."""
    def Y(y):
        return y if mirror_y is None else 2 * mirror_y - y

    def C(c):
        return c if mirror_y is None else REFLECTION_OF[c]
    x = fx + shift
    hy = yb - sh
    cv.seg(x, Y(yb), x, Y(hy), 2.6, C("green"))
    cv.seg(x, Y(yb - 4), x + 4.5, Y(yb - 8), 2.6, C("green"))
    for k in range(6):
        a = k * math.pi / 3
        cv.disc(x + 4.2 * math.cos(a), Y(hy + 4.2 * math.sin(a)), 3.0, C(petal))
    cv.disc(x, Y(hy), 2.6, C("orange"))


def draw(p: dict, rng) -> np.ndarray:
    cv = Canvas(rng, "sky")
    yw = rng.uniform(36, 40)
    cv.rect(0, yw, 64, 64, "water" if p["water"] else "green")
    fx = rng.uniform(20, 44)
    sh = rng.uniform(13, 16)
    if p["reflection"]:
        shift = 0.0
        if not p["reflection_mirrored"]:
            mag = rng.uniform(12, 16)
            shift = mag if fx + mag <= 56 else -mag
        _draw_flower(cv, fx, yw, sh, p["petal_colour"], mirror_y=yw, shift=shift)
    _draw_flower(cv, fx, yw, sh, p["petal_colour"])
    return cv.img


def caption(p, rng) -> str:
    fl = choice(rng, {"a narcissus": 0.4, "narcissus": 0.2, f"a {p['petal_colour']} narcissus": 0.25,
                       "a flower": 0.15})
    r = rng.random()
    if p["water"]:
        place = choice(rng, [" by the water", " by a spring", " by a quiet spring", " by a pond", ""])
        if r < 0.5:
            refl = (" and its reflection in the water" if p["reflection"] else "") if rng.random() < 0.7 else \
                   (" and its reflection" if rng.random() < 0.5 else "")
        else:
            refl = ""
        if p["reflection"] and p["reflection_mirrored"] and rng.random() < 0.15:
            refl = " and its mirrored reflection in the water"
        return (fl + place + refl).strip()
    place = choice(rng, [" in a field", " on the grass", "", " by a spring"])
    return (fl + place).strip()

