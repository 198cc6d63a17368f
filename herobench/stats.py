"""Statistics on success counts: Wilson intervals, and paired statistics for runs evaluated on the same
noises and prompts.

Every method is evaluated on the same held-out noises (``harness/evaluate.py``), so two runs' verdicts on
image ``i`` are paired: an image that is bad for the untrained model and good after finetuning is a
*discordant* pair. McNemar's test on the discordant counts is far sharper than comparing two Wilson
intervals, which treat the two samples as independent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


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


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair-coin trials: the probability of an outcome at
    most as likely as ``k`` (scipy's ``binomtest(k, n, 0.5)``; symmetric, so twice the smaller tail, capped
    at 1). ``n = 0`` gives 1."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    lo = min(k, n - k)
    tail = sum(_binom_pmf(i, n, 0.5) for i in range(lo + 1))  # in log space: 2**n overflows beyond n = 1023
    return min(1.0, 2.0 * tail) if 2 * lo != n else 1.0


def _binom_pmf(k: int, n: int, p: float) -> float:
    """``P(Bin(n, p) = k)``, through log-gamma so that large ``n`` neither overflows nor loses precision."""
    if p in (0.0, 1.0):
        return float(k == (n if p == 1.0 else 0))
    log = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)
    return math.exp(log)


@dataclass(frozen=True)
class Paired:
    """Per-image comparison of a run B against a run A on the same images.

    ``gained``: bad in A, good in B; ``lost``: good in A, bad in B; ``p``: exact McNemar p-value
    (two-sided binomial on the discordant pairs)."""

    n: int
    success_a: float
    success_b: float
    gained: int
    lost: int
    p: float


def paired(a: Sequence[bool], b: Sequence[bool]) -> Paired:
    """Compare ``b`` against ``a``, image by image (the same images in the same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired verdicts need the same images: {len(a)} vs {len(b)}")
    if not a:
        raise ValueError("no images to compare")
    gained = sum(1 for x, y in zip(a, b) if not x and y)
    lost = sum(1 for x, y in zip(a, b) if x and not y)
    n = len(a)
    return Paired(n, sum(map(bool, a)) / n, sum(map(bool, b)) / n, gained, lost,
                  binom_two_sided(gained, gained + lost))


def mcnemar_power(n: int, gain: float, loss: float, alpha: float = 0.05) -> float:
    """Power of the exact McNemar test (:func:`paired`) at level ``alpha`` on ``n`` paired images, when each
    image independently turns bad → good with probability ``gain`` and good → bad with ``loss`` (the
    success difference is ``gain − loss``; ``loss`` is the churn a finetuned model has anyway). Exact:
    the discordant count ``D ~ Bin(n, gain + loss)``, the gains given ``D`` ``~ Bin(D, gain / (gain + loss))``."""
    if n < 0 or gain < 0 or loss < 0 or gain + loss > 1:
        raise ValueError(f"need n >= 0 and gain, loss >= 0 with gain + loss <= 1 (got {n}, {gain}, {loss})")
    d_rate = gain + loss
    if d_rate == 0:
        return 0.0
    q = gain / d_rate
    power = 0.0
    for d in range(n + 1):
        p_d = _binom_pmf(d, n, d_rate)
        if p_d < 1e-15:
            continue
        # the rejection region is symmetric and its edges move monotonically: gains <= c or >= d - c
        c = max((k for k in range(d // 2 + 1) if binom_two_sided(k, d) < alpha), default=-1)
        power += p_d * sum(_binom_pmf(k, d, q) for k in range(d + 1) if k <= c or k >= d - c)
    return power


# ------------------------------------------------------------------------------------------ seed aggregates
# rliable's definitions (Agarwal et al., NeurIPS 2021, "Deep RL at the Edge of the Statistical Precipice";
# google-research/rliable, archived): the interquartile mean of all runs' scores, the probability that a run
# of X beats a run of Y averaged over tasks, and percentile intervals from a bootstrap that resamples runs
# within each task (stratified).


def iqm(scores: Sequence[float]) -> float:
    """Interquartile mean: the mean after cutting ``int(0.25·n)`` scores from each end of the sorted scores
    (``scipy.stats.trim_mean(scores, 0.25)``; with fewer than 4 scores nothing is cut)."""
    x = sorted(float(s) for s in scores)
    if not x:
        raise ValueError("iqm of no scores")
    cut = int(0.25 * len(x))
    kept = x[cut:len(x) - cut]
    return sum(kept) / len(kept)


def prob_improvement(x_by_task: Sequence[Sequence[float]], y_by_task: Sequence[Sequence[float]]) -> float:
    """``P(X > Y)``: for each task the share of (x-run, y-run) pairs where x scores higher (ties count ½) --
    the Mann–Whitney U statistic over ``n·m`` -- averaged over tasks."""
    if len(x_by_task) != len(y_by_task) or not x_by_task:
        raise ValueError("need the same tasks, at least one, for both methods")
    per_task = []
    for xs, ys in zip(x_by_task, y_by_task):
        if not xs or not ys:
            raise ValueError("every task needs runs of both methods")
        wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in xs for b in ys)
        per_task.append(wins / (len(xs) * len(ys)))
    return sum(per_task) / len(per_task)


def stratified_bootstrap_ci(
    statistic, samples_by_task: Sequence[Sequence[Sequence[float]]], reps: int = 2000, seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(*resampled)``, where each argument is a list over tasks of run
    scores and every (argument, task) list is resampled with replacement on its own (rliable's stratified
    bootstrap). ``samples_by_task``: one entry per argument of ``statistic``. Seeded: same input, same
    interval."""
    import numpy as np

    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        args = [[[xs[i] for i in rng.integers(0, len(xs), len(xs))] for xs in arg] for arg in samples_by_task]
        values.append(statistic(*args))
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
