"""The hand scene family: a palm with 3-7 fingers, one possibly detached or two fused."""

from __future__ import annotations

import math

import numpy as np

from herobench.glyphworld.render.canvas import BACKGROUNDS, NUM_WORDS, Canvas, choice

# v3: skewed towards fewer fingers. v1/v2 drew five or four fingers whatever the caption said (they collapse to
# the middle of the finger-count distribution, and fewer fingers survive that collapse better), so `1 hand`
# stayed at 0.52; a mean below five moves that middle off the normal hand (model card history).
HAND_PRIOR = {"normal": 0.22, "n3": 0.12, "n4": 0.22, "n6": 0.14, "n7": 0.08, "detached": 0.11, "fused": 0.11}


def params(rng, prior=HAND_PRIOR) -> dict:
    kind = choice(rng, prior)
    n = {"n3": 3, "n4": 4, "n6": 6, "n7": 7}.get(kind, 5)
    return {"kind": "hand", "n_fingers": n, "detached": kind == "detached", "fused": kind == "fused"}


def draw(p: dict, rng) -> np.ndarray:
    cv = Canvas(rng, choice(rng, BACKGROUNDS))
    cx, cy = 32 + rng.uniform(-3, 3), 40 + rng.uniform(-2, 2)
    r = rng.uniform(9.5, 11.0)
    rot = rng.uniform(-18, 18)
    n = p["n_fingers"]
    span = {3: (-140, -40), 4: (-150, -30), 5: (-160, -20), 6: (-166, -14), 7: (-170, -10)}[n]
    angs = list(np.linspace(span[0], span[1], n) + rot + rng.uniform(-2.5, 2.5, n))
    length = rng.uniform(12.5, 15.0)
    width = rng.uniform(4.2, 4.8)
    fingers = [[a, width, r - 2.0] for a in angs]
    if p["fused"]:
        i = int(rng.integers(0, n - 1))
        merged = [(angs[i] + angs[i + 1]) / 2.0, 9.5, r - 2.0]
        fingers = fingers[:i] + [merged] + fingers[i + 2:]
    if p["detached"]:
        j = int(rng.integers(0, n))
        fingers[j][2] = r + 6.5
    cv.disc(cx, cy, r, "skin")
    for a, w, start in fingers:
        dx, dy = math.cos(math.radians(a)), math.sin(math.radians(a))
        end = r + length
        cv.seg(cx + start * dx, cy + start * dy, cx + end * dx, cy + end * dy, w, "skin")
    return cv.img


def caption(p, rng) -> str:
    n = p["n_fingers"] - (1 if p["fused"] else 0)
    r = rng.random()
    if r < 0.55:
        return choice(rng, ["a hand", "an open hand", "hand", "a human hand", "an open palm", "a hand, open palm",
                             "one hand", "a photo of a hand"])
    if r < 0.85:
        said = n if rng.random() < 0.55 else int(rng.integers(3, 8))
        return choice(rng, ["a hand with {} fingers", "a hand, {} fingers", "an open hand with {} fingers",
                             "photo of a hand with {} fingers"]).format(NUM_WORDS[said])
    return choice(rng, ["a hand with a detached finger", "a hand with fused fingers", "a strange hand",
                         "a normal hand", "a hand with long fingers"]) if rng.random() < 0.5 else "a left hand"

