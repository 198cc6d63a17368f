"""Pixel perception for GlyphWorld's exact oracle: nearest-palette-colour segmentation, connected
components, binary morphology and HSV, on 64×64×3 uint8 images (numpy only, no learned model)."""

from __future__ import annotations

import numpy as np
import torch

from herobench.glyphworld.render import IMAGE_SIZE, PALETTE

TOL = 70.0  # max RGB distance to the nearest palette colour; farther pixels are "unknown"


def as_uint8(image) -> np.ndarray:
    """H×W×3 uint8 / float in [0, 1] (numpy or torch, or 3×H×W) -> 64×64×3 uint8."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = np.transpose(a, (1, 2, 0))
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an H×W×3 image, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if a.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        from PIL import Image

        a = np.asarray(Image.fromarray(a).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
    return a


def classify(img: np.ndarray, names: list[str], tol: float = TOL) -> dict[str, np.ndarray]:
    """Nearest-palette-colour segmentation restricted to ``names``: name -> boolean mask.

    Pixels farther than ``tol`` from every listed colour belong to no mask."""
    cols = np.array([PALETTE[n] for n in names], np.float32)
    d = np.linalg.norm(img.astype(np.float32)[:, :, None, :] - cols[None, None], axis=-1)
    idx = d.argmin(-1)
    ok = d.min(-1) <= tol
    return {n: (idx == i) & ok for i, n in enumerate(names)}


def label(mask: np.ndarray, conn: int = 8) -> tuple[np.ndarray, int]:
    """Connected components (run-length union-find). Returns (labels with 0 = background, count)."""
    h, w = mask.shape
    runs = []  # (row, start, end_inclusive)
    row_runs: list[list[int]] = []
    for y in range(h):
        r = mask[y]
        d = np.diff(np.concatenate(([0], r.view(np.int8), [0])))
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1
        ids = []
        for s, e in zip(starts, ends):
            ids.append(len(runs))
            runs.append((y, int(s), int(e)))
        row_runs.append(ids)
    parent = list(range(len(runs)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    k = 1 if conn == 8 else 0
    for y in range(1, h):
        prev = row_runs[y - 1]
        if not prev:
            continue
        for i in row_runs[y]:
            _, s, e = runs[i]
            for j in prev:
                _, ps, pe = runs[j]
                if s <= pe + k and e >= ps - k:
                    a, b = find(i), find(j)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
    lab = np.zeros((h, w), np.int32)
    roots: dict[int, int] = {}
    for i, (y, s, e) in enumerate(runs):
        rt = find(i)
        if rt not in roots:
            roots[rt] = len(roots) + 1
        lab[y, s:e + 1] = roots[rt]
    return lab, len(roots)


def components(mask: np.ndarray, min_area: int = 1, conn: int = 8) -> list[dict]:
    """Components of ``mask`` with at least ``min_area`` pixels: dicts with mask, area, bbox, centroid."""
    lab, n = label(mask, conn)
    out = []
    if n == 0:
        return out
    areas = np.bincount(lab.ravel(), minlength=n + 1)
    for i in range(1, n + 1):
        if areas[i] < min_area:
            continue
        m = lab == i
        ys, xs = np.nonzero(m)
        out.append({"mask": m, "area": int(areas[i]), "x0": int(xs.min()), "x1": int(xs.max()),
                    "y0": int(ys.min()), "y1": int(ys.max()), "cx": float(xs.mean()), "cy": float(ys.mean())})
    return out


def remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``mask`` without its components of fewer than ``min_area`` pixels."""
    out = np.zeros_like(mask)
    for c in components(mask, min_area):
        out |= c["mask"]
    return out


def _shift(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(m)
    h, w = m.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = m[max(-dy, 0):h + min(-dy, 0),
                                                               max(-dx, 0):w + min(-dx, 0)]
    return out


def erode(m: np.ndarray, square: bool = False) -> np.ndarray:
    """One step of binary erosion (4-neighbour cross, or the 3×3 square with ``square``)."""
    out = m & _shift(m, 1, 0) & _shift(m, -1, 0) & _shift(m, 0, 1) & _shift(m, 0, -1)
    if square:
        out &= _shift(m, 1, 1) & _shift(m, 1, -1) & _shift(m, -1, 1) & _shift(m, -1, -1)
    return out


def dilate(m: np.ndarray, square: bool = True) -> np.ndarray:
    """One step of binary dilation (the 3×3 square, or the 4-neighbour cross without ``square``)."""
    out = m | _shift(m, 1, 0) | _shift(m, -1, 0) | _shift(m, 0, 1) | _shift(m, 0, -1)
    if square:
        out |= _shift(m, 1, 1) | _shift(m, 1, -1) | _shift(m, -1, 1) | _shift(m, -1, -1)
    return out


def majority(m: np.ndarray) -> np.ndarray:
    """3×3 majority filter (removes speckle and fills pinholes; keeps shapes thicker than ~2 px)."""
    n = np.zeros(m.shape, np.int32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            n += _shift(m, dy, dx)
    return n >= 5


def distance(m: np.ndarray) -> np.ndarray:
    """Approximate (octagonal) distance to the nearest pixel outside ``m`` (in erosion steps)."""
    d = np.zeros(m.shape, np.int32)
    cur, k = m.copy(), 0
    while cur.any():
        d += cur
        cur = erode(cur, square=bool(k % 2))
        k += 1
    return d


def hsv(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360), saturation and value in [0, 1] of an H×W×3 uint8 image."""
    x = img.astype(np.float32) / 255.0
    mx, mn = x.max(-1), x.min(-1)
    d = mx - mn
    dd = np.where(d > 0, d, 1.0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    h = np.where(mx == r, ((g - b) / dd) % 6.0, np.where(mx == g, (b - r) / dd + 2.0, (r - g) / dd + 4.0)) * 60.0
    h = np.where(d > 0, h, 0.0)
    return h, np.where(mx > 0, d / np.where(mx > 0, mx, 1.0), 0.0), mx

