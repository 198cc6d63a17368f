"""Evaluation helpers: held-out noises, success rates and their Wilson intervals.

Evaluation is never charged to the feedback budget. Every method is evaluated on the same fixed
initial noises, drawn from a dedicated seed, so differences between methods are not noise draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from herobench.types import Verdict


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (95 % for ``z = 1.96``).

    Unlike the normal approximation it stays inside [0, 1] and is informative at k = 0 or k = n.
    ``n = 0`` gives the uninformative ``(0.0, 1.0)``.
    """
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def eval_noise(n: int, shape: Sequence[int], seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """``n×shape`` float32 standard-normal initial noises for held-out evaluation.

    Noise ``i`` comes from its own CPU generator seeded ``seed + i``, so it does not depend on ``n``,
    on the evaluation batch size or on the device: ``eval_noise(64, …)`` is the first half of
    ``eval_noise(128, …)``, and every method sees exactly the same noises. Keep ``seed`` far from the
    training seeds (default 10 000).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    shape = tuple(int(s) for s in shape)
    out = torch.empty((n, *shape), dtype=torch.float32)
    gen = torch.Generator(device="cpu")
    for i in range(n):
        gen.manual_seed(seed + i)
        out[i] = torch.randn(shape, generator=gen, dtype=torch.float32)
    return out.to(device)


def cycle_prompts(prompts: Sequence[str], n: int) -> list[str]:
    """``n`` prompts cycling through ``prompts`` (image ``i`` gets ``prompts[i % len(prompts)]``)."""
    if not prompts:
        raise ValueError("no prompts to cycle through")
    return [prompts[i % len(prompts)] for i in range(n)]


def summarise(verdicts: Sequence[Verdict], z: float = 1.96) -> dict[str, float | int]:
    """Success rate with its Wilson interval, and the share of unreadable images.

    Returns:
        ``{"success_rate", "lo", "hi", "n", "unreadable_rate", "mean_score"}``.

    Raises:
        ValueError: no verdicts.
    """
    n = len(verdicts)
    if n == 0:
        raise ValueError("cannot summarise zero verdicts")
    k = sum(bool(v.success) for v in verdicts)
    lo, hi = wilson_interval(k, n, z)
    return {
        "success_rate": k / n,
        "lo": lo,
        "hi": hi,
        "n": n,
        "unreadable_rate": sum(not v.readable for v in verdicts) / n,
        "mean_score": sum(float(v.score) for v in verdicts) / n,
    }


def per_image(verdicts: Sequence[Verdict]) -> dict[str, str | list[float]]:
    """Every image's verdict in evaluation-noise order, for paired comparisons between runs on the same
    noises: ``successes`` a string of ``0``/``1`` (image ``i`` is character ``i``) and ``scores`` the graded
    scores rounded to 4 decimals."""
    return {
        "successes": "".join("1" if v.success else "0" for v in verdicts),
        "scores": [round(float(v.score), 4) for v in verdicts],
    }


def successes_of(row: dict) -> list[bool] | None:
    """The per-image successes of an ``evals.jsonl`` row; None for rows written before they were recorded."""
    bits = row.get("successes")
    if not isinstance(bits, str) or set(bits) - {"0", "1"}:
        return None
    return [c == "1" for c in bits]
