"""The PPO (DDPO/HERO) and DPO (D3PO) update loops on a ``Rollout``, shared by every method.

Both follow ddpo-pytorch's training loop (scripts/train.py): pick random denoising steps of each
trajectory, recompute their log-probs with the current LoRA weights (``Generator.step_log_prob``,
CFG applied as at sampling time), accumulate gradients over the whole batch in micro-batches, clip the
gradient norm and take an optimizer step per group of trajectories (PPO: ``samples_per_step``; DPO:
``pairs_per_step`` pairs, D3PO's official one step per pair).

Log-prob scale. ``Rollout.log_probs`` are summed over the ``D = C·h·w`` latent elements (a true
log-density). ddpo-pytorch, HERO and D3PO average over them instead, and their hyper-parameters
(PPO clip range 1e-4, DPO beta 0.1) are tuned for that scale, so both updates feed the losses
``log_prob / D`` -- exactly the per-element average those codebases use.

Data parallel (``accelerate launch``, an ``Accelerator`` with ``num_processes > 1``). Every process
passes the *whole* batch (the same rollout, advantages, pairs and ``rng`` state) and draws the same
random steps and shuffles as one process would; each then computes only its contiguous share of every
optimizer step's (trajectory, step) items (:func:`process_share`), weights its micro-batch losses by the
*global* item count, and the gradients are summed over the processes before the clip
(:func:`clip_and_step`). The sum of the shares' gradients is the one-process gradient, so every process
takes the one-process step (up to float summation order) and the LoRA weights stay identical on all of
them. With no accelerator or one process the code path is the one-process one, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from herobench.core.generator import Generator
from herobench.core.lora import reference_policy
from herobench.core.losses import d3po_loss, ppo_clip_loss
from herobench.errors import ConfigError
from herobench.types import Rollout


@dataclass(frozen=True)
class PGConfig:
    """Training hyper-parameters (defaults: HERO's, from ddpo-pytorch).

    Attributes:
        lr: AdamW learning rate (HERO 1e-3; D3PO 3e-5).
        n_train_timesteps: denoising steps trained per trajectory, drawn at random without
            replacement (HERO: 5; capped at ``T``).
        clip_range: PPO ratio clip ``ε``.
        adv_clip: advantages are clamped to ``±adv_clip``.
        max_grad_norm: gradient-norm clip on the trained parameters.
        train_micro_batch: (trajectory, step) items per UNet forward/backward (memory bound only).
        inner_epochs: passes over the batch.
        cfg_in_training: recompute log-probs with classifier-free guidance, as sampled.
        samples_per_step: trajectories per optimizer step, shuffled each inner epoch (HERO's official
            config: train batch 2 × gradient accumulation 4 = 8, i.e. 8 steps per 64-image batch);
            0 = the whole batch, one step per inner epoch.
        early_fraction: the trained steps are drawn from the first ``max(1, int(T · early_fraction))``
            denoising steps only (x_T side), as Flow-GRPO's ``timestep_fraction`` keeps the first steps in
            order (flow_grpo ``scripts/train_sd3.py:345, :864``). 1.0 = every step (the paper's; consumes the
            RNG exactly as before). A labelled adaptation (issue 22, ``results/gradient-anatomy``): on
            GlyphWorld 82–96 % of the policy gradient's squared norm falls on the last two steps.
        kl_rows: trajectories (evenly spaced in the batch) on which the update's true per-step KL is
            measured after it (:func:`true_step_kl`: one extra no-grad UNet pass over ``kl_rows × T`` stored
            steps before and after the update); 0 = off. ``approx_kl`` (½·mean of the squared per-element-mean
            log-ratio) is ~1e-6 when a step moves by nats, so it cannot say whether, or where, a policy moved.
    """

    lr: float = 1e-3
    n_train_timesteps: int = 5
    clip_range: float = 1e-4
    adv_clip: float = 5.0
    max_grad_norm: float = 1.0
    train_micro_batch: int = 8
    inner_epochs: int = 1
    cfg_in_training: bool = True
    samples_per_step: int = 0
    kl_rows: int = 8
    early_fraction: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.early_fraction <= 1.0:
            raise ConfigError(f"early_fraction must be in (0, 1] (got {self.early_fraction})")
        for name in ("samples_per_step", "kl_rows"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("n_train_timesteps", "train_micro_batch", "inner_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "clip_range", "adv_clip", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")


def pg_config_from(options, **overrides) -> PGConfig:
    """A :class:`PGConfig` from a method's options dataclass: every field the two share by name, then
    ``overrides`` (e.g. ``n_train_timesteps`` resolved against the sampler)."""
    import dataclasses

    shared = {f.name for f in dataclasses.fields(PGConfig)} & {f.name for f in dataclasses.fields(options)}
    return PGConfig(**{name: getattr(options, name) for name in shared} | overrides)


def make_optimizer(params, lr: float, weight_decay: float = 1e-4) -> torch.optim.AdamW:
    """AdamW with ddpo-pytorch's settings (betas 0.9/0.999, eps 1e-8, weight decay 1e-4)."""
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)


