"""A learned reward model: the plain RLHF baseline HERO's feedback-aligned representation claims to beat.

A small classifier is fit on *every* label so far (a replay buffer of all labelled latents) and its probability
of "good" is the reward of DDPO's PPO update -- the recipe of learning a reward function from binary human
labels and then optimising it (Lee et al. 2023, "Aligning Text-to-Image Models using Human Feedback", arXiv
2302.12192, §3; Christiano et al. 2017), with the policy gradient of DDPO (Black et al. 2023).

To compare with HERO on equal footing, everything but the learning signal is HERO's:

* **Input**: the latent that enters the last denoising step (``Rollout.last_step_input``), what HERO's encoder
  sees (rather than the final latent: the two differ by one denoising step; the same input keeps the
  comparison about the objective).
* **Architecture**: HERO's encoder (``hero_repr.HeroEncoder``: three convs, a linear layer to 2048 features for
  SD-1.5's latents, scaled for GlyphWorld's) followed by one linear layer to a logit.
* **Training**: binary cross-entropy on the buffer with Adam, continued across iterations: 500 steps per
  iteration on 64 rows each (the whole buffer while it holds 64 or fewer, else 64 drawn at random per step) --
  HERO's encoder takes 500 steps on its batch of 64, so the compute per iteration is HERO's. The lr is 1e-4, not
  HERO's encoder lr 1e-5: at 1e-5 the classifier stays at chance on its own training labels after 500 steps
  (measured on the tiny test model, 128 latents labelled by brightness: loss 0.693 -> 0.681, training accuracy
  0.52; at 1e-4: 0.007 and 1.0), and a reward model that has not fit its labels is no baseline. HERO instead
  trains its encoder with a triplet loss anchored at the best image, on this batch only.
* **Reward and update**: ``σ(logit)`` of this batch's images after the fit; batch-normalised advantages clipped
  to ±5 and HERO's PPO update (lr 1e-3, 5 random denoising steps per trajectory, clip 1e-4, 8 trajectories
  per optimizer step; ``core.policy_gradient.ppo_update``), protocol ``"scalar"`` like DDPO.

While the buffer holds one class only (e.g. no good image yet) the classifier's optimum is a constant: it is
not trained and the policy is not updated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from herobench.config import check_ranges, in_range
from herobench.core.losses import normalize_advantages
from herobench.core.policy_gradient import ppo_update
from herobench.errors import ConfigError
from herobench.methods.base import DDPOStepOptions, LoRAMethod, cpu_state, labels_tensor, lr_option, prefixed
from herobench.methods.hero_repr import HeroEncoder
from herobench.types import Feedback, Rollout


class RewardClassifier(nn.Module):
    """HERO's encoder and a linear logit: ``B×C×h×w`` latents -> ``B`` logits of "good"."""

    def __init__(self, latent_shape: tuple[int, int, int], feature_dim: int = 0):
        super().__init__()
        c, h, w = latent_shape
        f = feature_dim or 32 * (h // 8) * (w // 8)  # as hero.build_representation: 2048 for SD-1.5
        self.encoder = HeroEncoder(c, (h, w), feature_dim=f)
        self.logit = nn.Linear(f, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.encoder(x)).squeeze(1)


def build_classifier(latent_shape: tuple[int, int, int], feature_dim: int, seed: int) -> RewardClassifier:
    """The classifier, seeded (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RewardClassifier(latent_shape, feature_dim)


def classifier_loss(logits: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy ``mean(−y·log σ(z) − (1 − y)·log(1 − σ(z)))`` of ``B`` logits and ``B`` labels."""
    return F.binary_cross_entropy_with_logits(logits, good.to(logits.dtype))


def fit_classifier(
    model: RewardClassifier,
    optimizer: torch.optim.Optimizer,
    latents: torch.Tensor,
    good: torch.Tensor,
    steps: int,
    batch: int,
    rng: torch.Generator,
) -> dict[str, float]:
    """``steps`` Adam steps of :func:`classifier_loss` on the buffer (``N×C×h×w`` CPU latents, ``N`` bools).

    Each step uses the whole buffer while ``N <= batch``, else ``batch`` rows drawn without replacement with
    ``rng``. Returns ``rm_loss_start`` / ``rm_loss_end`` and ``rm_accuracy`` on the whole buffer, before and
    after.
    """
    device = next(model.parameters()).device
    n = len(good)
    x_all = latents.to(device, torch.float32) if n <= batch else latents
    y_all = good.to(device) if n <= batch else good

    def whole_buffer_loss() -> tuple[float, float]:
        with torch.no_grad():
            logits = torch.cat([model(x.to(device, torch.float32)) for x in latents.split(batch)])
            y = good.to(device)
            return float(classifier_loss(logits, y)), float(((logits > 0) == y).float().mean())

    model.train()
    start, _ = whole_buffer_loss()
    for _ in range(steps):
        if n <= batch:
            x, y = x_all, y_all
        else:
            idx = torch.randperm(n, generator=rng)[:batch]
            x, y = x_all[idx].to(device, torch.float32), y_all[idx].to(device)
        loss = classifier_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    end, accuracy = whole_buffer_loss()
    return {"rm_loss_start": start, "rm_loss_end": end, "rm_accuracy": accuracy}


@dataclass(frozen=True)
class RewardModelOptions(DDPOStepOptions):
    """The classifier's settings (see the module docstring) and HERO's PPO settings (the shared bases,
    ``methods.base``, with HERO's values: lr 1e-3, 5 random steps per trajectory, 8 per optimizer step)."""

    feature_dim: int = field(default=0, metadata=in_range(0, 1 << 20))  # 0 = scaled like HERO's encoder
    classifier_lr: float = field(default=1e-4, metadata=in_range(1e-12, 1.0))  # herobench (module docstring)
    classifier_steps: int = field(default=500, metadata=in_range(0, 1_000_000))  # HERO's encoder_epochs
    classifier_batch: int = field(default=64, metadata=in_range(1, 1 << 20))  # rows per step: HERO's batch
    lr: float = lr_option(1e-3)  # HERO's
    n_train_timesteps: int = field(default=5, metadata=in_range(1, 1000))  # HERO's (checked: >= 1)

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.feature_dim and self.feature_dim < 4:
            raise ConfigError(f"feature_dim must be 0 (scaled) or >= 4 (got {self.feature_dim})")
        if not self.lora_targets:
            raise ConfigError("lora_targets must name at least one module")


class RewardModelMethod(LoRAMethod):
    """A classifier on all labels so far as DDPO's reward. Protocol ``"scalar"``.

    State (all in :meth:`state_dict`): ``options``, ``optimizer`` (AdamW over the LoRA), ``classifier`` and
    ``classifier_optimizer`` (Adam), ``buffer_latents`` (``N×C×h×w`` float32 CPU: every labelled image's
    last-step input) and ``buffer_good`` (``N`` bools).
    """

    name = "reward-model"
    title = "reward-model"
    options_class = RewardModelOptions
    protocol = "scalar"

    def build(self, gen, seed: int) -> None:
        o = self.options
        self.classifier = build_classifier(gen.latent_shape, o.feature_dim, seed).to(gen.device)
        self.classifier.eval()
        self.classifier_optimizer = torch.optim.Adam(self.classifier.parameters(), lr=o.classifier_lr)
        self.buffer_latents = torch.zeros((0, *gen.latent_shape))
        self.buffer_good = torch.zeros(0, dtype=torch.bool)

    def rewards(self, latents: torch.Tensor) -> torch.Tensor:
        """``B`` rewards ``σ(logit)`` in ``(0, 1)`` of ``B×C×h×w`` last-step-input latents (CPU float32)."""
        with torch.no_grad():
            x = latents.to(next(self.classifier.parameters()).device, torch.float32)
            return torch.sigmoid(self.classifier(x)).float().cpu()

    def learn(self, rollout: Rollout, feedback: Feedback, rng: torch.Generator) -> dict[str, float]:
        o = self.options
        good = labels_tensor(feedback, rollout)
        latents = cpu_state(rollout.last_step_input)
        stats: dict[str, Any] = {"n_good": float(good.sum())}
        if len(self.buffer_good) and self.buffer_good.any() and (~self.buffer_good).any():
            # how well the model fit on the labels so far predicts this batch's, before seeing them
            stats["rm_accuracy_unseen"] = float(((self.rewards(latents) > 0.5) == good).float().mean())
        self.buffer_latents = torch.cat([self.buffer_latents, latents])
        self.buffer_good = torch.cat([self.buffer_good, good])
        stats["rm_buffer"] = float(len(self.buffer_good))
        if self.buffer_good.all() or not self.buffer_good.any():  # one class: nothing to separate
            return stats | {"rm_trained": 0.0, "pg_skipped": 1.0}
        stats |= {"rm_trained": 1.0} | fit_classifier(
            self.classifier, self.classifier_optimizer, self.buffer_latents, self.buffer_good,
            o.classifier_steps, o.classifier_batch, rng,
        )
        rewards = self.rewards(latents)
        stats["reward_mean"] = float(rewards.mean())
        stats["reward_std"] = float(rewards.std(unbiased=False))
        if good.any() and (~good).any():  # does the reward separate what the rater separated?
            stats["reward_good_minus_bad"] = float(rewards[good].mean() - rewards[~good].mean())
        advantages = normalize_advantages(rewards, clip=o.adv_clip)
        if not bool((advantages != 0).any()):
            return stats | {"pg_skipped": 1.0}
        return stats | {"pg_skipped": 0.0} | prefixed("pg_", ppo_update(
            self.gen, rollout, advantages, self.optimizer, self.pg, rng, accelerator=self.accelerator
        ))

    def extra_state(self) -> dict[str, Any]:
        return {
            "classifier": self.classifier.state_dict(),
            "classifier_optimizer": self.classifier_optimizer.state_dict(),
            "buffer_latents": self.buffer_latents,
            "buffer_good": self.buffer_good,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.classifier.load_state_dict(state["classifier"])
        self.classifier_optimizer.load_state_dict(state["classifier_optimizer"])
        self.buffer_latents = state["buffer_latents"].to("cpu", torch.float32)
        self.buffer_good = state["buffer_good"].to("cpu", torch.bool)
