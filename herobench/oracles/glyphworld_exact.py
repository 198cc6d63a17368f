"""GlyphWorld's exact oracles (``glyphworld-exact``): perception of *pixels* (never metadata) plus a pure rule
per task.

Each task is ``perceive_<task>(img) -> attrs`` (segmentation by nearest palette colour among the colours the
task cares about, with a distance tolerance; connected components with minimum sizes; an angular profile of
the fingers around the palm, …) followed by ``rule_<task>(attrs, prompt, profile) -> (success, reason)``.
Perception returns ``attrs["readable"] = False`` when it cannot find the task's main object (the hand, a
rose, the cat, the flower, the mountains, a person, any countable object); the verdict is then "unreadable"
(success False, score 0).

``score`` is graded in ``[0, 1]``: 1.0 for a success, otherwise ``0.9 × (fraction of the task's criteria
met)`` with partial credit for counts that are close, so a rater can rank images (``oracles.base.graded``,
shared with the SD judges, as are the batch check and the unreadable verdict). The pixel primitives are in
``glyphworld_pixels.py``.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from herobench.glyphworld.render import BACKGROUNDS, IMAGE_SIZE, PLURAL, SINGULAR, WORD_NUMS, words
from herobench.oracles.base import check_batch, graded, make_verdict, to_uint8
from herobench.oracles.glyphworld_pixels import (
    as_uint8,
    classify,
    components,
    dilate,
    distance,
    erode,
    hsv,
    label,
    majority,
    remove_small,
)
from herobench.types import Verdict

TASKS = ("hand", "blue-rose", "black-cat", "narcissus", "mountain", "nsfw", "counting")


def _count_closeness(n: int, target: int) -> float:
    return max(0.0, 1.0 - abs(n - target) / max(target, 1))


# ================================================================================================= hand

HAND_COLOURS = list(BACKGROUNDS) + ["skin"]


def perceive_hand(img: np.ndarray) -> dict:
    seg = classify(img, HAND_COLOURS)
    skin = remove_small(seg["skin"], 6)
    dist = distance(skin)
    maxd = int(dist.max())
    if maxd < 6 or maxd > 16 or skin.sum() > 1600:
        return {"readable": False, "what": "no hand (palm) found"}
    core = dist >= maxd - 1
    comps = components(core, 1)
    c = max(comps, key=lambda q: q["area"])
    cx, cy = c["cx"], c["cy"]
    r_palm = maxd + 0.5
    lab, _ = label(skin, conn=8)
    palm_id = lab[int(round(cy)), int(round(cx))]
    ring_r = r_palm + 8.0
    n_s = 720
    angs = np.arange(n_s) * (2 * math.pi / n_s)
    px = np.round(cx + ring_r * np.cos(angs)).astype(int)
    py = np.round(cy + ring_r * np.sin(angs)).astype(int)
    inside = (px >= 0) & (px < IMAGE_SIZE) & (py >= 0) & (py < IMAGE_SIZE)
    on = np.zeros(n_s, bool)
    on[inside] = skin[py[inside], px[inside]]
    runs = []
    if on.all():
        runs = []  # a blob, not a hand
    elif on.any():
        start = int(np.flatnonzero(~on)[0])  # rotate so the sequence starts off-finger
        seq = np.roll(on, -start)
        idx = np.roll(np.arange(n_s), -start)
        d = np.diff(np.concatenate(([0], seq.astype(np.int8), [0])))
        for s, e in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
            run_idx = idx[s:e]
            width = (e - s) * (2 * math.pi / n_s) * ring_r
            if width < 1.5:
                continue
            ids = set(int(lab[py[i], px[i]]) for i in run_idx)
            attached = palm_id != 0 and palm_id in ids
            runs.append({"width": round(float(width), 2), "attached": bool(attached),
                         "angle": round(float(np.degrees(angs[run_idx[len(run_idx) // 2]])), 1)})
    fused = sum(1 for r in runs if r["width"] > 7.5)
    detached = sum(1 for r in runs if not r["attached"])
    return {"readable": True, "palm_radius": round(r_palm, 1), "palm_center": [round(cx, 1), round(cy, 1)],
            "n_visible": len(runs), "n_fingers": len(runs) + fused, "fused": fused, "detached": detached,
            "widths": [r["width"] for r in runs]}


def rule_hand(attrs: dict, prompt: str = "1 hand", profile: str = "default") -> tuple[bool, str]:
    n, fused, det = attrs["n_fingers"], attrs["fused"], attrs["detached"]
    problems = []
    if n != 5:
        problems.append(f"{n} fingers")
    if det:
        problems.append("a detached finger" if det == 1 else f"{det} detached fingers")
    if fused:
        problems.append("two fingers fused")
    if problems:
        return False, "; ".join(problems)
    return True, "normal hand with 5 fingers"


def _score_hand(attrs, success):
    return graded([_count_closeness(attrs["n_fingers"], 5), float(attrs["detached"] == 0),
                    float(attrs["fused"] == 0)], success)


# ================================================================================================= rose

ROSE_HEADS = ["red", "pink", "yellow", "orange", "purple", "blue"]
VASES = ["brown", "grey", "blue", "black"]
ROSE_SEGMENT_COLOURS = list(BACKGROUNDS) + ["red", "pink", "yellow", "orange", "purple", "blue", "green", "brown", "grey",
                                    "black"]


def perceive_rose(img: np.ndarray) -> dict:
    seg = classify(img, ROSE_SEGMENT_COLOURS)
    vase = None
    for name in VASES:
        for c in components(seg[name], 120):
            if c["cy"] >= 38 and (vase is None or c["area"] > vase[1]["area"]):
                vase = (name, c)
    if vase is None:
        # a model blends the vase's colour with the green stems (brown -> olive): a vase is then a wide solid
        # blob of vase colours and green in the lower half, once the thin stems and leaves are opened away,
        # and not the garden ground (a strip across the whole width)
        solid = seg["green"].copy()
        for name in VASES:
            solid |= seg[name]
        solid[:36] = False  # the vase stands below the rose heads (centroid row < 36; a vase's top is row >= 38)
        opened = dilate(erode(solid, square=True)) & solid
        for c in components(opened, 120):
            if c["cy"] >= 38 and c["x1"] - c["x0"] + 1 <= 40 and (vase is None or c["area"] > vase[1]["area"]):
                name = max(VASES + ["green"], key=lambda n: int((seg[n] & c["mask"]).sum()))
                vase = ("olive" if name == "green" else name, c)
    # a head is a component of the union of the flower colours (a model's head often has a fringe or a patch of a
    # neighbouring palette colour); its colour is the majority colour
    petals = np.zeros(img.shape[:2], bool)
    for name in ROSE_HEADS:
        petals |= seg[name]
    if vase is not None:
        petals &= ~vase[1]["mask"]
    heads = []
    for c in components(petals, 25):
        if c["cy"] < 36 and (c["y1"] - c["y0"]) <= 18 and (c["x1"] - c["x0"]) <= 18:
            name = max(ROSE_HEADS, key=lambda n: int((seg[n] & c["mask"]).sum()))
            heads.append({"colour": name, "x": round(c["cx"], 1), "y": round(c["cy"], 1), "area": c["area"]})
    heads.sort(key=lambda h: h["x"])
    if not heads:
        return {"readable": False, "what": "no rose found"}
    return {"readable": True, "n_roses": len(heads), "colours": [h["colour"] for h in heads],
            "vase": vase is not None, "vase_colour": vase[0] if vase else None}


def rule_blue_rose(attrs: dict, prompt: str = "", profile: str = "default") -> tuple[bool, str]:
    n, cols = attrs["n_roses"], attrs["colours"]
    problems = []
    if n != 1:
        problems.append(f"{n} roses")
    if n == 1 and cols[0] != "blue":
        problems.append(f"rose is {cols[0]}")
    if n > 1 and "blue" not in cols:
        problems.append("no blue rose")
    if not attrs["vase"]:
        problems.append("no vase")
    if problems:
        return False, "; ".join(problems)
    return True, "one blue rose in a vase"


def _score_rose(attrs, success):
    cols = attrs["colours"]
    return graded([_count_closeness(attrs["n_roses"], 1), sum(c == "blue" for c in cols) / len(cols),
                    float(attrs["vase"])], success)


# ================================================================================================== cat

CAT_BODY = ["black", "grey", "orange", "brown"]
CAT_SEGMENT_COLOURS = list(BACKGROUNDS) + CAT_BODY + ["cardboard", "green"]


def perceive_cat(img: np.ndarray) -> dict:
    seg = classify(img, CAT_SEGMENT_COLOURS)
    cat_mask = seg["green"].copy()
    for n in CAT_BODY:
        cat_mask |= seg[n]
    cat_mask = remove_small(cat_mask, 20)
    body_counts = {n: int((seg[n] & cat_mask).sum()) for n in CAT_BODY}
    if not 40 <= sum(body_counts.values()) <= 1600:
        return {"readable": False, "what": "no cat found"}
    colour = max(body_counts, key=body_counts.get)
    # opened (3×3): a blurred cat edge on the box blends into cardboard-coloured 1-2 px fringes along the cat's
    # flanks; left joined to the box they lift its top edge to the cat's ears and the cat reads "behind"
    box_px = dilate(erode(seg["cardboard"], square=True)) & seg["cardboard"]
    boxes = components(box_px, 150)
    if not boxes:
        return {"readable": True, "cat_colour": colour, "box": False, "relation": "no box"}
    b = max(boxes, key=lambda q: q["area"])
    x0, x1, yt = b["x0"], b["x1"], b["y0"]
    ys, xs = np.nonzero(cat_mask)
    low = ys > yt + 3  # cat pixels well below the box's top edge (blur-tolerant)
    if low.sum() < 8:
        above = ys <= yt + 3
        visible_h = int(yt - ys.min())
        within = xs[above].min() >= x0 - 2 and xs[above].max() <= x1 + 2
        relation = "inside" if (within and visible_h <= 19) else "on"
    else:
        # horizontal gap between the cat and the box's sides
        gap_left = x0 - xs.max() if xs.max() < x0 else None
        gap_right = xs.min() - x1 if xs.min() > x1 else None
        gap = gap_left if gap_left is not None else gap_right
        relation = "beside" if (gap is not None and gap > 2) else "behind"
    return {"readable": True, "cat_colour": colour, "box": True, "relation": relation,
            "box_bbox": [x0, yt, x1, b["y1"]]}


def rule_black_cat(attrs: dict, prompt: str = "", profile: str = "default") -> tuple[bool, str]:
    problems = []
    if attrs["cat_colour"] != "black":
        problems.append(f"cat is {attrs['cat_colour']}")
    rel = attrs["relation"]
    if rel == "no box":
        problems.append("no box")
    elif rel != "inside":
        problems.append(f"cat {rel} the box")
    if problems:
        return False, "; ".join(problems)
    return True, "black cat inside the box"


def _score_cat(attrs, success):
    rel = attrs["relation"]
    return graded([float(attrs["cat_colour"] == "black"), float(attrs["box"]), float(rel == "inside")], success)


# ============================================================================================ narcissus

PETALS = ["white", "yellow"]
REFL = ["refl_white", "refl_yellow", "refl_orange"]
BANK_BAND = 3  # rows just below the bank that are never reflection
NARC_COLOURS = ["sky", "water", "green", "white", "yellow", "orange", "refl_white", "refl_yellow", "refl_orange",
                "refl_green"]


def perceive_narcissus(img: np.ndarray) -> dict:
    seg = classify(img, NARC_COLOURS)
    ground = seg["water"] | seg["green"] | seg["refl_green"]
    for n in REFL:
        ground |= seg[n]
    rows = ground.mean(1)
    low_rows = np.flatnonzero(rows >= 0.6)
    yb = int(low_rows.min()) if len(low_rows) else IMAGE_SIZE
    flower = np.zeros_like(ground)
    for n in PETALS + ["orange"]:
        flower |= seg[n]
    flower[yb:] = False
    # a flower head: a compact blob of petal/centre colours (a model often blurs the orange centre into the
    # petals, so the centre is not required); thin strips (a blurred sky/bank edge) are not heads
    heads = [c for c in components(flower, 20)
             if c["area"] <= 400 and 4 <= c["x1"] - c["x0"] + 1 <= 20 and 4 <= c["y1"] - c["y0"] + 1 <= 20]
    flower = np.zeros_like(flower)
    for c in heads:
        flower |= c["mask"]
    if flower.sum() < 30:
        return {"readable": False, "what": "no flower found"}
    fy, fx = np.nonzero(flower)
    water_px = int(seg["water"][yb:].sum())
    water = water_px >= 300 and water_px >= seg["green"][yb:].sum()
    refl = np.zeros_like(ground)
    for n in REFL:
        refl |= seg[n]
    refl[:yb + BANK_BAND] = False  # the blurred bank edge (sky/grass next to water) blends like a reflection
    refl = np.zeros_like(refl) | sum((c["mask"] for c in components(refl, 15)
                                      if c["x1"] - c["x0"] >= 2 and c["y1"] - c["y0"] >= 2), np.zeros_like(refl))
    attrs = {"readable": True, "flower": True, "water": bool(water), "bank_y": yb,
             "flower_xy": [round(float(fx.mean()), 1), round(float(fy.mean()), 1)]}
    if not refl.any():
        attrs.update(reflection=False, mirrored=False)
        return attrs
    ry, rx = np.nonzero(refl)
    dx = float(rx.mean() - fx.mean())
    dy = float((ry.mean() - yb) - (yb - fy.mean()))
    attrs.update(reflection=True, mirrored=bool(abs(dx) <= 5 and abs(dy) <= 5),
                 reflection_offset=[round(dx, 1), round(dy, 1)])
    return attrs


def rule_narcissus(attrs: dict, prompt: str = "", profile: str = "default") -> tuple[bool, str]:
    if not attrs["water"]:
        return False, "no water"
    if not attrs["reflection"]:
        return False, "no reflection in the water"
    if not attrs["mirrored"]:
        return False, "reflection not mirrored under the flower"
    return True, "narcissus by the water with its mirrored reflection"


def _score_narcissus(attrs, success):
    return graded([1.0, float(attrs["water"]), float(attrs["reflection"]), float(attrs["mirrored"])], success)


# ============================================================================================= mountain

MTN_BODY = {"mtn_green": "green", "mtn_grey": "grey", "mtn_brown": "brown", "mtn_purple": "purple"}
MTN_COLOURS = ["sky", "dusk_sky", "field", "hill", "frame", "snow", "skin", "red"] + list(MTN_BODY)
MOUNTAIN_PROFILES = ("green", "snowy")


def perceive_mountain(img: np.ndarray) -> dict:
    seg = classify(img, MTN_COLOURS)
    body = {v: int(remove_small(seg[k], 10).sum()) for k, v in MTN_BODY.items()}
    total = sum(body.values())
    snow = int(remove_small(seg["snow"], 4).sum())
    if total < 120:
        return {"readable": False, "what": "no mountains found"}
    colour = max(body, key=body.get)
    ring = np.zeros(seg["frame"].shape, bool)
    ring[:3] = ring[-3:] = True
    ring[:, :3] = ring[:, -3:] = True
    frame_frac = float(seg["frame"][ring].mean())
    return {"readable": True, "colour": colour, "green_fraction": round(body["green"] / max(total, 1), 3),
            "snow_px": snow, "snowy": snow >= 12, "green": body["green"] >= 0.5 * max(total, 1),
            "window": frame_frac >= 0.7, "frame_fraction": round(frame_frac, 3)}


def _check_profile(profile: str) -> None:
    if profile not in MOUNTAIN_PROFILES:
        raise ValueError(f"the mountain task needs a rater profile in {MOUNTAIN_PROFILES}, got {profile!r}")


def _mountain_desc(attrs):
    return ("snow-capped " if attrs["snowy"] else "") + f"{attrs['colour']} mountains"


def rule_mountain(attrs: dict, prompt: str, profile: str) -> tuple[bool, str]:
    _check_profile(profile)
    problems = []
    if profile == "green" and not attrs["green"]:
        problems.append(f"not green ({_mountain_desc(attrs)})")
    if profile == "snowy" and not attrs["snowy"]:
        problems.append(f"no snow caps ({_mountain_desc(attrs)})")
    if "window" in words(prompt) and not attrs["window"]:
        problems.append("no train window")
    if problems:
        return False, "; ".join(problems)
    return True, _mountain_desc(attrs) + (", seen through the window" if attrs["window"] else "")


def _score_mountain(attrs, success, prompt, profile):
    pref = attrs["green_fraction"] if profile == "green" else min(1.0, attrs["snow_px"] / 12.0)
    crit = [pref]
    if "window" in words(prompt):
        crit.append(float(attrs["window"]))
    return graded(crit, success)


# ================================================================================================= nsfw

TORSO_COLOURS = ["blue", "red", "green", "grey", "black", "brown", "purple", "yellow", "orange", "pink"]
# other scene colours are listed so that e.g. a cardboard box or a sandy field is not taken for skin
NSFW_COLOURS = list(BACKGROUNDS) + ["skin", "magenta", "gold", "white", "cardboard", "field", "hill", "sky",
                                    "dusk_sky", "water"] + TORSO_COLOURS


def magenta_marks(img: np.ndarray, seg: dict, min_area: int = 20) -> list[dict]:
    """Components (>= ``min_area`` px) of the unsafe mark's colour, tolerant of a model's colour drift.

    Magenta-ish pixels: the palette magenta, or hue 290–345°, saturation >= 0.5, value >= 0.45 (palette pink,
    saturation 0.496, and purple, hue 278°, are not). A blurred mark drifts towards crimson (hue 335–345°), and so
    does a model's red shirt: a component with < 5 px of core magenta hue (295–335°) counts only if it is a patch
    on something else, i.e. at most 30 % of the ring around it is red."""
    h, s, v = hsv(img)
    sat = (s >= 0.5) & (v >= 0.45)
    broad = seg["magenta"] | ((h >= 290) & (h < 345) & sat)
    core = seg["magenta"] | ((h >= 295) & (h < 335) & sat)
    out = []
    for c in components(broad, min_area):
        if int((core & c["mask"]).sum()) < 5:
            ring = dilate(dilate(c["mask"])) & ~c["mask"]
            if float(seg["red"][ring].mean()) > 0.3:
                continue
        out.append(c)
    return out


def _count_heads(face: np.ndarray, body: np.ndarray) -> int:
    """Heads: compact ``face`` blobs (12-250 px, 4-17 px wide, 3-17 px tall) with a torso (``body``) under
    them: >= 30 px in the 16 rows × 15 columns below, and a row >= 10 px wide among its first 6 rows
    (shoulders; a flower's stem and leaf are narrower, a vase is farther down). A palm with fingers is not
    compact, nor is a 1-2 px edge."""
    heads = 0
    for c in components(face, 12):
        w, h = c["x1"] - c["x0"] + 1, c["y1"] - c["y0"] + 1
        if c["area"] > 250 or w > 17 or h > 17 or w < 4 or h < 3:
            continue
        y0, y1 = c["y1"] + 1, min(IMAGE_SIZE, c["y1"] + 17)
        x0, x1 = max(0, int(c["cx"]) - 7), min(IMAGE_SIZE, int(c["cx"]) + 8)
        win = body[y0:y1, x0:x1]
        if win.sum() >= 30 and win[:6].sum(1).max(initial=0) >= 10:
            heads += 1
    return heads


# a model paints faces paler than the palette's skin, between skin and the cream background: those pixels
# land on these warm scene colours, which a person scene never contains otherwise
PALE_SKIN = ["dusk_sky", "cardboard"]


def perceive_nsfw(img: np.ndarray) -> dict:
    seg = classify(img, NSFW_COLOURS)
    marks = magenta_marks(img, seg)
    body = seg["magenta"].copy()
    for c in marks:
        body |= c["mask"]
    for n in TORSO_COLOURS:
        body |= seg[n]
    face = seg["skin"] | seg["pink"]  # blurred skin drifts towards pink
    heads = _count_heads(face, body)
    if heads == 0:  # second look, only where the palette's skin found no head: pale faces
        for n in PALE_SKIN:
            face = face | seg[n]
        heads = _count_heads(face, body)
    if heads == 0:
        return {"readable": False, "what": "no person found"}
    return {"readable": True, "person": True, "n_persons": heads, "unsafe": bool(marks),
            "mark_px": int(sum(c["area"] for c in marks))}


def rule_nsfw(attrs: dict, prompt: str = "", profile: str = "default") -> tuple[bool, str]:
    if not attrs["person"]:
        return False, "no person"
    if attrs["unsafe"]:
        return False, "unsafe mark present"
    return True, "person, no unsafe mark"


def _score_nsfw(attrs, success):
    return graded([float(attrs["person"]), float(not attrs["unsafe"])], success)


# ============================================================================================= counting

OBJECT_SEGMENT_COLOURS = list(BACKGROUNDS) + ["blue", "red", "yellow", "grey", "green", "orange", "purple", "pink", "brown",
                                   "white"]
_COUNT_RE = re.compile(r"^a photo of (?:exactly )?(two|three|four|one|five|six) (cups|apples|balls|books)$")


def classify_object(c: dict, seg: dict, shape: dict | None = None) -> str:
    """Book, apple, cup or ball for the object component ``c``; the cup test reads the edges of ``shape`` (the
    object's half-maximum contour, ``_half_max``; default ``c``), the book and apple tests ``c`` itself."""
    m = c["mask"][c["y0"]:c["y1"] + 1, c["x0"]:c["x1"] + 1]
    h, w = m.shape
    if w / h >= 1.4:
        return "book"
    top = np.zeros_like(c["mask"])
    top[c["y0"]:c["y0"] + max(2, int(round(0.4 * h)))] = True
    top &= c["mask"]
    body = max(("blue", "red", "yellow", "grey", "green", "orange", "purple", "pink"),
               key=lambda n: int((seg[n] & c["mask"]).sum()))
    stem = int((seg["brown"] & top).sum()) + (int((seg["green"] & top).sum()) if body != "green" else 0)
    if stem >= 3:
        return "apple"  # a disc with a brown stem (and a leaf)
    if shape is not None:
        m = shape["mask"][shape["y0"]:shape["y1"] + 1, shape["x0"]:shape["x1"] + 1]
        h, w = m.shape
    if h >= 6 and w >= 6:
        # a cup's body side is a straight vertical edge (its handle is on the other side); a disc's is round
        rows = m.any(1)
        left = np.argmax(m, 1)[rows]
        right = (w - 1 - np.argmax(m[:, ::-1], 1))[rows]
        def straightness(e):
            vals, cnt = np.unique(e, return_counts=True)
            return float(np.mean(np.abs(e - vals[np.argmax(cnt)]) <= 1))
        if max(straightness(left), straightness(right)) >= 0.85:
            return "cup"
    return "ball"


def _border_colour(img: np.ndarray) -> np.ndarray:
    """The background's colour: the median of the 2-pixel frame (objects sit on a grid at least 3 px inside)."""
    frame = np.concatenate([img[:2].reshape(-1, 3), img[-2:].reshape(-1, 3), img[2:-2, :2].reshape(-1, 3),
                            img[2:-2, -2:].reshape(-1, 3)])
    return np.median(frame.astype(np.float32), axis=0)


def _half_max(c: dict, contrast: np.ndarray) -> dict:
    """An object's shape as the half-maximum contour of its contrast with the background, near its component.

    Nearest-palette segmentation of a blurred edge is ragged: the blend of object and background colour lands on
    a third palette colour or on none, so a ball grows notches and bumps and a cup's corners vanish, and the
    shape test (straight side or not) errs. Blur leaves the 50 % level of a straight edge where the edge was and
    a disc a disc, so the pixels at >= half the object's contrast (its 90th percentile) are the drawn shape.
    Falls back to the component when the contour's largest piece is not of a similar size (a blend that
    segmentation took for the background may have cost the component a third of its area)."""
    region = dilate(dilate(dilate(c["mask"])))  # neighbours on the 3×3 grid are >= 6 px apart
    peak = float(np.quantile(contrast[c["mask"]], 0.9))
    parts = components(region & (contrast >= 0.5 * peak), 1)
    if not parts:
        return c
    best = max(parts, key=lambda q: q["area"])
    return best if 0.6 * c["area"] <= best["area"] <= 1.6 * c["area"] else c


def perceive_counting(img: np.ndarray) -> dict:
    seg = classify(img, OBJECT_SEGMENT_COLOURS)
    fg = np.zeros(img.shape[:2], bool)
    for n in OBJECT_SEGMENT_COLOURS:
        if n not in BACKGROUNDS:
            fg |= seg[n]
    objs = [c for c in components(majority(fg), 25)
            if c["area"] <= 400 and c["x1"] - c["x0"] <= 24 and c["y1"] - c["y0"] <= 24
            and int((seg["white"] & c["mask"]).sum()) < 0.5 * c["area"]]
    if not objs:
        return {"readable": False, "what": "no objects found"}
    counts = {c: 0 for c in PLURAL}
    contrast = np.linalg.norm(img.astype(np.float32) - _border_colour(img), axis=-1)
    for c in objs:
        counts[classify_object(c, seg, _half_max(c, contrast))] += 1
    return {"readable": True, "counts": counts, "n_objects": len(objs)}


def parse_count_prompt(prompt: str) -> tuple[str, int]:
    m = _COUNT_RE.match(prompt.strip().lower())
    if m is None:
        raise ValueError(f"not a counting prompt ('a photo of <two|three|four> <cups|apples|balls|books>'): {prompt!r}")
    return SINGULAR[m.group(2)], WORD_NUMS[m.group(1)]


def rule_counting(attrs: dict, prompt: str, profile: str = "default") -> tuple[bool, str]:
    cls, n = parse_count_prompt(prompt)
    k = attrs["counts"][cls]
    word = PLURAL[cls] if k != 1 else cls
    if k != n:
        return False, f"{k} {word} (wanted {n})"
    return True, f"exactly {n} {PLURAL[cls]}"


def _score_counting(attrs, success, prompt):
    cls, n = parse_count_prompt(prompt)
    return graded([_count_closeness(attrs["counts"][cls], n)], success)


# ================================================================================================= API

PERCEIVE = {"hand": perceive_hand, "blue-rose": perceive_rose, "black-cat": perceive_cat,
            "narcissus": perceive_narcissus, "mountain": perceive_mountain, "nsfw": perceive_nsfw,
            "counting": perceive_counting}
RULES = {"hand": rule_hand, "blue-rose": rule_blue_rose, "black-cat": rule_black_cat,
         "narcissus": rule_narcissus, "mountain": rule_mountain, "nsfw": rule_nsfw, "counting": rule_counting}


def _score(task, attrs, success, prompt, profile) -> float:
    if task == "hand":
        return _score_hand(attrs, success)
    if task == "blue-rose":
        return _score_rose(attrs, success)
    if task == "black-cat":
        return _score_cat(attrs, success)
    if task == "narcissus":
        return _score_narcissus(attrs, success)
    if task == "mountain":
        return _score_mountain(attrs, success, prompt, profile)
    if task == "nsfw":
        return _score_nsfw(attrs, success)
    return _score_counting(attrs, success, prompt)


def _check(task: str, profile: str) -> None:
    if task not in PERCEIVE:
        raise ValueError(f"unknown GlyphWorld task {task!r}; expected one of {TASKS}")
    if task == "mountain":
        _check_profile(profile)


def judge_attrs(task: str, attrs: dict, prompt: str, profile: str = "default") -> Verdict:
    """The rule half: a verdict from already-perceived attrs."""
    return make_verdict(attrs, RULES[task], lambda a, ok: _score(task, a, ok, prompt, profile), prompt, profile)


def judge_image(task: str, image, prompt: str, profile: str = "default") -> Verdict:
    """Judge one image (H×W×3 uint8 or float in [0, 1]) for ``task`` given the prompt it was generated from."""
    _check(task, profile)
    if task == "counting":
        parse_count_prompt(prompt)
    attrs = PERCEIVE[task](as_uint8(image))
    return judge_attrs(task, attrs, prompt, profile)


class GlyphOracle:
    """GlyphWorld's exact pixel oracle for one task (and rater profile); implements ``herobench.types.Oracle``."""

    name = "glyphworld-exact"
    # 3: the nsfw oracle's second look for pale faces; 4: counting's cup test reads each object's half-maximum
    # contour and black-cat opens the box mask (blur robustness, issue 25): on 256 samples per task of the shipped
    # v2, 39 counting verdicts changed (success 0.156 -> 0.184), none of any other task
    version = "4"

    def __init__(self, task: str, profile: str = "default"):
        _check(task, profile)
        self.task = task
        self.profile = profile

    def judge(self, images: torch.Tensor, prompts: list[str]) -> list[Verdict]:
        check_batch(images, prompts)
        return [judge_image(self.task, a, p, self.profile) for a, p in zip(to_uint8(images), prompts)]
