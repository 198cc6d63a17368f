"""Advantages and losses shared by HERO, DDPO and D3PO (pure functions of tensors)."""

from __future__ import annotations

import math
from collections import deque

import torch
import torch.nn.functional as F


def _standardize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float) -> torch.Tensor:
    return (x - mean) / (std + eps)


def normalize_advantages(
    rewards: torch.Tensor,
    prompts: list[str] | None = None,
    clip: float = 5.0,
    eps: float = 1e-8,
) -> torch.Tensor:
    """DDPO advantages: rewards standardised per batch, or per prompt, then clipped to ``±clip``.

    ``(r - mean) / (std + eps)`` with the population std (``ddof = 0``, numpy's default, as in
    ddpo-pytorch). Per prompt, each prompt's rewards are standardised with their own statistics; a
    prompt seen once gets advantage 0. Equal rewards give advantages 0 (no learning signal).

    Args:
        rewards: ``B`` rewards.
        prompts: ``B`` prompts for per-prompt normalisation; None normalises over the whole batch.
        clip: advantages are clamped to ``[-clip, clip]`` (HERO/DDPO: 5).
        eps: added to the std.

    Returns:
        ``B`` float32 advantages.
    """
    r = rewards.detach().to(torch.float32).flatten()
    if prompts is None:
        adv = _standardize(r, r.mean(), r.std(unbiased=False), eps)
    else:
        if len(prompts) != r.numel():
            raise ValueError(f"{len(prompts)} prompts for {r.numel()} rewards")
        adv = torch.empty_like(r)
        for p in dict.fromkeys(prompts):
            idx = torch.tensor([i for i, q in enumerate(prompts) if q == p])
            group = r[idx]
            adv[idx] = _standardize(group, group.mean(), group.std(unbiased=False), eps)
    return adv.clamp(-clip, clip)


class PerPromptStatTracker:
    """Per-prompt reward statistics kept over recent batches (ddpo-pytorch's ``PerPromptStatTracker``).

    For each prompt the last ``buffer_size`` rewards are kept (all of them when None). A prompt with
    fewer than ``min_count`` buffered rewards is standardised with the statistics of the current batch
    instead. Advantages are not clipped here (``normalize_advantages`` / ``ppo_update`` clip).
    """

    def __init__(self, buffer_size: int | None = 32, min_count: int = 16, eps: float = 1e-6):
        self.buffer_size = buffer_size
        self.min_count = min_count
        self.eps = eps
        self.buffers: dict[str, deque[float]] = {}

    def update(self, prompts: list[str], rewards: torch.Tensor) -> torch.Tensor:
        """Add this batch's rewards and return its ``B`` float32 advantages."""
        r = rewards.detach().to(torch.float32).flatten().cpu()
        if len(prompts) != r.numel():
            raise ValueError(f"{len(prompts)} prompts for {r.numel()} rewards")
        adv = torch.empty_like(r)
        for p in dict.fromkeys(prompts):
            idx = torch.tensor([i for i, q in enumerate(prompts) if q == p])
            buf = self.buffers.setdefault(p, deque(maxlen=self.buffer_size))
            buf.extend(r[idx].tolist())
            ref = torch.tensor(list(buf)) if len(buf) >= self.min_count else r
            adv[idx] = _standardize(r[idx], ref.mean(), ref.std(unbiased=False), self.eps)
        return adv

    def state_dict(self) -> dict:
        return {"buffers": {p: list(b) for p, b in self.buffers.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.buffers = {p: deque(v, maxlen=self.buffer_size) for p, v in state["buffers"].items()}


def ppo_clip_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DDPO's PPO-clip surrogate ``mean(-min(A·ρ, A·clip(ρ, 1-ε, 1+ε)))``, ``ρ = exp(log_prob - old)``.

    Args:
        log_prob: ``N`` log-probs under the current policy (differentiable).
        old_log_prob: ``N`` log-probs under the sampling policy.
        advantages: ``N`` advantages.
        clip_range: ``ε`` (DDPO/HERO: 1e-4).

    Returns:
        ``(loss, stats)``: scalar loss; ``stats["approx_kl"] = ½·mean((log_prob - old)²)`` and
        ``stats["clipfrac"] = mean(|ρ - 1| > ε)`` (detached scalars, as ddpo-pytorch logs them).
    """
    delta = log_prob - old_log_prob
    ratio = torch.exp(delta)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    stats = {
        "approx_kl": 0.5 * (delta.detach() ** 2).mean(),
        "clipfrac": ((ratio.detach() - 1.0).abs() > clip_range).float().mean(),
    }
    return loss, stats


def d3po_loss(
    logp_w: torch.Tensor,
    logp_l: torch.Tensor,
    ref_logp_w: torch.Tensor,
    ref_logp_l: torch.Tensor,
    beta: float = 0.1,
    ratio_clip: float | None = None,
) -> torch.Tensor:
    """D3PO's DPO loss on one denoising step: ``mean(-logsigmoid(β·(log ρ_w - log ρ_l)))``.

    ``ρ = exp(logp - ref_logp)`` is the policy/reference ratio of the step; with ``ratio_clip = c`` it is
    clamped to ``[1 - c, 1 + c]`` first, as the official code does (yk7333/d3po ``scripts/train.py:411-413``,
    ``c = config.train.eps = 0.1``, ``config/base.py:103``): outside the interval the item gives no
    gradient, so the loss of a pair is bounded, ``-logsigmoid(±β·(log(1 + c) - log(1 - c)))``
    (β 0.1, c 0.1: 0.6832 .. 0.7032). The official code writes the preference as ``±1`` weights on the
    two log-ratios (``human_prefer``, ``train.py:299-304``); with the winner first that is this form.

    Args:
        logp_w, logp_l: ``N`` step log-probs of the preferred / rejected trajectory, current policy
            (per latent element, the scale of the official code's ``ddim_step_with_logprob``).
        ref_logp_w, ref_logp_l: the same under the reference policy.
        beta: DPO temperature (D3PO: 0.1, ``config/base.py:101``).
        ratio_clip: ``c`` above (D3PO: 0.1); None is the plain DPO loss.

    Returns:
        Scalar loss; ``log 2`` when policy and reference agree.
    """
    log_ratio_w = logp_w - ref_logp_w
    log_ratio_l = logp_l - ref_logp_l
    if ratio_clip is not None:
        lo, hi = math.log1p(-ratio_clip), math.log1p(ratio_clip)
        log_ratio_w = log_ratio_w.clamp(lo, hi)
        log_ratio_l = log_ratio_l.clamp(lo, hi)
    return -F.logsigmoid(beta * (log_ratio_w - log_ratio_l)).mean()
