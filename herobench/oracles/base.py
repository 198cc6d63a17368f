"""What the oracles share: their config files, the batch check, graded scores, the verdict, the device.

Every SD oracle is ``perceive(images) -> attrs`` (a model) followed by a pure
``rule_*(attrs, prompt, profile) -> (success, reason)``, as in ``herobench.oracles.glyphworld_exact``. Its
tunable numbers (thresholds, prompt sets) live in ``oracles/<oracle name>.toml`` in the data folder, read
into a frozen dataclass with unknown keys rejected.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from herobench.config import from_dict, load_toml
from herobench.types import Verdict

C = TypeVar("C")
ENV_DEVICE = "HEROBENCH_ORACLE_DEVICE"


def config_path(oracle: str) -> Path:
    from herobench.paths import data_dir

    return data_dir("oracles") / f"{oracle}.toml"


def load_config(cls: type[C], oracle: str, path: str | Path | None = None) -> C:
    """``oracles/<oracle>.toml`` (or ``path``) as the frozen dataclass ``cls``; a missing file gives the
    dataclass defaults."""
    path = Path(path) if path is not None else config_path(oracle)
    if not path.is_file():
        return cls()
    return from_dict(cls, load_toml(path), where="")


def oracle_device() -> str:
    """``$HEROBENCH_ORACLE_DEVICE``, else ``cuda`` when available, else ``cpu``."""
    return os.environ.get(ENV_DEVICE) or ("cuda" if torch.cuda.is_available() else "cpu")


def check_batch(images: torch.Tensor, prompts: list[str]) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected B×3×H×W images, got shape {tuple(images.shape)}")
    if len(prompts) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``B×3×H×W`` in ``[0, 1]`` -> ``B×H×W×3`` uint8 RGB (``herobench.core.images`` converts)."""
    from herobench.core.images import to_uint8 as convert

    return convert(images)


def graded(criteria: list[float], success: bool) -> float:
    """1.0 for a success, else ``0.9 ×`` the mean criterion met (each in ``[0, 1]``), like GlyphWorld's."""
    if success:
        return 1.0
    if not criteria:
        return 0.0
    return round(0.9 * float(np.clip(np.mean(criteria), 0.0, 1.0)), 4)


def make_verdict(
    attrs: dict,
    rule: Callable[[dict, str, str], tuple[bool, str]],
    score: Callable[[dict, bool], float],
    prompt: str,
    profile: str,
) -> Verdict:
    """The rule half: unreadable attrs (``readable`` False) give success False, score 0, reason
    ``unreadable: <what>``; otherwise the rule's verdict with a graded score."""
    if not attrs.get("readable", True):
        return Verdict(False, 0.0, f"unreadable: {attrs.get('what', 'nothing found')}", readable=False, attrs=attrs)
    ok, reason = rule(attrs, prompt, profile)
    return Verdict(bool(ok), float(score(attrs, ok)), reason, readable=True, attrs=attrs)
