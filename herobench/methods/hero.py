"""HERO (Hiranaka et al., ICLR 2025): representation-learned rewards + DDPO + feedback-guided noise.

One ``learn`` call is HERO's iteration after the human's feedback (arXiv 2410.05116):

1. keep the best image (its last-step-input latent and its initial noise) when the rater picked a
   new one -- the rater only returns ``feedback.best`` when it beats the previous best;
2. train the encoder + head with the triplet loss (``hero_repr.train_representation``);
3. reward every image by its encoder similarity to the best (``hero_repr.compute_rewards``);
4. one DDPO update: batch-normalised advantages clipped to ±5, ``core.policy_gradient.ppo_update``;
5. refill the noise pool (this batch's good noises + the best noise) for the next ``init_noise``.

The parts are small and live elsewhere; this file wires them and keeps the state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import torch

from herobench.config import from_dict, to_dict
from herobench.core.lora import ATTENTION_TARGETS
from herobench.core.losses import normalize_advantages
from herobench.core.policy_gradient import PGConfig, pg_config_from, ppo_update
from herobench.errors import ConfigError, HerobenchError
from herobench.methods.base import Method, attach_lora, cpu_state, labels_tensor, merge_fixed, prefixed
from herobench.methods.hero_repr import HeroEncoder, ProjectionHead, compute_rewards, train_representation
from herobench.methods.noise_pool import next_noise, pool_eval_noise
from herobench.types import Feedback, Rollout


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"method_options.{message}")


def build_representation(latent_shape: tuple[int, int, int], feature_dim: int, seed: int):
    """HERO's encoder E and projection head, seeded (global RNG untouched). ``feature_dim`` 0 = scaled."""
    c, h, w = latent_shape
    f = feature_dim or 32 * (h // 8) * (w // 8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HeroEncoder(c, (h, w), feature_dim=f), ProjectionHead(f, (f, f // 2), f // 4)


@dataclass(frozen=True)
class HeroOptions:
    """HERO's settings; every default is the paper's unless marked "herobench".

    The paper's ablations: ``feedback_guided_generation = false`` samples every batch from
    ``N(0, I)``; ``representation_learning = false`` uses the raw good/bad label (1/0) as reward.
    """

    feedback_guided_generation: bool = True
    representation_learning: bool = True
    beta: float = 0.5  # fraction of the next batch started from the best noise
    sigma: float = 0.1  # perturbation of pooled noises
    reward_mode: Literal["best", "mean_good"] = "best"
    encoder_epochs: int = 500
    # 0 = scaled to the latent (herobench): the encoder's flattened conv output, 32·(h/8)·(w/8) — 2048 for
    # SD-1.5's 4×64×64 latents, i.e. exactly the paper's 2048→2048→1024→512; 128→128→64→32 for GlyphWorld.
    feature_dim: int = 0
    encoder_lr: float = 1e-5
    triplet_margin: float = 0.5
    triplet_sampling: Literal["all_pairs", "sampled"] = "all_pairs"  # herobench; "sampled" = official code
    # "pairwise" = the paper's per-triplet cosine; "official" = the released code's dim=0 cosine (hero_repr)
    triplet_distance: Literal["pairwise", "official"] = "pairwise"
    lora_rank: int = 4
    lora_targets: tuple[str, ...] = ATTENTION_TARGETS  # UNet module-name suffixes the LoRA adapts
    lr: float = 1e-3
    n_train_timesteps: int = 5
    # herobench: train only the first int(T·f) denoising steps (x_T side; Flow-GRPO's in-order
    # timestep_fraction). 1.0 = the paper's. The `-early` variants set 0.5 (issue 22, docs/FIDELITY.md).
    early_fraction: float = 1.0
    clip_range: float = 1e-4
    adv_clip: float = 5.0
    max_grad_norm: float = 1.0
    # trajectories per optimizer step: HERO's official config (train batch 2 × accumulation 4) gives 8
    # optimizer steps per 64-image batch; 0 = one step per batch
    samples_per_step: int = 8
    train_micro_batch: int = 8  # herobench: memory knob only
    eval_from_pool: bool = False  # herobench evaluates on plain N(0, I); true = the paper's generation

    def __post_init__(self) -> None:
        _check(0.0 <= self.beta <= 1.0, f"beta must be in [0, 1] (got {self.beta})")
        _check(0.0 <= self.sigma <= 1.0, f"sigma must be in [0, 1] (got {self.sigma})")
        _check(self.encoder_epochs >= 0, f"encoder_epochs must be >= 0 (got {self.encoder_epochs})")
        _check(self.feature_dim == 0 or self.feature_dim >= 4,
               f"feature_dim must be 0 (scaled) or >= 4 (got {self.feature_dim})")
        _check(self.encoder_lr > 0, f"encoder_lr must be > 0 (got {self.encoder_lr})")
        _check(self.triplet_margin >= 0, f"triplet_margin must be >= 0 (got {self.triplet_margin})")
        _check(self.lora_rank >= 1, f"lora_rank must be >= 1 (got {self.lora_rank})")
        try:
            self.pg_config()
        except ConfigError as e:
            raise ConfigError(f"method_options.{e}") from None

    def pg_config(self) -> PGConfig:
        return pg_config_from(self)


class HeroMethod(Method):
    """HERO. Protocol ``"hero"``: good/bad labels plus a best pick.

    State (all set in :meth:`setup`, all in :meth:`state_dict`):
        options: the resolved :class:`HeroOptions`.
        optimizer: AdamW over the UNet's LoRA parameters.
        encoder, head, encoder_optimizer: the representation learner (Adam), on the UNet's device.
        best_latent: ``C×h×w`` latent entering the last denoising step of the best image, or None.
        best_noise: ``C×h×w`` initial noise of the best image, or None.
        good_noises: ``G×C×h×w`` initial noises of the last batch's good images other than the best.
    """

    protocol = "hero"
    trains = True

    def __init__(self, name: str = "hero", fixed: dict[str, Any] | None = None):
        self.name = name
        self.fixed = dict(fixed or {})  # options a named variant pins (e.g. hero-no-fgg)

    def resolve_options(self, options: dict[str, Any]) -> HeroOptions:
        return from_dict(HeroOptions, merge_fixed(dict(options), self.fixed, self.name), "method_options")

    def setup(self, gen, options: dict[str, Any], seed: int) -> None:
        o = self.resolve_options(options)
        self.options = o
        self.gen = gen
        self.pg = o.pg_config()
        self.custom_eval_noise = o.eval_from_pool
        self.optimizer = attach_lora(gen, o.lora_rank, o.lr, seed, o.lora_targets)
        c, h, w = gen.latent_shape
        self.encoder, self.head = build_representation((c, h, w), o.feature_dim, seed)
        self.encoder.to(gen.device)
        self.head.to(gen.device)
        self.encoder_optimizer = torch.optim.Adam(
            [*self.encoder.parameters(), *self.head.parameters()], lr=o.encoder_lr
        )
        self.best_latent: torch.Tensor | None = None
        self.best_noise: torch.Tensor | None = None
        self.good_noises = torch.zeros((0, c, h, w))

    # ------------------------------------------------------------------ sampling
    def init_noise(self, n: int, shape, rng: torch.Generator) -> torch.Tensor:
        """``N(0, I)`` until there is a best image (and always without feedback-guided generation);
        then ``noise_pool.next_noise`` from the best and good noises."""
        if not self.options.feedback_guided_generation or self.best_noise is None:
            return super().init_noise(n, shape, rng)
        if tuple(self.best_noise.shape) != tuple(shape):
            raise ValueError(
                f"noise pool holds {tuple(self.best_noise.shape)} noises, asked for {tuple(shape)}"
            )
        return next_noise(self.best_noise, self.good_noises, n, self.options.beta, self.options.sigma, rng)

    def eval_noise(self, noise: torch.Tensor) -> torch.Tensor:
        if not self.options.eval_from_pool:
            return noise
        return pool_eval_noise(
            self.best_noise, self.good_noises, noise, self.options.beta, self.options.sigma
        )

    # ------------------------------------------------------------------ learning
    def rewards(self, latents: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
        """``B`` rewards in ``[0, 1]``: encoder similarity to the best image, or the raw label when
        representation learning is off or there is no best image yet."""
        o = self.options
        if not o.representation_learning or self.best_latent is None:
            return good.float()
        return compute_rewards(
            self.encoder, latents, self.best_latent, o.reward_mode, latents[good.to(latents.device)]
        ).cpu()

    def learn(self, rollout: Rollout, feedback: Feedback, rng: torch.Generator) -> dict[str, float]:
        o = self.options
        good = labels_tensor(feedback, rollout)
        best = feedback.best
        if best is not None:
            if not good[best]:
                raise HerobenchError(f"the rater picked image {best} as best but labelled it bad")
            self.best_latent = cpu_state(rollout.last_step_input[best])
            self.best_noise = cpu_state(rollout.init_noise[best])
        stats = {
            "n_good": float(good.sum()),
            "best_updated": float(best is not None),
            "has_best": float(self.best_latent is not None),
        }

        latents = rollout.last_step_input
        t0 = time.perf_counter()  # sub-times for benchmarks/bench_iteration.py
        if o.representation_learning:
            stats |= train_representation(
                self.encoder,
                self.head,
                self.encoder_optimizer,
                latents,
                good,
                self.best_latent,
                best_index=best,
                epochs=o.encoder_epochs,
                margin=o.triplet_margin,
                triplets=o.triplet_sampling,
                distance=o.triplet_distance,
                rng=rng,
            )
        rewards = self.rewards(latents, good)
        stats |= _reward_stats(rewards, good)
        stats["seconds_representation"] = time.perf_counter() - t0  # encoder training + rewards

        t0 = time.perf_counter()
        advantages = normalize_advantages(rewards, clip=o.adv_clip)
        if bool((advantages != 0).any()):
            stats |= prefixed("pg_", ppo_update(self.gen, rollout, advantages, self.optimizer, self.pg, rng,
                                                accelerator=self.accelerator))
            stats["pg_skipped"] = 0.0
        else:  # equal rewards (e.g. all bad and no best yet): no learning signal, no step
            stats["pg_skipped"] = 1.0
        stats["seconds_policy_update"] = time.perf_counter() - t0

        keep = good.clone()
        if best is not None:
            keep[best] = False  # the best noise is kept apart (drawn with probability beta)
        self.good_noises = cpu_state(rollout.init_noise[keep.to(rollout.latents.device)])
        stats["pool_good_noises"] = float(len(self.good_noises))
        return stats

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "options": to_dict(self.options),
            "optimizer": self.optimizer.state_dict(),
            "encoder": self.encoder.state_dict(),
            "head": self.head.state_dict(),
            "encoder_optimizer": self.encoder_optimizer.state_dict(),
            "best_latent": self.best_latent,
            "best_noise": self.best_noise,
            "good_noises": self.good_noises,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # an option added after the checkpoint was written was at its default then (e.g. triplet_distance)
        saved = {**to_dict(HeroOptions()), **state["options"]}
        if saved != to_dict(self.options):
            raise HerobenchError("the checkpoint was written with other HERO options than this run's")
        self.optimizer.load_state_dict(state["optimizer"])
        self.encoder.load_state_dict(state["encoder"])
        self.head.load_state_dict(state["head"])
        self.encoder_optimizer.load_state_dict(state["encoder_optimizer"])
        self.best_latent = state["best_latent"]
        self.best_noise = state["best_noise"]
        self.good_noises = state["good_noises"]


def _reward_stats(rewards: torch.Tensor, good: torch.Tensor) -> dict[str, float]:
    out = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std(unbiased=False))}
    if good.any() and (~good).any():  # does the reward separate what the rater separated?
        out["reward_good_minus_bad"] = float(rewards[good].mean() - rewards[~good].mean())
    return out
