"""HERO's feedback-guided generation: the next batch starts near the noises that worked.

The pool is the initial noise of the best image plus the initial noises of this batch's good images.
A fraction ``β`` of the next batch starts from the best noise, the rest from good noises chosen
uniformly (with replacement); each chosen noise ``z`` is perturbed to ``sqrt(1 - σ²)·z + σ·ε``,
``ε ~ N(0, I)``, which keeps unit variance when ``z`` has it. Everything here is a pure function of
its inputs and a ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch


def n_from_best(n: int, beta: float) -> int:
    """How many of ``n`` noises start from the best noise: ``round(β·n)``, halves rounded up."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    return min(n, int(math.floor(beta * n + 0.5)))


def perturb(z: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
    """``sqrt(1 - σ²)·z + σ·ε`` (variance-preserving mix)."""
    if not 0.0 <= sigma <= 1.0:
        raise ValueError(f"sigma must be in [0, 1], got {sigma}")
    return math.sqrt(1.0 - sigma**2) * z + sigma * eps


def next_noise(
    best_noise: torch.Tensor | None,
    good_noises: torch.Tensor,
    n: int,
    beta: float = 0.5,
    sigma: float = 0.1,
    rng: torch.Generator | None = None,
) -> torch.Tensor:
    """Initial noises of the next training batch.

    Args:
        best_noise: ``C×h×w`` initial noise of the best image so far, or None (no best yet).
        good_noises: ``G×C×h×w`` initial noises of this batch's good images other than the best
            (``G`` may be 0; its shape still gives ``C×h×w`` when there is no best).
        n: batch size.
        beta: fraction from the best noise (HERO: 0.5).
        sigma: perturbation scale (HERO: 0.1).
        rng: the source of all randomness (choices first, then ``ε``); its device is where the
            result is made.

    Returns:
        ``n×C×h×w`` float32: rows ``0 … round(β·n) - 1`` from the best noise, the rest from good
        noises. With no best: plain ``N(0, I)``. With an empty good pool: all rows from the best.
    """
    device = rng.device if rng is not None else torch.device("cpu")
    shape = tuple(best_noise.shape) if best_noise is not None else tuple(good_noises.shape[1:])
    if best_noise is None:
        return torch.randn((n, *shape), generator=rng, device=device)
    best = best_noise.to(device, torch.float32)
    good = good_noises.to(device, torch.float32)
    k = n_from_best(n, beta) if len(good) > 0 else n
    idx = torch.randint(len(good), (n - k,), generator=rng, device=device) if n > k else None
    chosen = best.expand(k, *shape) if idx is None else torch.cat([best.expand(k, *shape), good[idx]])
    eps = torch.randn((n, *shape), generator=rng, device=device)
    return perturb(chosen, eps, sigma)


def pool_eval_noise(
    best_noise: torch.Tensor | None,
    good_noises: torch.Tensor,
    eps: torch.Tensor,
    beta: float = 0.5,
    sigma: float = 0.1,
) -> torch.Tensor:
    """The pool at inference (the paper's generation; off by default in herobench): like
    :func:`next_noise` but deterministic, so every evaluation of a run uses the same noises: the
    harness' held-out noise ``eps`` (``n×C×h×w``) is the perturbation, rows ``0 … round(β·n) - 1`` start
    from the best noise and the rest cycle through the good noises in order. No best: ``eps`` itself."""
    if best_noise is None:
        return eps
    n = eps.shape[0]
    best = best_noise.to(eps.device, torch.float32)
    good = good_noises.to(eps.device, torch.float32)
    k = n_from_best(n, beta) if len(good) > 0 else n
    chosen = best.expand(n, *best.shape).clone()
    if n > k:
        chosen[k:] = good[torch.arange(n - k, device=eps.device) % len(good)]
    return perturb(chosen, eps.to(torch.float32), sigma)