def _params(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def backward(loss: torch.Tensor, accelerator=None) -> None:
    """``loss.backward()``, through the accelerator when there is one."""
    if accelerator is None:
        loss.backward()
    else:
        accelerator.backward(loss)


def _world(accelerator) -> int:
    return 1 if accelerator is None else accelerator.num_processes


def process_shares(n: int, accelerator=None) -> tuple[torch.Tensor, ...]:
    """``0..n-1`` split into one contiguous part per process, in process order (sizes differ by at most
    one; a part may be empty); one part with no accelerator or one process."""
    return torch.arange(n).tensor_split(_world(accelerator))


def process_share(n: int, accelerator=None) -> torch.Tensor:
    """The indices of ``0..n-1`` this process works on (its part of :func:`process_shares`)."""
    return process_shares(n, accelerator)[0 if _world(accelerator) == 1 else accelerator.process_index]


def _micro_batches(n: int, size: int, accelerator) -> list[torch.Tensor]:
    """This process' share of items ``0..n-1`` in micro-batches of ``size`` (none when the share is empty)."""
    return [chunk for chunk in process_share(n, accelerator).split(size) if len(chunk)]


def sum_over_processes(values: Sequence[float], accelerator=None) -> list[float]:
    """Each value summed over the processes (one all-reduce); unchanged with one process."""
    if _world(accelerator) == 1:
        return list(values)
    total = accelerator.reduce(torch.tensor(values, dtype=torch.float64, device=accelerator.device), "sum")
    return total.tolist()


def _sum_grads(params: list[torch.nn.Parameter], accelerator) -> None:
    """Sum every parameter's ``.grad`` over the processes, in one all-reduce of a flat buffer. A process
    with no gradient for a parameter (no item in this step) adds zeros; a parameter no process has a
    gradient for keeps ``None``, as in one process."""
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
    total = accelerator.reduce(torch.cat([*grads, has]), "sum")
    chunks = total[: -len(params)].split([p.numel() for p in params])
    for p, g, n_has in zip(params, chunks, total[-len(params) :].tolist()):
        p.grad = g.reshape(p.shape).to(p.dtype) if n_has else None


def clip_and_step(optimizer, max_grad_norm: float, accelerator=None) -> float:
    """Sum the gradients over the processes (data parallel: each weighted its losses by the global item
    count), clip their norm, take one optimizer step and clear them. Returns the norm before clipping."""
    if _world(accelerator) > 1:
        _sum_grads(_params(optimizer), accelerator)
    params = [p for p in _params(optimizer) if p.grad is not None]
    if accelerator is None:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        norm = accelerator.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm) if norm is not None else float("nan")


def check_accelerator(accelerator) -> None:
    """Refuse an Accelerator that accumulates gradients itself: the update loops accumulate (Accelerate
    would divide the loss again)."""
    if accelerator is not None and accelerator.gradient_accumulation_steps != 1:
        raise ValueError(
            "pass an Accelerator with gradient_accumulation_steps=1 (the update loops accumulate)"
        )


