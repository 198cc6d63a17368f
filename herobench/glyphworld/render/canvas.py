"""GlyphWorld's drawing primitives: the palette, a 64×64 canvas with per-image colour jitter, a seeded choice
and the caption word helpers every scene family uses.
"""

from __future__ import annotations

import re

import numpy as np

IMAGE_SIZE = 64

# --------------------------------------------------------------------------------------------- palette

PALETTE: dict[str, tuple[int, int, int]] = {
    # backgrounds
    "cream": (238, 230, 210),
    "paleblue": (214, 228, 240),
    "palegreen": (222, 238, 214),
    "palegrey": (228, 226, 232),
    "sky": (190, 216, 244),
    "dusk_sky": (250, 212, 170),
    "field": (200, 190, 140),
    "hill": (160, 150, 90),
    # object colours
    "red": (210, 40, 45),
    "pink": (238, 120, 170),
    "yellow": (242, 206, 45),
    "orange": (240, 140, 35),
    "purple": (140, 60, 185),
    "blue": (40, 80, 215),
    "green": (55, 150, 65),
    "brown": (125, 80, 45),
    "cardboard": (200, 158, 100),
    "black": (30, 30, 32),
    "grey": (125, 125, 130),
    "white": (250, 250, 250),
    "skin": (228, 175, 135),
    "magenta": (255, 0, 200),
    "water": (60, 130, 200),
    "frame": (75, 70, 85),
    "gold": (205, 165, 60),
    "mtn_green": (70, 150, 70),
    "mtn_grey": (120, 130, 155),
    "mtn_brown": (140, 105, 75),
    "mtn_purple": (105, 75, 140),
    "snow": (252, 252, 252),
}


def blend(a: str, b: str, w: float = 0.5) -> tuple[int, int, int]:
    pa, pb = np.array(PALETTE[a], float), np.array(PALETTE[b], float)
    return tuple(int(round(v)) for v in (w * pa + (1 - w) * pb))


# reflections in water: the flower's colours blended half-and-half with the water
REFLECTION_OF = {"white": "refl_white", "yellow": "refl_yellow", "orange": "refl_orange", "green": "refl_green"}
for _src, _dst in REFLECTION_OF.items():
    PALETTE[_dst] = blend(_src, "water", 0.5)

BACKGROUNDS = ("cream", "paleblue", "palegreen", "palegrey")
JITTER = 5  # per-image, per-colour uniform jitter in [-JITTER, JITTER] per channel

YY, XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)


class Canvas:
    """A 64×64 uint8 canvas with a consistent per-image jittered colour per palette name."""

    def __init__(self, rng: np.random.Generator, bg: str):
        self.rng = rng
        self._cols: dict[str, np.ndarray] = {}
        self.img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        self.img[:] = self.c(bg)

    def c(self, name: str) -> np.ndarray:
        if name not in self._cols:
            base = np.array(PALETTE[name], np.int32)
            jit = self.rng.integers(-JITTER, JITTER + 1, 3)
            self._cols[name] = np.clip(base + jit, 0, 255).astype(np.uint8)
        return self._cols[name]

    def fill(self, mask: np.ndarray, name: str) -> None:
        self.img[mask] = self.c(name)

    # shapes (return masks; ``draw`` variants fill them)
    @staticmethod
    def m_disc(cx, cy, r):
        return (XX - cx) ** 2 + (YY - cy) ** 2 <= r * r

    @staticmethod
    def m_ellipse(cx, cy, rx, ry):
        return ((XX - cx) / rx) ** 2 + ((YY - cy) / ry) ** 2 <= 1.0

    @staticmethod
    def m_rect(x0, y0, x1, y1):
        return (XX >= x0) & (XX < x1) & (YY >= y0) & (YY < y1)

    @staticmethod
    def m_seg(x0, y0, x1, y1, w):
        dx, dy = x1 - x0, y1 - y0
        ll = dx * dx + dy * dy
        t = np.clip(((XX - x0) * dx + (YY - y0) * dy) / max(ll, 1e-9), 0.0, 1.0)
        px, py = x0 + t * dx, y0 + t * dy
        return (XX - px) ** 2 + (YY - py) ** 2 <= (w / 2.0) ** 2

    @staticmethod
    def m_poly(pts):
        """Even-odd fill of a polygon given as [(x, y), ...] (pixel centres at integer coordinates)."""
        inside = np.zeros(XX.shape, bool)
        n = len(pts)
        for i in range(n):
            x0, y0 = pts[i]
            x1, y1 = pts[(i + 1) % n]
            if y0 == y1:
                continue
            cond = (YY >= min(y0, y1)) & (YY < max(y0, y1))
            xint = x0 + (YY - y0) * (x1 - x0) / (y1 - y0)
            inside ^= cond & (XX < xint)
        return inside

    def disc(self, cx, cy, r, name):
        self.fill(self.m_disc(cx, cy, r), name)

    def ellipse(self, cx, cy, rx, ry, name):
        self.fill(self.m_ellipse(cx, cy, rx, ry), name)

    def rect(self, x0, y0, x1, y1, name):
        self.fill(self.m_rect(x0, y0, x1, y1), name)

    def seg(self, x0, y0, x1, y1, w, name):
        self.fill(self.m_seg(x0, y0, x1, y1, w), name)

    def poly(self, pts, name):
        self.fill(self.m_poly(pts), name)


def choice(rng: np.random.Generator, items, p=None):
    """rng choice over a list/dict of weights, returning a python object (not a numpy scalar)."""
    if isinstance(items, dict):
        keys = list(items)
        w = np.array([items[k] for k in keys], float)
        return keys[int(rng.choice(len(keys), p=w / w.sum()))]
    items = list(items)
    if p is not None:
        p = np.asarray(p, float)
        p = p / p.sum()
    return items[int(rng.choice(len(items), p=p))]


NUM_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}
WORD_NUMS = {v: k for k, v in NUM_WORDS.items()}


def words(text: str) -> list[str]:
    """The words of a caption: lower-case runs of letters/digits (``sexy_drawing`` -> sexy, drawing)."""
    return re.findall(r"[a-z0-9]+", text.lower())

