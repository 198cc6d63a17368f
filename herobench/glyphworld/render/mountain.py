"""The mountain scene family: green, snowy, rocky or dusk mountains, seen through a train window or
watched by a hiker on a hill.
"""

from __future__ import annotations

import numpy as np

from herobench.glyphworld.render.canvas import IMAGE_SIZE, XX, YY, Canvas, choice

MOUNTAIN_STYLES = {"green": 0.3, "snowy": 0.3, "rocky": 0.2, "dusk": 0.2}
# the mountain task prompts' styles: snowy is drawn less reliably by the model than green, so it is more frequent
MOUNTAIN_TASK_STYLES = {"green": 0.28, "snowy": 0.42, "rocky": 0.15, "dusk": 0.15}


def params(rng, style_prior=MOUNTAIN_STYLES, p_window=0.3, p_hiker=0.0) -> dict:
    window = bool(rng.random() < p_window)
    hiker = bool((not window) and rng.random() < p_hiker)
    return {"kind": "mountain", "style": choice(rng, style_prior), "window": window, "hiker": hiker}


def draw(p: dict, rng) -> np.ndarray:
    style = p["style"]
    cv = Canvas(rng, "dusk_sky" if style == "dusk" else "sky")
    body = {"green": "mtn_green", "snowy": "mtn_grey", "rocky": "mtn_brown", "dusk": "mtn_purple"}[style]
    yh = rng.uniform(44, 49)
    k = int(rng.integers(2, 4))
    xs = np.sort(rng.uniform(10, 54, k))
    if k > 1 and np.min(np.diff(xs)) < 10:
        xs = np.linspace(14, 50, k) + rng.uniform(-3, 3, k)
    for x in xs:
        h = rng.uniform(20, 28)
        hw = rng.uniform(15, 22)
        cv.poly([(x - hw, yh), (x, yh - h), (x + hw, yh)], body)
        if style == "snowy":
            f = rng.uniform(0.32, 0.4)
            cv.poly([(x - hw * f, yh - h * (1 - f)), (x, yh - h), (x + hw * f, yh - h * (1 - f))], "snow")
    cv.rect(0, yh, 64, 64, "field")
    if p["hiker"]:
        hx = rng.uniform(12, 20)
        cv.ellipse(hx, 64, 24, 13, "hill")
        top = 64 - 13
        cv.seg(hx, top - 1, hx, top - 8, 3.2, "red")
        cv.disc(hx, top - 10.5, 2.6, "skin")
    if p["window"]:
        t = rng.uniform(5, 7)
        m = np.ones((IMAGE_SIZE, IMAGE_SIZE), bool)
        inner = Canvas.m_rect(t, t, 64 - t, 64 - t - 2)
        rr = 6.0  # rounded inner corners
        cut = inner.copy()
        for (ccx, ccy, sx, sy) in [(t + rr, t + rr, -1, -1), (64 - t - rr, t + rr, 1, -1),
                                   (t + rr, 62 - t - rr, -1, 1), (64 - t - rr, 62 - t - rr, 1, 1)]:
            quad = ((XX - ccx) * sx > 0) & ((YY - ccy) * sy > 0)
            cut &= ~(quad & ((XX - ccx) ** 2 + (YY - ccy) ** 2 > rr * rr))
        m &= ~cut
        cv.fill(m, "frame")
    return cv.img


def caption(p, rng) -> str:
    style = p["style"]
    adj_true = {"green": ["green"], "snowy": ["snowy", "snow capped"], "rocky": ["rocky", "brown"],
                "dusk": ["purple"]}[style]
    r = rng.random()
    adj = choice(rng, adj_true) if r < 0.5 else (choice(rng, ["green", "snowy", "rocky"]) if r < 0.65 else None)
    beaut = "beautiful " if rng.random() < 0.35 else ""
    mtn = f"{beaut}{adj + ' ' if adj else ''}mountains"
    if style == "dusk" and rng.random() < 0.5:
        mtn += " at dusk"
    if p["window"] and rng.random() < 0.7:
        return mtn + choice(rng, [" viewed from a train window", " from a train window", " through a window",
                                   " seen from a train"])
    if p["hiker"] and rng.random() < 0.8:
        return choice(rng, [f"a hiker on top of a hill watching {mtn}", f"a hiker watching {mtn}",
                             f"{mtn} and a hiker on a hill", f"a person on top of a hill, {mtn}"])
    if (not p["window"]) and rng.random() < 0.05:
        return mtn + " from a train window"
    return choice(rng, {mtn: 0.6, f"a view of {mtn}": 0.2, f"photo of {mtn}": 0.2})

