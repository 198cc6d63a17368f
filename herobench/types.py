"""The few contracts every other module depends on.

Conventions used everywhere in herobench:

* Images cross module boundaries as ``torch.float32`` tensors of shape ``B×3×H×W`` with values in
  ``[0, 1]`` (``herobench.core.images`` is the one place that converts to/from PIL or uint8).
* Latents are ``B×C×h×w`` in the UNet's latent space (4×16×16 for GlyphWorld, 4×64×64 for SD-1.5).
* ``T`` is the number of denoising steps of the sampler; trajectories store ``T + 1`` latents
  ``x_T, …, x_0`` where ``x_T`` is the initial noise and ``x_0`` the final latent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass
class Rollout:
    """One sampled batch with everything a policy-gradient or preference method needs.

    Attributes:
        prompts: ``B`` prompt strings.
        latents: ``B×(T+1)×C×h×w`` trajectory ``x_T … x_0``; ``latents[:, 0]`` is the initial noise.
        log_probs: ``B×T`` log-density of each DDIM step ``x_{t} → x_{t-1}`` under the sampling
            policy (summed over latent dimensions), ``float32``.
        timesteps: ``T`` scheduler timesteps (descending), ``long``.
        prompt_embeds: ``B×L×D`` conditional text embeddings.
        negative_embeds: ``B×L×D`` unconditional / negative-prompt embeddings.
        images: ``B×3×H×W`` decoded images in ``[0, 1]``.
    """

    prompts: list[str]
    latents: torch.Tensor
    log_probs: torch.Tensor
    timesteps: torch.Tensor
    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor
    images: torch.Tensor

    @property
    def init_noise(self) -> torch.Tensor:
        """``B×C×h×w`` initial noise ``x_T``."""
        return self.latents[:, 0]

    @property
    def last_step_input(self) -> torch.Tensor:
        """``B×C×h×w`` latent entering the *last* denoising step (HERO's representation input)."""
        return self.latents[:, -2]

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, idx: torch.Tensor | list[int]) -> Rollout:
        """Sub-batch by index."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Rollout(
            prompts=[self.prompts[int(i)] for i in idx],
            latents=self.latents[idx],
            log_probs=self.log_probs[idx],
            timesteps=self.timesteps,
            prompt_embeds=self.prompt_embeds[idx],
            negative_embeds=self.negative_embeds[idx],
            images=self.images[idx],
        )


@dataclass(frozen=True)
class Verdict:
    """An oracle's judgement of one image.

    Attributes:
        success: whether the image meets the task's success rule.
        score: a graded quality in ``[0, 1]`` used to rank images (e.g. for the best pick); an
            unreadable image scores 0.
        reason: one human-readable sentence saying why (always filled in, GenEval-style).
        readable: False when the oracle could not parse the image ("unreadable" is a verdict).
        attrs: what the oracle parsed (counts, colours, …), JSON-serialisable.
    """

    success: bool
    score: float
    reason: str
    readable: bool = True
    attrs: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Oracle(Protocol):
    """Perception plus a pure rule. ``judge(images B×3×H×W in [0,1], prompts) -> B verdicts``."""

    name: str
    version: str

    def judge(self, images: torch.Tensor, prompts: list[str]) -> list[Verdict]: ...


@dataclass(frozen=True)
class Feedback:
    """What a rater (simulated or human) says about one batch, in the protocol a method consumes.

    Attributes:
        good: ``B`` bools, one label per labelled image (each costs one feedback from the budget).
        best: index into the batch of the best image among the good ones, or ``None`` when the
            rater keeps the previous best (or there is no good image). Not charged to the budget;
            reported separately.
        pairs: ``(winner, loser)`` index pairs among images sharing an initial noise (D3PO);
            derived from ``good``, not charged separately.
        scores: ``B`` optional scalar rewards (a scalar-feedback protocol); ``None`` otherwise.
    """

    good: tuple[bool, ...]
    best: int | None = None
    pairs: tuple[tuple[int, int], ...] = ()
    scores: tuple[float, ...] | None = None

    @property
    def n_labels(self) -> int:
        return len(self.good)


@dataclass(frozen=True)
class RatingRequest:
    """What the runner shows a rater besides the verdicts: the batch itself (a person needs the images).

    A simulated rater ignores it; ``herobench.harness.human.HumanRater`` serves it as a web page.

    Attributes:
        images: ``B×3×H×W`` images in ``[0, 1]``, in batch order.
        prompts: ``B`` prompts the images were sampled from.
        image_sha256: ``B`` content hashes (``herobench.core.images.sha256_of_image``), as in the ledger.
        iteration: the 1-based iteration being labelled.
        budget_labels: the run's label budget.
        labels_spent: labels already recorded before this batch.
        prev_best_sha256: content hash of the current best image (``None`` before the first best pick).
        task: the task's name (shown to the person).
    """

    images: torch.Tensor
    prompts: tuple[str, ...]
    image_sha256: tuple[str, ...]
    iteration: int
    budget_labels: int
    labels_spent: int
    prev_best_sha256: str | None = None
    task: str = ""


@dataclass(frozen=True)
class TaskSpec:
    """A task loaded from ``tasks/<name>/task.toml`` (see ``herobench.harness.tasks``)."""

    name: str
    version: str
    category: str
    description: str
    train_prompts: tuple[str, ...]
    eval_prompts: tuple[str, ...]
    enhanced_prompts: tuple[str, ...]
    oracles: dict[str, str]  # backend -> oracle name
    default_budget_labels: int
    success: str
    rater_profiles: tuple[str, ...] = ("default",)
    # backend -> its enhanced prompts (GlyphWorld's must use the world's vocabulary); ``enhanced_prompts``
    # holds the ones of the backend in use (``herobench.harness.tasks.for_backend``)
    enhanced_by_backend: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # method -> its default budget where the paper gave it another (HERO's paper gave D3PO 5 x 1,000 hand labels)
    budget_labels_by_method: dict[str, int] = field(default_factory=dict)

    def budget_for(self, method: str | None) -> int:
        """The default label budget of ``method`` on this task."""
        return self.budget_labels_by_method.get(method or "", self.default_budget_labels)