def _random_steps(n: int, n_steps: int, k: int, rng: torch.Generator) -> torch.Tensor:
    """``n×k`` distinct step indices per row, uniformly at random (ddpo-pytorch's per-sample randperm)."""
    return torch.stack([torch.randperm(n_steps, generator=rng)[:k] for _ in range(n)])


def train_window(n_steps: int, early_fraction: float) -> int:
    """How many of the first denoising steps PPO may train: ``max(1, int(T · early_fraction))``."""
    return n_steps if early_fraction >= 1.0 else max(1, int(n_steps * early_fraction))


def diagnostic_rows(n: int, k: int) -> torch.Tensor:
    """``min(k, n)`` evenly spaced row indices of an ``n``-row batch (no RNG is consumed)."""
    k = min(k, n)
    return torch.linspace(0, n - 1, k).round().long() if k else torch.zeros(0, dtype=torch.long)


def _all_step_means(gen: Generator, rollout: Rollout, rows: torch.Tensor, use_cfg: bool):
    n_steps = rollout.log_probs.shape[1]
    return gen.step_means(rollout, torch.arange(n_steps), batch_idx=rows, use_cfg=use_cfg)


def true_step_kl(mean_old: torch.Tensor, mean_new: torch.Tensor, std: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``n_rows×T`` KL(π_old ‖ π_new) of each stored step's Gaussian, ``Σ_d (μ_new − μ_old)² / 2σ_t²``
    (both have the step's σ_t; a deterministic step, σ = 0, counts 0). Inputs: flat ``n_rows·T×C×h×w``
    means and ``n_rows·T×1×1×1`` standard deviations, rows together (:meth:`Generator.step_means`)."""
    sq = (mean_new - mean_old).pow(2).flatten(1).sum(1)
    var = std.reshape(-1).pow(2)
    kl = torch.where(var > 0, sq / (2 * torch.where(var > 0, var, torch.ones_like(var))), torch.zeros_like(sq))
    return kl.reshape(n_rows, -1)


def kl_summary(kl: torch.Tensor) -> dict[str, float | list[float]]:
    """From ``n_rows×T`` per-step KLs: ``kl_true`` (per trajectory: summed over steps, mean over rows),
    ``kl_true_high_noise_share`` (the share of it in the first half of the steps, x_T side) and
    ``kl_true_per_step`` (``T`` means over rows)."""
    per_step = kl.mean(0)
    total = float(per_step.sum())
    half = per_step.numel() // 2
    share = float(per_step[:half].sum()) / total if total > 0 else float("nan")
    return {"kl_true": total, "kl_true_high_noise_share": share, "kl_true_per_step": per_step.tolist()}


def accumulate_and_step(
    optimizer: torch.optim.Optimizer,
    optimizer_steps: Iterable[tuple[torch.Tensor, ...]],
    item_loss: Callable[..., tuple[torch.Tensor, dict[str, Any]]],
    keys: Sequence[str],
    total: int,
    cfg: PGConfig,
    accelerator=None,
) -> tuple[dict[str, float], float, int]:
    """The skeleton of every update loop here (PPO, DPO, GRPO): gradients accumulated over micro-batches,
    one clipped optimizer step per group of items (ddpo-pytorch ``scripts/train.py``'s inner loop).

    Each element of ``optimizer_steps`` is one optimizer step's items, as equal-length index tensors
    (e.g. trajectory rows and denoising steps); it is drawn lazily, so an update's random draws happen in
    the order they would in a hand-written loop. This process takes its share of the items
    (:func:`process_share`) in micro-batches of ``cfg.train_micro_batch``; ``item_loss`` gets each
    micro-batch's index tensors and returns its mean loss and statistics; the loss is backpropagated weighted
    by the micro-batch's share of the step (the step's gradient is the mean over its items), each statistic is
    summed weighted by its share of ``total`` items; then :func:`clip_and_step`.

    Returns:
        ``(sums, grad_norm, n_optimizer_steps)``: ``keys`` summed over every process (a key ``item_loss``
        does not return counts 0), the last step's norm before clipping (NaN without a step), the step count.
    """
    sums = dict.fromkeys(keys, 0.0)
    grad_norm = float("nan")
    n_opt_steps = 0
    optimizer.zero_grad(set_to_none=True)
    for items in optimizer_steps:
        g_total = len(items[0])
        for chunk in _micro_batches(g_total, cfg.train_micro_batch, accelerator):
            loss, stats = item_loss(*(t[chunk] for t in items))
            backward(loss * (len(chunk) / g_total), accelerator)  # micro-batch means -> step mean
            weight = len(chunk) / total
            for key, value in stats.items():
                sums[key] += float(value) * weight
        grad_norm = clip_and_step(optimizer, cfg.max_grad_norm, accelerator)
        n_opt_steps += 1
    return dict(zip(sums, sum_over_processes(list(sums.values()), accelerator))), grad_norm, n_opt_steps


class TrueKL:
    """The update's true per-step KL on ``cfg.kl_rows`` evenly spaced rows (:func:`diagnostic_rows`): build it
    before the update (one no-grad pass over their stored steps), call :meth:`summary` after (one more).
    ``cfg.kl_rows = 0``: no pass, and an empty summary."""

    def __init__(self, gen: Generator, rollout: Rollout, cfg: PGConfig):
        self.gen, self.rollout, self.use_cfg = gen, rollout, cfg.cfg_in_training
        self.rows = diagnostic_rows(rollout.log_probs.shape[0], cfg.kl_rows)
        if len(self.rows):
            self.mean_old, self.std = _all_step_means(gen, rollout, self.rows, self.use_cfg)

    def summary(self) -> dict[str, float | list[float]]:
        """:func:`kl_summary` of the policy's move since construction (``{}`` without rows)."""
        if not len(self.rows):
            return {}
        mean_new, _ = _all_step_means(self.gen, self.rollout, self.rows, self.use_cfg)
        return kl_summary(true_step_kl(self.mean_old, mean_new, self.std, len(self.rows)))


def ppo_inputs(rollout: Rollout, advantages: torch.Tensor, cfg: PGConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(adv, old)``: the ``B`` advantages clamped to ``±adv_clip`` and the ``B×T`` sampling-time log-probs
    per latent element (module docstring), on the rollout's device; the advantages' shape is checked."""
    n = rollout.log_probs.shape[0]
    if tuple(advantages.shape) != (n,):
        raise ValueError(f"advantages has shape {tuple(advantages.shape)}, expected ({n},)")
    dev = rollout.log_probs.device
    adv = advantages.detach().to(dev, torch.float32).clamp(-cfg.adv_clip, cfg.adv_clip)
    return adv, rollout.log_probs.detach().to(torch.float32) / rollout.latents[0, 0].numel()


def _ppo_steps(n: int, window: int, k: int, cfg: PGConfig, rng: torch.Generator):
    """PPO's optimizer steps, lazily: per inner epoch ``k`` random steps of each trajectory, then the
    trajectories shuffled into groups of ``samples_per_step`` (ddpo-pytorch), or the whole batch in order."""
    for _ in range(cfg.inner_epochs):
        steps = _random_steps(n, window, k, rng)
        if cfg.samples_per_step and cfg.samples_per_step < n:
            groups = list(torch.randperm(n, generator=rng).split(cfg.samples_per_step))
        else:
            groups = [torch.arange(n)]
        for group in groups:
            yield group.repeat_interleave(k), steps[group].reshape(-1)


def _ppo_item_loss(gen: Generator, rollout: Rollout, adv: torch.Tensor, old: torch.Tensor, cfg: PGConfig,
                   rows: torch.Tensor, st: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """``ppo_clip_loss`` of (trajectory ``rows``, step ``st``) items, their log-probs recomputed now."""
    log_prob = gen.step_log_prob(rollout, st[:, None], batch_idx=rows, use_cfg=cfg.cfg_in_training)[:, 0]
    dev = rollout.log_probs.device
    rows_d, st_d = rows.to(dev), st.to(dev)
    loss, stats = ppo_clip_loss(log_prob / rollout.latents[0, 0].numel(), old[rows_d, st_d], adv[rows_d],
                                cfg.clip_range)
    return loss, {"loss": loss.detach(), "approx_kl": stats["approx_kl"], "clipfrac": stats["clipfrac"]}


def ppo_update(
    gen: Generator,
    rollout: Rollout,
    advantages: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    cfg: PGConfig,
    rng: torch.Generator,
    accelerator=None,
) -> dict[str, float]:
    """DDPO's PPO-clip update on one sampled batch.

    Per inner epoch: for every trajectory ``n_train_timesteps`` random steps (of the first
    ``train_window(T, early_fraction)``, all ``T`` by default); for each (trajectory, step) the recomputed
    log-prob enters ``ppo_clip_loss`` against the sampling-time log-prob with the trajectory's advantage
    (clamped to ``±adv_clip``); each optimizer step (``samples_per_step`` shuffled trajectories, or the
    whole batch) takes the mean over its items (:func:`accumulate_and_step`).

    Args:
        gen: the generator whose UNet (with LoRA) is trained.
        rollout: the batch, sampled by ``gen`` with the weights of before this update.
        advantages: ``B`` advantages (e.g. ``normalize_advantages(rewards)``).
        optimizer: holds the trained parameters (``make_optimizer(lora_parameters(unet), cfg.lr)``).
        cfg: hyper-parameters.
        rng: CPU generator for the step choice and the shuffle.
        accelerator: optional ``accelerate.Accelerator`` (``gradient_accumulation_steps=1``); with several
            processes the update is data parallel (module docstring).

    Returns:
        ``loss``, ``approx_kl``, ``clipfrac`` (means over items and epochs, over all processes),
        ``grad_norm`` (before clipping, last step), ``n_items`` (B·K per epoch), ``n_optimizer_steps``;
        with ``cfg.kl_rows`` also :func:`kl_summary`'s ``kl_true``, ``kl_true_high_noise_share`` and
        ``kl_true_per_step`` (a ``T`` list).
    """
    check_accelerator(accelerator)
    n, n_steps = rollout.log_probs.shape
    adv, old = ppo_inputs(rollout, advantages, cfg)
    window = train_window(n_steps, cfg.early_fraction)
    k = min(cfg.n_train_timesteps, window)
    kl = TrueKL(gen, rollout, cfg)
    sums, grad_norm, n_opt_steps = accumulate_and_step(
        optimizer, _ppo_steps(n, window, k, cfg, rng), partial(_ppo_item_loss, gen, rollout, adv, old, cfg),
        ("loss", "approx_kl", "clipfrac"), n * k, cfg, accelerator)
    out = {name: value / cfg.inner_epochs for name, value in sums.items()}
    out.update(grad_norm=grad_norm, n_items=float(n * k), n_optimizer_steps=float(n_opt_steps))
    out.update(kl.summary())
    return out


def reference_log_probs(
    gen: Generator,
    rollout: Rollout,
    rows: Sequence[int],
    cfg: PGConfig,
) -> torch.Tensor:
    """Log-probs of every stored step of ``rows`` under the *initial* policy: the UNet with its LoRA
    adapter disabled (``core.lora.reference_policy``; the adapter starts as a no-op, ``B = 0``).

    This is D3PO's frozen reference: the official code deep-copies the UNet before training and freezes
    it (yk7333/d3po ``scripts/train.py:253-255``; ``scripts/rm/train_d3po.py:124-126``, before the LoRA
    layers are attached). With PEFT no copy is needed. Computed once per batch without gradients, then
    reused by every pass (the official code recomputes it at every step: same values, more compute).
    With several processes every process computes all of it (no communication; identical bits).

    Args:
        gen, rollout, cfg: as in :func:`dpo_update` (``cfg.train_micro_batch`` items per UNet call,
            ``cfg.cfg_in_training`` as in training).
        rows: the rollout rows needed (e.g. every image that appears in a pair).

    Returns:
        ``B×T`` float32, summed over latent elements like ``Rollout.log_probs``; NaN in rows not asked for.
    """
    n, n_steps = rollout.log_probs.shape
    out = torch.full((n, n_steps), float("nan"), dtype=torch.float32, device=rollout.log_probs.device)
    rows_t = torch.as_tensor(sorted({int(r) for r in rows}), dtype=torch.long)
    if rows_t.numel() == 0:
        return out
    item_rows = rows_t.repeat_interleave(n_steps)
    item_steps = torch.arange(n_steps).repeat(rows_t.numel())
    with torch.no_grad(), reference_policy(gen.components.unet):
        for chunk in torch.arange(item_rows.numel()).split(cfg.train_micro_batch):
            r, st = item_rows[chunk], item_steps[chunk]
            lp = gen.step_log_prob(rollout, st[:, None], batch_idx=r, use_cfg=cfg.cfg_in_training)[:, 0]
            out[r.to(out.device), st.to(out.device)] = lp.to(out.device, torch.float32)
    return out


def _pair_rows(pairs: Sequence[tuple[int, int]], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The winners' and the losers' row indices of ``pairs``, checked against a batch of ``n``."""
    win = torch.tensor([int(w) for w, _ in pairs], dtype=torch.long)
    lose = torch.tensor([int(loser) for _, loser in pairs], dtype=torch.long)
    if min(win.min(), lose.min()) < 0 or max(win.max(), lose.max()) >= n:
        raise ValueError(f"pair index out of range for a batch of {n}")
    return win, lose


def _dpo_reference(rollout: Rollout, ref_log_probs: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
    """DPO's reference, per latent element (``B×T``), checked for shape and finite on ``rows``.

    ``ref_log_probs`` (``B×T``, summed over latent elements like ``Rollout.log_probs``; e.g.
    :func:`reference_log_probs`, the frozen initial policy) when given; otherwise the log-probs stored at
    sampling time, i.e. the policy that sampled this batch (exact and free; the loss of a first epoch then
    starts at ``log 2``)."""
    n, n_steps = rollout.log_probs.shape
    if ref_log_probs is None:
        ref_log_probs = rollout.log_probs
    if tuple(ref_log_probs.shape) != (n, n_steps):
        raise ValueError(f"ref_log_probs has shape {tuple(ref_log_probs.shape)}, expected ({n}, {n_steps})")
    dev = rollout.log_probs.device
    ref = ref_log_probs.detach().to(dev, torch.float32) / rollout.latents[0, 0].numel()
    if not bool(torch.isfinite(ref[rows.to(dev)]).all()):
        raise ValueError("ref_log_probs is not finite on every row of a pair")
    return ref


def _dpo_steps(n_pairs: int, n_steps: int, k: int, size: int, cfg: PGConfig, rng: torch.Generator):
    """DPO's optimizer steps, lazily: per inner epoch ``k`` random steps per pair (both images share them),
    then the pairs in the given order, ``size`` per optimizer step."""
    for _ in range(cfg.inner_epochs):
        steps = _random_steps(n_pairs, n_steps, k, rng)
        for first in range(0, n_pairs, size):
            step_pairs = torch.arange(first, min(first + size, n_pairs))  # this optimizer step's pairs
            yield step_pairs.repeat_interleave(k), steps[step_pairs].reshape(-1)


def _dpo_item_loss(gen: Generator, rollout: Rollout, win: torch.Tensor, lose: torch.Tensor, ref: torch.Tensor,
                   cfg: PGConfig, beta: float, ratio_clip: float | None, item_pairs: torch.Tensor,
                   st: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """``d3po_loss`` of (pair, step) items, both images' log-probs recomputed now in one UNet call; stats
    ``loss``, ``margin`` (unclamped ``β·((lw - rw) - (ll - rl))``) and ``clipfrac`` (share of the
    log-ratios outside the clamp; left out without one, so it stays 0)."""
    w, lo = win[item_pairs], lose[item_pairs]
    log_prob = gen.step_log_prob(rollout, torch.cat([st, st])[:, None], batch_idx=torch.cat([w, lo]),
                                 use_cfg=cfg.cfg_in_training)
    lp_w, lp_l = (log_prob[:, 0] / rollout.latents[0, 0].numel()).split(len(st))
    dev = rollout.log_probs.device
    st_d = st.to(dev)
    ref_w, ref_l = ref[w.to(dev), st_d], ref[lo.to(dev), st_d]
    loss = d3po_loss(lp_w, lp_l, ref_w, ref_l, beta=beta, ratio_clip=ratio_clip)
    log_ratios = torch.cat([lp_w.detach() - ref_w, lp_l.detach() - ref_l])
    m = len(st)
    stats = {"loss": loss.detach(), "margin": (beta * (log_ratios[:m] - log_ratios[m:])).mean()}
    if ratio_clip is not None:
        lo_r, hi_r = math.log1p(-ratio_clip), math.log1p(ratio_clip)
        stats["clipfrac"] = ((log_ratios < lo_r) | (log_ratios > hi_r)).float().reshape(2, -1).mean(0).mean()
    return loss, stats


def dpo_update(
    gen: Generator,
    rollout: Rollout,
    pairs: Sequence[tuple[int, int]],
    optimizer: torch.optim.Optimizer,
    cfg: PGConfig,
    rng: torch.Generator,
    beta: float = 0.1,
    accelerator=None,
    ratio_clip: float | None = None,
    ref_log_probs: torch.Tensor | None = None,
    pairs_per_step: int = 0,
) -> dict[str, float]:
    """D3PO's update: a DPO loss on the denoising steps of (winner, loser) pairs, in the order given.

    Per inner epoch: for every pair ``n_train_timesteps`` random steps (the same for both images: they share
    their initial noise in D3PO); ``pairs_per_step`` pairs (0 = all) per optimizer step, the mean of
    ``d3po_loss`` over its (pair, step) items (:func:`accumulate_and_step`). D3PO's official setting is one
    pair per optimizer step over all its timesteps (yk7333/d3po ``scripts/train.py:76``, ``:293-420``).

    Args:
        gen, rollout, optimizer, cfg, rng, accelerator: as in ``ppo_update``.
        pairs: ``(winner, loser)`` row indices into the rollout.
        beta: DPO temperature (D3PO: 0.1, ``config/base.py:101``).
        ratio_clip: clamp each policy/reference ratio to ``[1 - c, 1 + c]`` as the official code does with
            ``c = 0.1`` (``scripts/train.py:411-412``, ``config/base.py:103``); None: the plain DPO loss.
        ref_log_probs: the reference (:func:`_dpo_reference`; default: the sampling policy), finite at
            every trained item.
        pairs_per_step: pairs per optimizer step (0 = all pairs in one step per epoch).

    Returns:
        ``loss``, ``margin``, ``clipfrac`` (:func:`_dpo_item_loss`; means over items and epochs, each item
        scored before the step it enters), ``grad_norm`` (last step), ``n_pairs``, ``n_items`` (per
        epoch), ``n_optimizer_steps``; with no pairs nothing is updated and zeros are returned.
    """
    check_accelerator(accelerator)
    n, n_steps = rollout.log_probs.shape
    if pairs_per_step < 0:
        raise ValueError(f"pairs_per_step must be >= 0, got {pairs_per_step}")
    if not pairs:
        keys = ("loss", "margin", "clipfrac", "grad_norm", "n_pairs", "n_items", "n_optimizer_steps")
        return dict.fromkeys(keys, 0.0)
    win, lose = _pair_rows(pairs, n)
    ref = _dpo_reference(rollout, ref_log_probs, torch.cat([win, lose]))
    k = min(cfg.n_train_timesteps, n_steps)
    total = len(pairs) * k
    sums, grad_norm, n_opt_steps = accumulate_and_step(
        optimizer, _dpo_steps(len(pairs), n_steps, k, pairs_per_step or len(pairs), cfg, rng),
        partial(_dpo_item_loss, gen, rollout, win, lose, ref, cfg, beta, ratio_clip),
        ("loss", "margin", "clipfrac"), total, cfg, accelerator)
    out = {name: value / cfg.inner_epochs for name, value in sums.items()}
    out.update(grad_norm=grad_norm, n_pairs=float(len(pairs)), n_items=float(total),
               n_optimizer_steps=float(n_opt_steps))
    return out
