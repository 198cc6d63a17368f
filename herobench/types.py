"""The few contracts every other module depends on.

Conventions used everywhere in herobench:

* Images cross module boundaries as ``torch.float32`` tensors of shape ``B×3×H×W`` with values in
  ``[0, 1]`` (``herobench.core.images`` is the one place that converts to/from PIL or uint8).
* Latents are ``B×C×h×w`` in the UNet's latent space (4×16×16 for GlyphWorld, 4×64×64 for SD-1.5).
* ``T`` is the number of denoising steps of the sampler; trajectories store ``T + 1`` latents
  ``x_T, …, x_0`` where ``x_T`` is the initial noise and ``x_0`` the final latent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

import torch

from herobench.errors import ConfigError

if TYPE_CHECKING:  # (numpy is only named in the Rater protocol's signature)
    import numpy as np

# What a rater is asked for, the protocol a method consumes (``Method.protocol``):
# "hero" good/bad + a best pick; "d3po" good/bad + (winner, loser) pairs inside groups sharing an initial noise;
# "scalar" good/bad as 0/1 rewards; "none" nothing (the method does not learn from feedback).
FeedbackProtocol = Literal["d3po", "hero", "none", "scalar"]
FEEDBACK_PROTOCOLS: tuple[FeedbackProtocol, ...] = get_args(FeedbackProtocol)


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


def check_protocol(protocol: str) -> FeedbackProtocol:
    """``protocol`` if it is a :data:`FeedbackProtocol`.

    Raises:
        ConfigError: an unknown protocol, naming the known ones.
    """
    if protocol not in FEEDBACK_PROTOCOLS:
        raise ConfigError(f"unknown feedback protocol '{protocol}' (known: {', '.join(FEEDBACK_PROTOCOLS)})")
    return protocol  # type: ignore[return-value]


def check_groups(protocol: FeedbackProtocol, groups: Sequence[int] | None, n: int) -> None:
    """``"d3po"`` pairs images inside initial-noise groups, so it needs one group id per image.

    Raises:
        ValueError: ``groups`` missing or of another length than the ``n`` images, for ``"d3po"``.
    """
    if protocol == "d3po" and (groups is None or len(groups) != n):
        raise ValueError(f"the d3po protocol needs one group id per image ({n}), got {groups!r}")


def check_best(good: Sequence[bool], best: int | None, has_prev_best: bool) -> None:
    """The best-pick contract every rater's feedback obeys (simulated and human, HERO §3.1).

    ``best`` is an index of a *good* image, or ``None`` -- which keeps the previous best, and is allowed
    only when there is one or when no image is good (the official interface also asks for a best on the
    first batch, sony/hero ``user_feedback_interface.py:655-658``).

    Raises:
        ValueError: a best out of range or labelled bad, or no best where the first one is due.
    """
    if best is not None:
        if not 0 <= best < len(good):
            raise ValueError(f"best image {best} is not an image of this batch of {len(good)}")
        if not good[best]:
            raise ValueError(f"the best image ({best}) must be one of the good images")
    elif not has_prev_best and any(good):
        raise ValueError("there is no previous best to keep: a batch with a good image needs a best pick")


def d3po_pairs(good: Sequence[bool], groups: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Every (good, bad) pair of images sharing a group (an initial noise), as D3PO trains them: winners
    in batch order, each with its group's losers in batch order."""
    return tuple(
        (w, b)
        for w in range(len(good))
        if good[w]
        for b in range(len(good))
        if not good[b] and groups[b] == groups[w]
    )


def make_feedback(
    protocol: FeedbackProtocol,
    good: Sequence[bool],
    best: int | None = None,
    groups: Sequence[int] | None = None,
    has_prev_best: bool = False,
) -> Feedback:
    """The :class:`Feedback` of one batch in ``protocol``, from a rater's good/bad labels and best pick.

    The one place that shapes feedback, for the simulated rater (labels from an oracle's verdicts) and
    a person (labels from the labelling page) alike: ``"hero"`` keeps ``best`` (checked by
    :func:`check_best` against ``has_prev_best``), ``"scalar"`` turns the labels into 0/1 scores,
    ``"d3po"`` derives the pairs from ``groups`` (:func:`d3po_pairs`), ``"none"`` has no labels. ``best``
    is ignored by every protocol but ``"hero"``.

    Raises:
        ConfigError: unknown protocol.
        ValueError: a best that breaks :func:`check_best`; ``groups`` missing for ``"d3po"``.
    """
    check_protocol(protocol)
    if protocol == "none":
        return Feedback(good=())
    good = tuple(bool(g) for g in good)
    if protocol == "hero":
        check_best(good, best, has_prev_best)
        return Feedback(good=good, best=best)
    if protocol == "scalar":
        return Feedback(good=good, scores=tuple(float(g) for g in good))
    check_groups(protocol, groups, len(good))
    return Feedback(good=good, pairs=d3po_pairs(good, groups))


@runtime_checkable
class Rater(Protocol):
    """What the runner asks of a rater (``harness.rater.SimulatedRater``, ``harness.human.HumanRater``).

    The rater owns its previous best, as a person remembers the image they starred: :meth:`rate` updates
    :attr:`best_score` whenever it picks a new best, :meth:`remember_best` does the same for a batch it
    rated before (a resumed run replays it from the ledger instead of asking again), and the runner
    checkpoints :attr:`best_score` with the rest of the run's state.

    Attributes:
        best_score: the oracle's score of the current best image, or None (no best yet, or a person,
            who compares pictures rather than scores).
    """

    best_score: float | None

    def rate(self, verdicts: Sequence[Verdict] | None, protocol: FeedbackProtocol, groups: Sequence[int] | None = None,
             rng: np.random.Generator | None = None, request: RatingRequest | None = None) -> Feedback:
        """Feedback on one batch in ``protocol`` (shaped by :func:`make_feedback`): ``verdicts`` are the
        oracle's (None for a person), ``groups`` the initial-noise ids (``"d3po"``), ``rng`` the iteration's
        randomness, ``request`` the batch itself (images, hashes, budget)."""
        ...

    def remember_best(self, feedback: Feedback, scores: Sequence[float] | None) -> None:
        """Take ``feedback``'s best (if any) as the current best, ``scores`` being the batch's oracle
        scores as recorded (None for a person's labels)."""
        ...


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
