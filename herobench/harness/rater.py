"""Simulated raters: turn an oracle's verdicts into the feedback a human would give.

The rater is the simulated human's *hand*: the oracle (its eyes) judges each image; the rater reports
the judgement in the protocol a method consumes, optionally with human-like noise:

* ``flip_rate``: each good/bad label is flipped independently with this probability;
* ``best_noise``: the best pick ranks ``score + N(0, best_noise²)`` instead of the exact score.

Protocols (``types.FeedbackProtocol``; the feedback is shaped by ``types.make_feedback`` for both raters):

* ``"hero"``: good/bad for every image, plus one best image chosen among the good ones *and the previous
  best* (HERO §3.1), which the rater keeps itself (``SimulatedRater.best_score``, the ``types.Rater``
  contract); ``None`` means the previous best stays. The rule (:func:`best_pick`, checked for the
  simulated and the human rater alike by ``types.check_best``) is a person's, as in the official interface
  (sony/hero ``rl4dgm/user_feedback_interface/user_feedback_interface.py:675-698``: the good images are
  shown beside the current best, and choosing the current best changes nothing): the previous best stays
  unless a good image has a *strictly* higher (perceived) score. With a pass/fail oracle (GlyphWorld scores
  every success 1.0) the first best therefore stays the anchor; an oracle with a graded score inside the
  good class replaces it by a strictly better image. Before the first best pick the highest-scoring good
  image is chosen, ties drawn uniformly with the iteration's ``rng``.
* ``"d3po"``: good/bad for every image, and ``pairs`` = every (good, bad) pair among images that share an
  initial noise (``groups``), as in D3PO.
* ``"scalar"``: good/bad plus ``scores`` = the labels as 0/1 rewards (DDPO with human feedback).
* ``"none"``: no labels (methods that do not learn from feedback).

Rater profiles (private preferences, e.g. the mountain task's "green" and "snowy" raters) work either
way: an oracle built for one profile simply returns that rater's verdicts; an oracle that judges several
profiles at once puts ``verdict.attrs["profiles"][P] = {"success": bool, "score": float}`` on every image,
and the rater reads its own profile ``P`` from there (``"default"`` always uses the verdict itself).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from herobench.errors import ConfigError
from herobench.types import (
    FEEDBACK_PROTOCOLS,
    Feedback,
    FeedbackProtocol,
    RatingRequest,
    Verdict,
    check_best,
    check_protocol,
    make_feedback,
)

__all__ = ["DEFAULT_PROFILE", "SimulatedRater", "best_pick", "check_best"]

DEFAULT_PROFILE = "default"


class SimulatedRater:
    """A simulated human rater with optional label flips and a noisy best pick."""

    PROTOCOLS: tuple[FeedbackProtocol, ...] = FEEDBACK_PROTOCOLS

    def __init__(self, profile: str = DEFAULT_PROFILE, flip_rate: float = 0.0, best_noise: float = 0.0) -> None:
        if not 0.0 <= flip_rate <= 1.0:
            raise ConfigError(f"flip_rate must be in [0, 1] (got {flip_rate})")
        if best_noise < 0.0:
            raise ConfigError(f"best_noise must be >= 0 (got {best_noise})")
        self.profile = profile
        self.flip_rate = float(flip_rate)
        self.best_noise = float(best_noise)
        self.best_score: float | None = None  # the current best's score (types.Rater): rate() keeps it

    @property
    def noisy(self) -> bool:
        return self.flip_rate > 0.0 or self.best_noise > 0.0

    def judgement(self, verdict: Verdict) -> tuple[bool, float]:
        """``(success, score)`` of one verdict under this rater's profile."""
        profiles = verdict.attrs.get("profiles")
        if self.profile == DEFAULT_PROFILE or profiles is None:
            return bool(verdict.success), float(verdict.score)
        if self.profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(
                f"rater profile '{self.profile}' is not judged by this oracle (profiles it judges: {known})"
            )
        p = profiles[self.profile]
        return bool(p["success"]), float(p["score"])

    def rate(
        self,
        verdicts: Sequence[Verdict],
        protocol: FeedbackProtocol,
        groups: Sequence[int] | None = None,
        rng: np.random.Generator | None = None,
        request: RatingRequest | None = None,
    ) -> Feedback:
        """Feedback on one batch; a new best pick becomes :attr:`best_score` (the rater owns it).

        Args:
            verdicts: ``B`` oracle verdicts, in batch order.
            protocol: one of :attr:`PROTOCOLS`.
            groups: ``B`` initial-noise ids (``"d3po"`` only: pairs are formed within a group).
            rng: randomness for flips, best-pick noise and the draw among good images tied at the top;
                required when the rater is noisy (the runner passes one seeded by the run's seed and the
                iteration, so that each iteration draws independently and reproducibly); without it a tie
                goes to the earliest image.
            request: the batch itself (images, hashes, budget), which the runner passes to every
                rater; a simulated rater judges through the verdicts only and ignores it
                (``herobench.harness.human.HumanRater`` shows it to a person).

        ``"hero"``: the current best (:attr:`best_score`, None before the first pick) stays unless a good
        image scores strictly higher (:func:`best_pick`).

        Returns:
            Feedback with ``B`` labels (none for ``"none"``), shaped by ``types.make_feedback``.

        Raises:
            ConfigError: unknown protocol or profile.
            ValueError: ``groups`` missing or of the wrong length for ``"d3po"``; a noisy rater
                without ``rng``.
        """
        if check_protocol(protocol) == "none":
            return make_feedback(protocol, ())
        if self.noisy and rng is None:
            raise ValueError("a noisy rater needs an rng (one per iteration, seeded by the run and the iteration)")
        n = len(verdicts)
        judged = [self.judgement(v) for v in verdicts]
        truth = np.array([s for s, _ in judged], dtype=bool)
        scores = np.array([sc for _, sc in judged], dtype=np.float64)
        # draw flips and ranking noise unconditionally (when noisy) so the stream layout is fixed
        flips = rng.random(n) < self.flip_rate if self.flip_rate > 0 else np.zeros(n, dtype=bool)
        perceived = scores + rng.normal(0.0, self.best_noise, n) if self.best_noise > 0 else scores
        good = tuple(bool(g) for g in truth ^ flips)
        best = None
        if protocol == "hero":
            prev = self.best_score
            if prev is not None and self.best_noise > 0:
                prev = prev + rng.normal(0.0, self.best_noise)  # the previous best is perceived with noise too
            best = best_pick(good, perceived, prev, rng)
        feedback = make_feedback(protocol, good, best, groups, has_prev_best=self.best_score is not None)
        # the verdict's own score, as the ledger records it (what a resumed run's remember_best sees)
        self.remember_best(feedback, [v.score for v in verdicts])
        return feedback

    def remember_best(self, feedback: Feedback, scores: Sequence[float] | None) -> None:
        """Take ``feedback.best`` as the current best, scored ``scores[best]`` (a batch rated before: the
        runner replays it from the ledger). No best, or no scores (a person's labels), changes nothing."""
        if feedback.best is not None and scores is not None:
            self.best_score = float(scores[feedback.best])


def best_pick(
    good: Sequence[bool], perceived: np.ndarray, prev_best_score: float | None, rng: np.random.Generator | None
) -> int | None:
    """The simulated rater's best pick: the index of the new best image, or ``None`` to keep the previous
    best (or when nothing is good).

    A person keeps the current best unless a good image is better (module docstring), so with a previous
    best (``prev_best_score`` not None) a good image replaces it only when its ``perceived`` score is
    strictly higher; a tie keeps it. Without a previous best (the first pick) the highest-scoring good image
    is chosen. Good images tied at the top are drawn from uniformly with ``rng`` (without ``rng``: the
    earliest of them). The result satisfies :func:`check_best`.
    """
    candidates = [i for i, g in enumerate(good) if g]
    if not candidates:
        return None
    top = max(perceived[i] for i in candidates)
    if prev_best_score is not None and not top > prev_best_score:
        return None  # nothing strictly better: the previous best stays
    tied = [i for i in candidates if perceived[i] == top]
    if rng is None or len(tied) == 1:
        return tied[0]
    return tied[int(rng.integers(len(tied)))]
