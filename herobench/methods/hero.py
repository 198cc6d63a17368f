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
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch

from herobench.core.losses import normalize_advantages
from herobench.core.policy_gradient import ppo_update
from herobench.errors import ConfigError, HerobenchError
from herobench.methods.base import DDPOStepOptions, LoRAMethod, cpu_state, labels_tensor, lr_option, prefixed
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
class HeroOptions(DDPOStepOptions):
    """HERO's settings; every default is the paper's unless marked "herobench".

    The LoRA and PPO fields come from the shared bases (``methods.base``): rank 4, clip range 1e-4,
    advantage clip 5, grad clip 1.0, 5 random denoising steps per trajectory, 8 trajectories per optimizer
    step, 8 items per UNet call (herobench's memory knob). The paper's ablations:
    ``feedback_guided_generation = false`` samples every batch from ``N(0, I)``;
    ``representation_learning = false`` uses the raw good/bad label (1/0) as reward.
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
    lr: float = lr_option(1e-3)
    # herobench: train only the first int(T·f) denoising steps (x_T side; Flow-GRPO's in-order
    # timestep_fraction). 1.0 = the paper's. The `-early` variants set 0.5 (issue 22, docs/FIDELITY.md).
    early_fraction: float = 1.0
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
        self.check_pg_config()


@dataclass
class HeroState:
    """What HERO carries from one iteration to the next besides weights (in its checkpoint, by name).

    Attributes:
        best_latent: ``C×h×w`` latent entering the last denoising step of the best image, or None.
        best_noise: ``C×h×w`` initial noise of the best image, or None.
        good_noises: ``G×C×h×w`` initial noises of the last batch's good images other than the best.
    """

    best_latent: torch.Tensor | None = None
    best_noise: torch.Tensor | None = None
    good_noises: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def as_dict(self) -> dict[str, torch.Tensor | None]:
        """The fields by name (no copy: the checkpoint writer serialises them at once)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class HeroMethod(LoRAMethod):
    """HERO. Protocol ``"hero"``: good/bad labels plus a best pick.

    State (all set in :meth:`setup`, all in :meth:`state_dict`):
        options: the resolved :class:`HeroOptions`.
        optimizer: AdamW over the UNet's LoRA parameters.
        encoder, head, encoder_optimizer: the representation learner (Adam), on the UNet's device.
        state: the best image and the noise pool (:class:`HeroState`).
    """

    name = "hero"
    title = "HERO"
    options_class = HeroOptions
    protocol = "hero"

    def build(self, gen, seed: int) -> None:
        o = self.options
        self.custom_eval_noise = o.eval_from_pool
        c, h, w = gen.latent_shape
        self.encoder, self.head = build_representation((c, h, w), o.feature_dim, seed)
        self.encoder.to(gen.device)
        self.head.to(gen.device)
        self.encoder_optimizer = torch.optim.Adam(
            [*self.encoder.parameters(), *self.head.parameters()], lr=o.encoder_lr
        )
        self.state = HeroState(good_noises=torch.zeros((0, c, h, w)))

    # ------------------------------------------------------------------ sampling
    def init_noise(self, n: int, shape, rng: torch.Generator) -> torch.Tensor:
        """``N(0, I)`` until there is a best image (and always without feedback-guided generation);
        then ``noise_pool.next_noise`` from the best and good noises."""
        best_noise = self.state.best_noise
        if not self.options.feedback_guided_generation or best_noise is None:
            return super().init_noise(n, shape, rng)
        if tuple(best_noise.shape) != tuple(shape):
            raise ValueError(f"noise pool holds {tuple(best_noise.shape)} noises, asked for {tuple(shape)}")
        return next_noise(best_noise, self.state.good_noises, n, self.options.beta, self.options.sigma, rng)

    def eval_noise(self, noise: torch.Tensor) -> torch.Tensor:
        if not self.options.eval_from_pool:
            return noise
        return pool_eval_noise(
            self.state.best_noise, self.state.good_noises, noise, self.options.beta, self.options.sigma
        )

    # ------------------------------------------------------------------ learning
    def rewards(self, latents: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
        """``B`` rewards in ``[0, 1]``: encoder similarity to the best image, or the raw label when
        representation learning is off or there is no best image yet."""
        o = self.options
        if not o.representation_learning or self.state.best_latent is None:
            return good.float()
        return compute_rewards(
            self.encoder, latents, self.state.best_latent, o.reward_mode, latents[good.to(latents.device)]
        ).cpu()

    def learn(self, rollout: Rollout, feedback: Feedback, rng: torch.Generator) -> dict[str, float]:
        o = self.options
        good = labels_tensor(feedback, rollout)
        best = feedback.best
        if best is not None:
            if not good[best]:
                raise HerobenchError(f"the rater picked image {best} as best but labelled it bad")
            self.state.best_latent = cpu_state(rollout.last_step_input[best])
            self.state.best_noise = cpu_state(rollout.init_noise[best])
        stats = {
            "n_good": float(good.sum()),
            "best_updated": float(best is not None),
            "has_best": float(self.state.best_latent is not None),
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
                self.state.best_latent,
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
        self.state.good_noises = cpu_state(rollout.init_noise[keep.to(rollout.latents.device)])
        stats["pool_good_noises"] = float(len(self.state.good_noises))
        return stats

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder.state_dict(),
            "head": self.head.state_dict(),
            "encoder_optimizer": self.encoder_optimizer.state_dict(),
            **self.state.as_dict(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.head.load_state_dict(state["head"])
        self.encoder_optimizer.load_state_dict(state["encoder_optimizer"])
        self.state = HeroState(**{f.name: state[f.name] for f in fields(HeroState)})


def _reward_stats(rewards: torch.Tensor, good: torch.Tensor) -> dict[str, float]:
    out = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std(unbiased=False))}
    if good.any() and (~good).any():  # does the reward separate what the rater separated?
        out["reward_good_minus_bad"] = float(rewards[good].mean() - rewards[~good].mean())
    return out
