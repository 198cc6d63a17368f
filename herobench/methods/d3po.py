"""D3PO (Yang et al., CVPR 2024): DPO on denoising steps, no reward model.

Follows the official human-feedback trainer, yk7333/d3po ``scripts/sample.py`` + ``scripts/train.py``
(``config/base.py`` for the numbers; docs/FIDELITY.md (D3PO) has the row-by-row comparison):

* **Groups of 7.** Seven images share a prompt and an initial noise ``x_T`` (``sample.py:35``, ``:218``,
  ``:305``); the rater labels them and every pair of a group with unequal labels is trained
  (``train.py:265``, ``:293-304``): with good/bad labels, every good image against every bad one of its
  group (``herobench.harness.rater``), ``g·(7 - g)`` pairs for ``g`` good images.
* **Frozen initial reference.** The official code deep-copies the UNet once and freezes it
  (``train.py:253-255``); here the UNet with its LoRA adapter disabled (the adapter starts as a no-op),
  whose log-probs are computed once per batch (``core.policy_gradient.reference_log_probs``).
  ``reference = "sampling"`` uses the policy that sampled the batch instead: the official reference of a
  round that resumed from a checkpoint (the copy is made after ``load_state``, ``train.py:249-253``),
  with each herobench iteration as a round.
* **Passes.** The official trainer makes ``num_epochs`` passes (400, ``config/base.py:15``,
  ``train.py:270``) over its labelled batch, groups shuffled each pass (``train.py:272-273``), pairs of a
  group in order, one optimizer step per pair with gradients accumulated over every denoising step
  (``train.batch_size = 1``, ``timestep_fraction = 1.0``; ``train.py:76``, ``:293-420``). Here
  ``passes`` over each iteration's batch; the default is not 400 but 16, a count whose CPU cost per label
  stays within one evaluation's time (measured: docs/FIDELITY.md (D3PO)). A measured deviation.
* **Loss.** ``-logsigmoid(β·(log ρ_w - log ρ_l))`` per step, each ratio clamped to ``1 ± 0.1``
  (``train.py:411-413``, ``config/base.py:103``), β 0.1 (``:101``), AdamW lr 3e-5 (``:72``), grad clip 1.0
  (``:85``), CFG in training (``:94``).

Its sampler (20 DDIM steps, eta 1, CFG 5) is the harness' shared sampler. The online reward-model
trainer (``scripts/rm/train_d3po.py``) is ``images_per_noise = 2, passes = 1`` with the same reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from herobench.core.policy_gradient import dpo_update, reference_log_probs
from herobench.errors import ConfigError, HerobenchError
from herobench.methods.base import LoRAMethod, PolicyGradientOptions, cycle_prompts, labels_tensor, lr_option
from herobench.types import Feedback, Rollout, TaskSpec


@dataclass(frozen=True)
class D3POOptions(PolicyGradientOptions):
    """D3PO's settings (module docstring); the LoRA fields come from the shared bases (``methods.base``):
    rank 4, grad clip 1.0 (config/base.py:85), 8 items per UNet call (memory only)."""

    lr: float = lr_option(3e-5)  # config/base.py:72
    beta: float = 0.1  # config/base.py:101
    images_per_noise: int = 7  # scripts/sample.py:35 NUM_PER_PROMPT
    # passes over each batch's pairs. Official 400 (config/base.py:15); 16 keeps the CPU cost per label
    # within one 128-image evaluation (~23 s) at the densest pairs (hand: 1.5 pairs/label, ~1.1 s per
    # label-pass; measured maximum 18-21): docs/FIDELITY.md (D3PO), row "passes"
    passes: int = 16
    reference: Literal["initial", "sampling"] = "initial"  # initial: official train.py:253-255
    ratio_clip: float | None = 0.1  # config/base.py:103 train.eps; None = plain DPO
    n_train_timesteps: int = 0  # 0 = every denoising step (timestep_fraction 1.0, config/base.py:99)
    pairs_per_step: int = 1  # pairs per optimizer step (official: 1)

    def __post_init__(self) -> None:
        checks = [
            (self.lora_rank >= 1, f"lora_rank must be >= 1 (got {self.lora_rank})"),
            (self.beta > 0, f"beta must be > 0 (got {self.beta})"),
            (self.images_per_noise >= 2, f"images_per_noise must be >= 2 (got {self.images_per_noise})"),
            (self.passes >= 1, f"passes must be >= 1 (got {self.passes})"),
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
        self.check_pg_config()

    def train_timesteps(self, n_steps: int) -> int:
        """``n_train_timesteps``, 0 = all ``n_steps``."""
        return self.n_train_timesteps or n_steps


def noise_groups(n: int, images_per_noise: int) -> list[int]:
    """Group id of each of ``n`` images: ``0 0 1 1 2 2 …`` for 2 per noise (the last group may be short)."""
    return [i // images_per_noise for i in range(n)]


def pass_order(
    pairs: list[tuple[int, int]], groups: list[int], rng: torch.Generator
) -> list[tuple[int, int]]:
    """The pairs in the order of one pass: groups in a random order (the official per-epoch
    ``torch.randperm`` over the batch, ``train.py:272-273``), and inside a group in the order of
    ``itertools.combinations`` over its images (``train.py:265``, ``:293``)."""
    ids = sorted({groups[w] for w, _ in pairs})
    rank = {g: int(r) for g, r in zip(ids, torch.randperm(len(ids), generator=rng).tolist())}
    return sorted(pairs, key=lambda p: (rank[groups[p[0]]], min(p), max(p)))


class D3POMethod(LoRAMethod):
    """D3PO. Protocol ``"d3po"``: labels plus (winner, loser) pairs inside noise groups.

    State: ``options`` (:class:`D3POOptions`), ``optimizer`` (AdamW over the LoRA parameters). The
    reference needs no state: it is the UNet with the adapter disabled, or the batch's own log-probs.
    """

    name = "d3po"
    title = "D3PO"
    options_class = D3POOptions
    protocol = "d3po"

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
        """``passes`` passes over the batch's pairs, one optimizer step per ``pairs_per_step`` pairs.

        Stats: ``dpo_loss`` / ``dpo_margin`` / ``dpo_clipfrac`` (means over every pass), the same for the
        first and the last pass (``*_first_pass``, ``*_last_pass``: each item is scored before the
        optimizer step it enters, so the last pass shows how far the passes moved the loss from ``ln 2``),
        ``dpo_grad_norm`` (last step), ``dpo_n_optimizer_steps``.
        """
        o = self.options
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
        ref = None
        if o.reference == "initial":
            ref = reference_log_probs(self.gen, rollout, [i for p in pairs for i in p], self.pg)
        passes = []
        for _ in range(o.passes):
            passes.append(dpo_update(
                self.gen,
                rollout,
                pass_order(pairs, groups, rng),
                self.optimizer,
                self.pg,
                rng,
                beta=o.beta,
                ratio_clip=o.ratio_clip,
                accelerator=self.accelerator,
                ref_log_probs=ref,
                pairs_per_step=o.pairs_per_step,
            ))
        out = stats | {"dpo_skipped": 0.0}
        for key in ("loss", "margin", "clipfrac"):
            out[f"dpo_{key}"] = sum(p[key] for p in passes) / len(passes)
            out[f"dpo_{key}_first_pass"] = passes[0][key]
            out[f"dpo_{key}_last_pass"] = passes[-1][key]
        out["dpo_grad_norm"] = passes[-1]["grad_norm"]
        out["dpo_n_optimizer_steps"] = sum(p["n_optimizer_steps"] for p in passes)
        return out
