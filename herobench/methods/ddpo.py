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

from herobench.core.losses import PerPromptStatTracker, normalize_advantages
from herobench.core.policy_gradient import ppo_update
from herobench.errors import ConfigError
from herobench.methods.base import DDPOStepOptions, LoRAMethod, labels_tensor, lr_option, prefixed
from herobench.types import Feedback, Rollout


@dataclass(frozen=True)
class DDPOOptions(DDPOStepOptions):
    """DDPO's settings (module docstring); the LoRA and PPO fields come from the shared bases
    (``methods.base``) with ddpo-pytorch's values, ``samples_per_step`` 8 (HERO's, see docs/FIDELITY.md)."""

    lr: float = lr_option(3e-4)  # config/base.py:64
    n_train_timesteps: int = 0  # 0 = every denoising step (ddpo-pytorch timestep_fraction 1.0)
    # herobench: train only the first int(T·f) denoising steps (x_T side; Flow-GRPO's in-order
    # timestep_fraction). 1.0 = the paper's. The `-early` variants set 0.5 (issue 22, docs/FIDELITY.md).
    early_fraction: float = 1.0
    # "per_prompt": this batch's statistics per prompt; "batch": the whole batch's; "tracker": ddpo-pytorch's
    # PerPromptStatTracker (config/base.py:106-111: the last 16 rewards per prompt, kept across iterations,
    # the batch's statistics until 16 are buffered; stat_tracking.py:11-30)
    advantages: Literal["per_prompt", "batch", "tracker"] = "per_prompt"

    def __post_init__(self) -> None:
        if self.lora_rank < 1:
            raise ConfigError(f"method_options.lora_rank must be >= 1 (got {self.lora_rank})")
        if self.n_train_timesteps < 0:
            raise ConfigError(f"method_options.n_train_timesteps must be >= 0 (got {self.n_train_timesteps})")
        self.check_pg_config()

    def train_timesteps(self, n_steps: int) -> int:
        """``n_train_timesteps``, 0 = all ``n_steps``."""
        return self.n_train_timesteps or n_steps


class DDPOMethod(LoRAMethod):
    """DDPO on human labels. Protocol ``"scalar"``.

    State: ``options`` (:class:`DDPOOptions`), ``optimizer`` (AdamW over the LoRA parameters), ``tracker``
    (the reward buffer of ``advantages = "tracker"``, else None).
    """

    name = "ddpo"
    title = "DDPO"
    options_class = DDPOOptions
    protocol = "scalar"

    def build(self, gen, seed: int) -> None:
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

    def extra_state(self) -> dict[str, Any]:
        return {"tracker": None if self.tracker is None else self.tracker.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.tracker is not None and state.get("tracker") is not None:
            self.tracker.load_state_dict(state["tracker"])
