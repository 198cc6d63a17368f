"""GRPO for diffusion (Flow-GRPO, Liu et al. 2025; DanceGRPO, Xue et al. 2025) on good/bad labels.

The policy gradient of DDPO with three changes, each read from the official code (docs/FIDELITY.md (GRPO, reward model)
has the row-by-row comparison; yifan123/flow_grpo at ac4c86e, XueZeyue/DanceGRPO at 15cc71d):

* **Group advantages.** The images of one prompt in a batch form a group; an image's advantage is its reward
  minus its group's mean, divided by the std of *all* rewards of the batch plus 1e-4 (``std = "global"``:
  flow_grpo ``flow_grpo/stat_tracking.py:22-31``, ``sample.global_std = True`` in every GRPO config,
  ``config/grpo.py:54``; ``"group"`` is the per-group std of ``global_std = False``, ``stat_tracking.py:29``),
  clamped to ±5 (``scripts/train_sd3.py:881-885``). The statistics are the batch's own (the tracker is cleared
  every epoch, ``train_sd3.py:780``). Images whose advantage is 0 -- every image of a group with one label
  for all -- are left out of the update (``train_sd3.py:796-817``), so they add neither to the policy loss'
  mean nor to the KL term. A task with one prompt is one group: the advantage is then DDPO's batch-normalised
  advantage (``normalize_advantages(rewards)``) up to the std's eps (1e-4 here, 1e-8 there).
* **KL to the reference.** ``loss = mean(PPO-clip) + β·mean(KL)`` with β 0.04 (``config/grpo.py:52``, ``:91``;
  ``train_sd3.py:893-897``). The reference is the initial model: the LoRA adapter disabled
  (``transformer.module.disable_adapter()``, ``train_sd3.py:876-878``; here ``core.lora.reference_policy``).
  The KL of one step is computed on the Gaussians' means, ``mean_d (μ_θ − μ_ref)² / (2 s²)``
  (``train_sd3.py:895``). Adaptation to herobench's DDIM/ε model: μ are DDIM's step means (DDIM eq. 12,
  ``core.ddim.ddim_step_mean``) and ``s`` the step's standard deviation σ_t(η) (eq. 16), which makes the term the
  exact per-element KL of the two step Gaussians -- the KL of the paper. Flow-GRPO's ``s`` is its SDE's
  diffusion coefficient ``std_dev_t`` without the ``√Δt`` of its step std
  (``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py:47``, ``:59``), so its code's term is ``Δt`` times the
  exact KL (flow_grpo issue #78); a DDIM step has no separate diffusion coefficient, so β here weighs the exact
  KL (a labelled deviation; β·Δt, e.g. 0.04/20 on 20 uniform steps, reproduces the code's weight).
* **Timesteps and steps.** The first ``int(T · 0.99)`` denoising steps of every trajectory, i.e. all but the last
  (``config/grpo.py:50``, ``train_sd3.py:345``, ``:864``; DanceGRPO too drops the last step,
  ``fastvideo/train_grpo_sd.py:86``, ``:505-512``); the trained images shuffled (``train_sd3.py:829``) into
  2 optimizer steps per batch ("gradients are updated twice per epoch", ``config/grpo.py:44``; DanceGRPO's SD
  config gives 2 as well, ``fastvideo/config_sd/dgx.py:49``), each the mean over its (image, step) items.

PPO clip 1e-4, lr 3e-4, AdamW, grad-norm clip 1.0, CFG in training (``config/base.py:63-86``); unlike Flow-GRPO
the unconditional branch is not detached (``train_sd3.py:190``), as in DanceGRPO's DDIM trainer
(``train_grpo_sd.py:611-622``) and herobench's shared training path; LoRA is herobench's shared rank 4 (Flow-GRPO: 32,
``train_sd3.py:429-433``) and no EMA of the weights is evaluated (Flow-GRPO evaluates one, ``train_sd3.py:218-219``,
``:445``). The sampler is
herobench's shared DDIM sampler (η 1, DanceGRPO's SD path, ``config_sd/base.py:45-50``) rather than
Flow-GRPO's flow SDE; log-probs and the KL are per latent element as in both codebases
(``sd3_sde_with_logprob.py:67-68``). ``shared_noise = true`` starts every image of a batch from one ``x_T``, as
DanceGRPO does (``train_grpo_sd.py:415-420``, ``:434-435``); Flow-GRPO draws each image's noise
(``sd3_pipeline_with_logprob.py:108-117``), the default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import torch

from herobench.config import check_ranges, in_range
from herobench.core.ddim import ddim_step_mean, ddim_step_with_logprob
from herobench.core.lora import reference_policy
from herobench.core.losses import ppo_clip_loss
from herobench.core.policy_gradient import (
    PGConfig,
    TrueKL,
    accumulate_and_step,
    check_accelerator,
    ppo_inputs,
)
from herobench.errors import ConfigError
from herobench.methods.base import LoRAMethod, PPOOptions, labels_tensor, lr_option, prefixed
from herobench.types import Feedback, Rollout

STD_EPS = 1e-4  # flow_grpo/stat_tracking.py:27, :29


def group_advantages(
    rewards: torch.Tensor, prompts: list[str], std: Literal["global", "group"] = "global", eps: float = STD_EPS
) -> torch.Tensor:
    """Flow-GRPO's advantages: ``(r_i − mean_{g(i)}) / (s + eps)``, the group of an image being its prompt.

    ``s`` is the population std (``ddof = 0``, numpy's) of all ``B`` rewards (``"global"``) or of the image's
    group (``"group"``). Not clipped (the update clamps to ``±adv_clip``). A group of equal rewards gets 0.

    Args:
        rewards: ``B`` rewards.
        prompts: ``B`` prompts (the group keys).
        std: see above.
        eps: added to the std.

    Returns:
        ``B`` float32 advantages (computed in float64, so a group of equal rewards gives exactly 0).
    """
    r = rewards.detach().to("cpu", torch.float64).flatten()
    if len(prompts) != r.numel():
        raise ValueError(f"{len(prompts)} prompts for {r.numel()} rewards")
    if std not in ("global", "group"):
        raise ValueError(f"unknown std {std!r}")
    adv = torch.empty_like(r)
    for p in dict.fromkeys(prompts):
        idx = torch.tensor([i for i, q in enumerate(prompts) if q == p])
        g = r[idx]
        s = r.std(unbiased=False) if std == "global" else g.std(unbiased=False)
        adv[idx] = (g - g.mean()) / (s + eps)
    return adv.to(torch.float32)


def step_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-element KL of one DDIM step's Gaussian from the reference's: ``mean_d (μ − μ_ref)² / (2σ²)``.

    Both Gaussians have the step's σ_t, so this is the exact KL divided by the ``D`` latent elements (the
    per-element scale of the log-probs); a deterministic step (σ = 0) counts 0.

    Args:
        mean, mean_ref: ``N×C×h×w`` step means (``mean`` may carry gradients).
        std: ``N×1×1×1`` (or broadcastable) step standard deviations.

    Returns:
        ``N`` KLs.
    """
    var = std.reshape(-1).to(mean.dtype) ** 2
    sq = (mean - mean_ref).pow(2).flatten(1).mean(1)
    safe = torch.where(var > 0, var, torch.ones_like(var))
    return torch.where(var > 0, sq / (2 * safe), torch.zeros_like(sq))


def grpo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mean: torch.Tensor,
    mean_ref: torch.Tensor,
    std: torch.Tensor,
    clip_range: float,
    beta: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``mean(PPO-clip) + β·mean(step_kl)`` over ``N`` (image, step) items (flow_grpo ``train_sd3.py:886-897``).

    Args:
        log_prob, old_log_prob, advantages, clip_range: as ``core.losses.ppo_clip_loss`` (per-element log-probs).
        mean, mean_ref, std: as :func:`step_kl`.
        beta: the KL coefficient β.

    Returns:
        ``(loss, stats)``: ``policy_loss``, ``kl`` and ``ppo_clip_loss``'s ``approx_kl`` / ``clipfrac`` (detached).
    """
    policy, stats = ppo_clip_loss(log_prob, old_log_prob, advantages, clip_range)
    kl = step_kl(mean, mean_ref, std).mean()
    return policy + beta * kl, {"policy_loss": policy.detach(), "kl": kl.detach(), **stats}


def grpo_update(
    gen,
    rollout: Rollout,
    advantages: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    cfg: PGConfig,
    rng: torch.Generator,
    beta: float,
    steps_per_batch: int = 2,
    accelerator=None,
) -> dict[str, float | list[float]]:
    """One GRPO update on a batch: the images with a non-zero advantage, shuffled, in ``steps_per_batch``
    optimizer steps, each on the first ``cfg.n_train_timesteps`` denoising steps of its images.

    Each (image, step) item: the UNet's current output gives the step's log-prob and mean; the reference (LoRA
    disabled, no gradient) its mean; they enter :func:`grpo_loss` (mean over the optimizer step's items,
    accumulated over micro-batches of ``cfg.train_micro_batch``). Data parallel as ``core.policy_gradient
    .ppo_update``: every process passes the whole batch and computes its share of each step's items.

    Returns:
        ``loss``, ``policy_loss``, ``kl`` (β's term before β), ``approx_kl``, ``clipfrac`` (means over items),
        ``grad_norm`` (last step), ``n_rows`` (images trained), ``n_items``, ``n_optimizer_steps``, and with
        ``cfg.kl_rows`` the true KL of the update (``core.policy_gradient.kl_summary``). With no image to train,
        nothing changes and ``n_optimizer_steps`` is 0.
    """
    check_accelerator(accelerator)
    n, n_steps = rollout.log_probs.shape
    adv, old = ppo_inputs(rollout, advantages, cfg)
    if steps_per_batch < 1:
        raise ValueError(f"steps_per_batch must be >= 1, got {steps_per_batch}")
    k = min(cfg.n_train_timesteps, n_steps)
    rows_all = torch.nonzero(advantages.detach().cpu() != 0).flatten()  # flow_grpo train_sd3.py:796-817
    out: dict[str, float | list[float]] = {"grad_norm": float("nan"), "n_rows": float(len(rows_all)),
                                           "n_items": float(len(rows_all) * k), "n_optimizer_steps": 0.0}
    if len(rows_all) == 0:
        return {**dict.fromkeys(GRPO_STATS, 0.0), **out}
    kl = TrueKL(gen, rollout, cfg)
    sums, out["grad_norm"], n_opt = accumulate_and_step(
        optimizer, _grpo_steps(rows_all, k, steps_per_batch, cfg, rng),
        partial(_grpo_item_loss, gen, rollout, old, adv, cfg, beta), GRPO_STATS, len(rows_all) * k, cfg,
        accelerator)
    out.update({key: value / cfg.inner_epochs for key, value in sums.items()}, n_optimizer_steps=float(n_opt))
    out.update(kl.summary())
    return out


GRPO_STATS = ("loss", "policy_loss", "kl", "approx_kl", "clipfrac")  # grpo_update's means over items


def _grpo_steps(rows_all: torch.Tensor, k: int, steps_per_batch: int, cfg: PGConfig, rng: torch.Generator):
    """GRPO's optimizer steps, lazily: per inner epoch the trained images shuffled (train_sd3.py:829) into
    ``steps_per_batch`` parts, each on the first ``k`` denoising steps of its images."""
    for _ in range(cfg.inner_epochs):
        order = rows_all[torch.randperm(len(rows_all), generator=rng)]
        for part in order.tensor_split(min(steps_per_batch, len(order))):
            yield part.repeat_interleave(k), torch.arange(k).repeat(len(part))


def _grpo_item_loss(gen, rollout: Rollout, old: torch.Tensor, adv: torch.Tensor, cfg: PGConfig, beta: float,
                    rows: torch.Tensor, st: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`grpo_loss` and its stats (:data:`GRPO_STATS`) of (image ``rows``, denoising step ``st``) items: the reference's step means (LoRA
    disabled, no gradient), then one UNet pass of the current model for both the log-prob and the mean."""
    dim, dev = rollout.latents[0, 0].numel(), rollout.log_probs.device
    with torch.no_grad(), reference_policy(gen.components.unet):  # train_sd3.py:876-878
        mean_ref, _ = gen.step_means(rollout, st[:, None], batch_idx=rows, use_cfg=cfg.cfg_in_training)
    # one UNet pass gives both the log-prob and the mean (Generator.step_log_prob + step_means)
    _, _, model_out, t, x_t, x_prev = gen._stored_steps(rollout, st[:, None], rows, cfg.cfg_in_training)
    eta = gen.sampler.eta
    _, log_prob = ddim_step_with_logprob(gen.scheduler, model_out, t, x_t, eta, prev_sample=x_prev)
    mean, std = ddim_step_mean(gen.scheduler, model_out, t, x_t, eta)
    rows_d, st_d = rows.to(dev), st.to(dev)
    loss, stats = grpo_loss(log_prob / dim, old[rows_d, st_d], adv[rows_d], mean, mean_ref.to(mean.device), std,
                            cfg.clip_range, beta)
    return loss, {"loss": loss.detach(), **{key: stats[key] for key in GRPO_STATS[1:]}}


@dataclass(frozen=True)
class GRPOOptions(PPOOptions):
    """GRPO's settings; defaults are Flow-GRPO's GRPO configs (yifan123/flow_grpo ``config/``) unless marked.

    From the shared bases (``methods.base``): LoRA rank 4 (herobench's; Flow-GRPO: 32), clip range 1e-4
    (``config/base.py:86``), advantage clip 5 (``:84``), grad clip 1.0 (``:76``), 8 items per UNet call
    (herobench: memory only).
    """

    lr: float = lr_option(3e-4)  # config/base.py:63
    beta: float = field(default=0.04, metadata=in_range(0.0, 1e6))  # KL coefficient, config/grpo.py:52, :91
    # the first int(T * fraction) denoising steps are trained: all but the last (config/grpo.py:50)
    timestep_fraction: float = field(default=0.99, metadata=in_range(1e-6, 1.0))
    std: Literal["global", "group"] = "global"  # config/grpo.py:54 sample.global_std = True
    steps_per_batch: int = field(default=2, metadata=in_range(1, 4096))  # config/grpo.py:44
    shared_noise: bool = False  # true: one x_T for the whole batch, as DanceGRPO (train_grpo_sd.py:415-420)

    def __post_init__(self) -> None:
        check_ranges(self)
        if not self.lora_targets:
            raise ConfigError("lora_targets must name at least one module")

    def train_timesteps(self, n_steps: int) -> int:
        """``int(T · timestep_fraction)`` (flow_grpo ``train_sd3.py:345``) for a sampler of ``T`` steps."""
        k = int(n_steps * self.timestep_fraction)
        if k < 1:
            raise ConfigError(
                f"method_options.timestep_fraction = {self.timestep_fraction} trains no step of a {n_steps}-step "
                f"sampler (int({n_steps} x {self.timestep_fraction}) = 0)"
            )
        return k


class GRPOMethod(LoRAMethod):
    """GRPO on human labels (reward 1 good, 0 bad). Protocol ``"scalar"``.

    State: ``options`` (:class:`GRPOOptions`), ``optimizer`` (AdamW over the LoRA parameters). The reference
    policy needs none: it is the UNet with its adapter disabled.
    """

    name = "grpo"
    title = "GRPO"
    options_class = GRPOOptions
    protocol = "scalar"

    def init_noise(self, n: int, shape, rng: torch.Generator) -> torch.Tensor:
        """``N(0, I)`` per image, or (``shared_noise``) one draw repeated for the whole batch."""
        if not self.options.shared_noise:
            return super().init_noise(n, shape, rng)
        one = torch.randn((1, *shape), generator=rng, device=rng.device)
        return one.repeat(n, *([1] * len(shape)))

    def learn(self, rollout: Rollout, feedback: Feedback, rng: torch.Generator) -> dict[str, float]:
        o = self.options
        rewards = labels_tensor(feedback, rollout).float()
        advantages = group_advantages(rewards, list(rollout.prompts), std=o.std)
        groups = list(dict.fromkeys(rollout.prompts))
        mixed = sum(
            1 for p in groups if len({bool(g) for g, q in zip(feedback.good, rollout.prompts) if q == p}) == 2
        )
        stats = {
            "n_good": float(sum(feedback.good)),
            "reward_mean": float(rewards.mean()),
            "n_groups": float(len(groups)),
            "n_groups_mixed": float(mixed),  # groups with both labels: the only ones that train
        }
        if not bool((advantages != 0).any()):
            return stats | {"pg_skipped": 1.0}
        return stats | {"pg_skipped": 0.0} | prefixed("pg_", grpo_update(
            self.gen, rollout, advantages, self.optimizer, self.pg, rng, beta=o.beta,
            steps_per_batch=o.steps_per_batch, accelerator=self.accelerator,
        ))


__all__ = ["GRPOMethod", "GRPOOptions", "group_advantages", "grpo_loss", "grpo_update", "step_kl"]
