"""Evaluation helpers: held-out noises, success rates and their Wilson intervals.

Evaluation is never charged to the feedback budget. Every method is evaluated on the same fixed
initial noises, drawn from a dedicated seed, so differences between methods are not noise draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from herobench.stats import wilson_interval
from herobench.types import Verdict


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


def _leaves(attrs: dict, prefix: str = "") -> dict[str, str | int | bool]:
    """The categorical leaves of an oracle's ``attrs`` (nested dicts flattened as ``a.b``; a list of strings
    as its sorted composition); floats and other lists are left out (a continuous value has no useful
    entropy over 128 images)."""
    out: dict[str, str | int | bool] = {}
    for key, value in attrs.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _leaves(value, name + ".")
        elif isinstance(value, str | int | bool) and key not in ("readable", "what"):
            out[name] = value
        elif isinstance(value, list) and value and all(isinstance(x, str) for x in value):
            out[name] = "|".join(sorted(value))  # a composition (e.g. the roses' colours), order-free
    return out


def attribute_entropy(verdicts: Sequence[Verdict]) -> dict[str, float]:
    """Per categorical attribute the oracle parsed (colours, counts, layouts …), the Shannon entropy in
    bits of its values over the readable images: the world's own measure of diversity. A method that wins
    by collapsing onto one colour or count shows an entropy falling to 0 beside its success."""
    leaves = [_leaves(v.attrs) for v in verdicts if v.readable]
    names = sorted({name for leaf in leaves for name in leaf})
    out = {}
    for name in names:
        values = [leaf[name] for leaf in leaves if name in leaf]
        counts = torch.tensor([values.count(u) for u in dict.fromkeys(values)], dtype=torch.float64)
        p = counts / counts.sum()
        out[name] = round(float(-(p * p.log2()).sum()) + 0.0, 4)
    return out


def pixel_diversity(images: torch.Tensor, prompts: Sequence[str]) -> float:
    """Mean pairwise RMS pixel distance between the images of the same prompt (``images`` N×3×H×W in
    [0, 1]), averaged over prompts weighted by their pairs; 0 when every image of a prompt is the same.
    NaN when no prompt has two images."""
    flat = images.detach().to("cpu", torch.float64).flatten(1)
    total, pairs = 0.0, 0
    for prompt in dict.fromkeys(prompts):
        idx = [i for i, q in enumerate(prompts) if q == prompt]
        if len(idx) < 2:
            continue
        d = torch.cdist(flat[idx], flat[idx]) / flat.shape[1] ** 0.5
        total += float(d.triu(1).sum())
        pairs += len(idx) * (len(idx) - 1) // 2
    return round(total / pairs, 6) if pairs else float("nan")


def guard_metrics(images: torch.Tensor, prompts: Sequence[str], verdicts: Sequence[Verdict]) -> dict:
    """Diversity guards reported beside success (issue 25): ``pixel_diversity`` (:func:`pixel_diversity`),
    ``success_diversity`` (the same among each prompt's successful images only) and ``attr_entropy``
    (:func:`attribute_entropy`, a dict; its mean over attributes as ``attr_entropy_mean``). Quality is
    ``summarise``'s ``unreadable_rate``.

    A method that gains success loses the failures' variety, so ``pixel_diversity`` falls even when nothing
    collapses; ``success_diversity`` separates the two: it stays near the untrained model's when the method
    only moved images into the success mode, and falls towards 0 when its successes become one image."""
    entropy = attribute_entropy(verdicts)
    mean = round(sum(entropy.values()) / len(entropy), 4) if entropy else float("nan")
    good = [i for i, v in enumerate(verdicts) if v.success]
    return {"pixel_diversity": pixel_diversity(images, prompts),
            "success_diversity": pixel_diversity(images[good], [prompts[i] for i in good]),
            "attr_entropy": entropy, "attr_entropy_mean": mean}


def successes_of(row: dict) -> list[bool] | None:
    """The per-image successes of an ``evals.jsonl`` row; None for rows written before they were recorded."""
    bits = row.get("successes")
    if not isinstance(bits, str) or set(bits) - {"0", "1"}:
        return None
    return [c == "1" for c in bits]
