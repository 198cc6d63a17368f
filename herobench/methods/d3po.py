"""D3PO (Yang et al., CVPR 2024): DPO on denoising steps, no reward model.

Images are sampled in groups that share prompt and initial noise ``x_T`` (``images_per_noise`` per
group); the rater labels them and turns each group's labels into ``(winner, loser)`` pairs (every
good image beats every bad one of its group; ``herobench.harness.rater``); every pair gives a DPO loss on its
denoising steps (``core.policy_gradient.dpo_update``), with the sampling policy as reference.

Defaults follow the official code (``yk7333/d3po``, ``config/base.py`` and ``scripts/train.py``):
lr 3e-5, β 0.1, grad clip 1.0, every denoising step trained (``timestep_fraction = 1.0``; here
``n_train_timesteps = 0``), and one optimizer step per pair (``train.batch_size = 1``, gradients
accumulated over the timesteps): ``pairs_per_step = 1``. Its sampler (20 DDIM steps, eta 1, CFG 5)
is the harness' shared sampler. The official code clamps each policy/reference ratio to
``[0.8, 1.2]`` (``ratio_clip = 0.2``); the default here is the paper's plain DPO loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from herobench.config import to_dict
from herobench.core.lora import ATTENTION_TARGETS
from herobench.core.policy_gradient import PGConfig, dpo_update
from herobench.errors import ConfigError, HerobenchError
from herobench.methods.base import Method, attach_lora, cycle_prompts, labels_tensor
from herobench.types import Feedback, Rollout, TaskSpec


@dataclass(frozen=True)
class D3POOptions:
    lora_rank: int = 4
    lora_targets: tuple[str, ...] = ATTENTION_TARGETS  # UNet module-name suffixes the LoRA adapts
    lr: float = 3e-5
    beta: float = 0.1
    images_per_noise: int = 2
    n_train_timesteps: int = 0  # 0 = every denoising step
    max_grad_norm: float = 1.0
    pairs_per_step: int = 1  # pairs per optimizer step (official: 1)
    ratio_clip: float | None = None  # official code: 0.2
    train_micro_batch: int = 8  # memory knob only

    def __post_init__(self) -> None:
        checks = [
            (self.lora_rank >= 1, f"lora_rank must be >= 1 (got {self.lora_rank})"),
            (self.beta > 0, f"beta must be > 0 (got {self.beta})"),
            (self.images_per_noise >= 2, f"images_per_noise must be >= 2 (got {self.images_per_noise})"),
            (self.n_train_timesteps >= 0, f"n_train_timesteps must be >= 0 (got {self.n_train_timesteps})"),
            (self.pairs_per_step >= 1, f"pairs_per_step must be >= 1 (got {self.pairs_per_step})"),
            (
                self.ratio_clip is None or 0 < self.ratio_clip < 1,
                f"ratio_clip must be in (0, 1) (got {self.ratio_clip})",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"method_options.{message}")
        try:
            self.pg_config(1)
        except ConfigError as e:
            raise ConfigError(f"method_options.{e}") from None

    def pg_config(self, n_steps: int) -> PGConfig:
        return PGConfig(
            lr=self.lr,
            n_train_timesteps=self.n_train_timesteps or n_steps,
            max_grad_norm=self.max_grad_norm,
            train_micro_batch=self.train_micro_batch,
        )


def noise_groups(n: int, images_per_noise: int) -> list[int]:
    """Group id of each of ``n`` images: ``0 0 1 1 2 2 …`` for 2 per noise (the last group may be short)."""
    return [i // images_per_noise for i in range(n)]


class D3POMethod(Method):
    """D3PO. Protocol ``"d3po"``: labels plus (winner, loser) pairs inside noise groups.

    State: ``options`` (:class:`D3POOptions`), ``optimizer`` (AdamW over the LoRA parameters).
    """

    name = "d3po"
    options_class = D3POOptions
    protocol = "d3po"
    trains = True

    def setup(self, gen, options: dict[str, Any], seed: int) -> None:
        self.options = self.resolve_options(options)
        self.gen = gen
        self.pg = self.options.pg_config(gen.sampler.steps)
        self.optimizer = attach_lora(gen, self.options.lora_rank, self.options.lr, seed, self.options.lora_targets)

    def train_prompts(self, task: TaskSpec, n: int) -> list[str]:
        """Task prompts cycled so that each noise group shares one prompt."""
        return cycle_prompts(task.train_prompts, n, repeat=self.options.images_per_noise)

    def groups(self, n: int) -> list[int]:
        return noise_groups(n, self.options.images_per_noise)

    def init_noise(self, n: int, shape, rng: torch.Generator) -> torch.Tensor:
        """One ``N(0, I)`` draw per group, repeated for each image of the group."""
        k = self.options.images_per_noise
        per_group = torch.randn((math.ceil(n / k), *shape), generator=rng, device=rng.device)
        return per_group.repeat_interleave(k, dim=0)[:n]

    def learn(self, rollout: Rollout, feedback: Feedback, rng: torch.Generator) -> dict[str, float]:
        labels_tensor(feedback, rollout)  # checks the batch size
        groups = self.groups(len(rollout))
        pairs = [(int(win), int(lose)) for win, lose in feedback.pairs]
        for win, lose in pairs:
            if groups[win] != groups[lose]:
                raise HerobenchError(
                    f"D3PO pair ({win}, {lose}) crosses noise groups {groups[win]} and {groups[lose]}"
                )
        stats = {"n_good": float(sum(feedback.good)), "n_pairs": float(len(pairs))}
        if not pairs:
            return stats | {"dpo_skipped": 1.0, "dpo_n_optimizer_steps": 0.0}
        size = self.options.pairs_per_step
        losses, margins, weights = [], [], []
        for start in range(0, len(pairs), size):
            chunk = pairs[start : start + size]
            out = dpo_update(
                self.gen,
                rollout,
                chunk,
                self.optimizer,
                self.pg,
                rng,
                beta=self.options.beta,
                ratio_clip=self.options.ratio_clip,
                accelerator=self.accelerator,
            )
            losses.append(out["loss"])
            margins.append(out["margin"])
            weights.append(len(chunk))
        total = sum(weights)
        return stats | {
            "dpo_skipped": 0.0,
            "dpo_loss": sum(x * w for x, w in zip(losses, weights)) / total,
            "dpo_margin": sum(x * w for x, w in zip(margins, weights)) / total,
            "dpo_n_optimizer_steps": float(len(weights)),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"options": to_dict(self.options), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["options"] != to_dict(self.options):
            raise HerobenchError("the checkpoint was written with other D3PO options than this run's")
        self.optimizer.load_state_dict(state["optimizer"])
