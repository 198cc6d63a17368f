"""DDPO (Black et al., 2023) with human labels as the reward: the policy-gradient baseline.

Each labelled image gets reward 1 (good) or 0 (bad); advantages are standardised per prompt
(ddpo-pytorch's per-prompt stat tracking, here over the current batch only, without its 16-reward
history buffer; ``advantages = "tracker"`` is ddpo-pytorch's tracker itself) and clipped to ±5; one PPO-clip update is taken with the same
``core.policy_gradient.ppo_update`` as HERO, on the same LoRA rank.

Defaults are ddpo-pytorch's (``config/base.py``): lr 3e-4 (``:64``), clip range 1e-4 (``:87``), advantage
clip 5 (``:85``), grad clip 1.0 (``:77``), one inner epoch (``:80``), CFG in training (``:83``), and every
denoising step trained (``timestep_fraction = 1.0``, ``:90``; here ``n_train_timesteps = 0``). HERO differs in
lr (1e-3) and in training 5 random steps per trajectory. ``samples_per_step`` (8, HERO's) is not
ddpo-pytorch's: see docs/FIDELITY.md.

``ddpo-5steps`` is the named equal-compute variant: DDPO with HERO's 5 random denoising steps per
trajectory (the same UNet passes per label as HERO), everything else as ``ddpo``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from herobench.config import to_dict
from herobench.core.lora import ATTENTION_TARGETS
from herobench.core.losses import PerPromptStatTracker, normalize_advantages
from herobench.core.policy_gradient import PGConfig, pg_config_from, ppo_update
from herobench.errors import ConfigError, HerobenchError
from herobench.methods.base import Method, attach_lora, labels_tensor, merge_fixed, prefixed
from herobench.types import Feedback, Rollout


@dataclass(frozen=True)
class DDPOOptions:
    lora_rank: int = 4
    lora_targets: tuple[str, ...] = ATTENTION_TARGETS  # UNet module-name suffixes the LoRA adapts
    lr: float = 3e-4
    n_train_timesteps: int = 0  # 0 = every denoising step (ddpo-pytorch timestep_fraction 1.0)
    # herobench: train only the first int(T·f) denoising steps (x_T side; Flow-GRPO's in-order
    # timestep_fraction). 1.0 = the paper's. The `-early` variants set 0.5 (issue 22, docs/FIDELITY.md).
    early_fraction: float = 1.0
    clip_range: float = 1e-4
    adv_clip: float = 5.0
    max_grad_norm: float = 1.0
    # trajectories per optimizer step: HERO's official config (train batch 2 × accumulation 4) gives 8
    # optimizer steps per 64-image batch; 0 = one step per batch
    samples_per_step: int = 8
    train_micro_batch: int = 8  # memory knob only
    # "per_prompt": this batch's statistics per prompt; "batch": the whole batch's; "tracker": ddpo-pytorch's
    # PerPromptStatTracker (config/base.py:106-111: the last 16 rewards per prompt, kept across iterations,
    # the batch's statistics until 16 are buffered; stat_tracking.py:11-30)
    advantages: Literal["per_prompt", "batch", "tracker"] = "per_prompt"

    def __post_init__(self) -> None:
        if self.lora_rank < 1:
            raise ConfigError(f"method_options.lora_rank must be >= 1 (got {self.lora_rank})")
        if self.n_train_timesteps < 0:
            raise ConfigError(f"method_options.n_train_timesteps must be >= 0 (got {self.n_train_timesteps})")
        try:
            self.pg_config(1)
        except ConfigError as e:
            raise ConfigError(f"method_options.{e}") from None

    def pg_config(self, n_steps: int) -> PGConfig:
        """The PPO settings for a sampler of ``n_steps`` denoising steps."""
        return pg_config_from(self, n_train_timesteps=self.n_train_timesteps or n_steps)


class DDPOMethod(Method):
    """DDPO on human labels. Protocol ``"scalar"``.

    State: ``options`` (:class:`DDPOOptions`), ``optimizer`` (AdamW over the LoRA parameters), ``tracker``
    (the reward buffer of ``advantages = "tracker"``, else None).
    """

    name = "ddpo"
    options_class = DDPOOptions
    protocol = "scalar"
    trains = True

    def __init__(self, name: str = "ddpo", fixed: dict[str, Any] | None = None):
        self.name = name
        self.fixed = dict(fixed or {})  # options a named variant pins (e.g. ddpo-5steps)

    def resolve_options(self, options: dict[str, Any]) -> DDPOOptions:
        return super().resolve_options(merge_fixed(dict(options), self.fixed, self.name))

    def setup(self, gen, options: dict[str, Any], seed: int) -> None:
        self.options = self.resolve_options(options)
        self.gen = gen
        self.pg = self.options.pg_config(gen.sampler.steps)
        self.optimizer = attach_lora(gen, self.options.lora_rank, self.options.lr, seed, self.options.lora_targets)
        self.tracker = (
            PerPromptStatTracker(buffer_size=16, min_count=16, eps=1e-6) if self.options.advantages == "tracker" else None
        )

    def learn(self, rollout: Rollout, feedback: Feedback, rng: torch.Generator) -> dict[str, float]:
        o = self.options
        rewards = labels_tensor(feedback, rollout).float()
        if self.tracker is not None:
            advantages = self.tracker.update(list(rollout.prompts), rewards).clamp(-o.adv_clip, o.adv_clip)
        else:
            prompts = rollout.prompts if o.advantages == "per_prompt" else None
            advantages = normalize_advantages(rewards, prompts=prompts, clip=o.adv_clip)
        stats = {"n_good": float(sum(feedback.good)), "reward_mean": float(rewards.mean())}
        if not bool((advantages != 0).any()):  # all labels equal: no learning signal
            return stats | {"pg_skipped": 1.0}
        return (
            stats
            | {"pg_skipped": 0.0}
            | prefixed("pg_", ppo_update(self.gen, rollout, advantages, self.optimizer, self.pg, rng,
                                         accelerator=self.accelerator))
        )

    def state_dict(self) -> dict[str, Any]:
        tracker = None if self.tracker is None else self.tracker.state_dict()
        return {"options": to_dict(self.options), "optimizer": self.optimizer.state_dict(), "tracker": tracker}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["options"] != to_dict(self.options):
            raise HerobenchError("the checkpoint was written with other DDPO options than this run's")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.tracker is not None and state.get("tracker") is not None:
            self.tracker.load_state_dict(state["tracker"])
