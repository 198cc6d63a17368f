"""The method contract: what the harness calls, and the defaults every method shares.

The harness (``herobench.harness.runner``) owns the loop, the feedback ledger and evaluation; a
method only chooses what to sample for training (prompts, initial noise, groups) and learns from a
rated batch. One iteration, as the runner drives it::

    prompts  = method.train_prompts(task, n)
    groups   = method.groups(n)                      # D3PO: images sharing x_T, else None
    x_T      = method.init_noise(n, gen.latent_shape, rng)
    rollout  = gen.sample(prompts, init_noise=x_T)
    feedback = rater.rate(..., protocol=method.protocol, groups=groups)
    stats    = method.learn(rollout, feedback, rng)  # {name: float}, logged by the runner

and at evaluation ``gen.sample(method.eval_prompts(prompts, task), method.eval_noise(x_T_eval))``.

Resume: the runner calls ``setup`` (which builds the LoRA adapter and optimizers), then loads the
LoRA weights itself (``core.lora.load_lora``, in place) and finally ``load_state_dict`` with what
``state_dict`` returned; so ``state_dict`` holds everything else (optimizer moments, encoders, noise
pool, best image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from herobench.core.lora import ATTENTION_TARGETS, add_lora
from herobench.errors import ConfigError
from herobench.types import Feedback, Rollout, TaskSpec


def cycle_prompts(prompts: tuple[str, ...] | list[str], n: int, repeat: int = 1) -> list[str]:
    """``n`` prompts cycling through ``prompts``, each used ``repeat`` times in a row.

    ``repeat = 1`` gives ``p0 p1 p2 p0 p1 …``; ``repeat = 2`` gives ``p0 p0 p1 p1 p2 p2 p0 …`` (D3PO: a
    group of images sharing an initial noise must also share its prompt). Stateless, so every batch
    covers the prompts evenly and a resumed run draws the same prompts; a batch smaller than
    ``len(prompts) · repeat`` therefore never reaches the last prompts.
    """
    if not prompts:
        raise ValueError("no prompts to cycle through")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    return [prompts[(i // repeat) % len(prompts)] for i in range(n)]


@dataclass(frozen=True)
class NoOptions:
    """Methods without options: any key in ``method_options`` is rejected."""


class Method:
    """Base class of every method; subclasses override what differs.

    Attributes (class defaults; a variant may set them per instance):
        name: registry name, e.g. ``"hero"``.
        protocol: feedback protocol the rater must use (``herobench.harness.rater.SimulatedRater``):
            ``"hero"`` good/bad + best pick, ``"d3po"`` good/bad + (winner, loser) pairs inside
            groups sharing an initial noise, ``"scalar"`` good/bad as 0/1 scores, ``"none"``.
        trains: False for methods that never learn (the runner then spends no labels and saves no
            LoRA).
        custom_eval_noise: True when ``eval_noise`` is not the identity (recorded in the run config,
            because it changes what "evaluation on held-out noise" means).
        accelerator: None, or an ``accelerate.Accelerator`` the caller sets after ``setup`` for
            data-parallel training: the method then passes it to its optimizer updates
            (``core.policy_gradient``), and every process must call ``learn`` with the same whole batch.
    """

    name: str = "method"
    protocol: str = "none"
    trains: bool = False
    custom_eval_noise: bool = False
    accelerator = None
    options_class: type = NoOptions  # the dataclass ``method_options`` is read into

    def resolve_options(self, options: dict[str, Any]) -> Any:
        """``options`` read into :attr:`options_class`: unknown keys and wrong types raise ConfigError
        naming them. Needs no model, so a grid checks every cell's options before anything runs."""
        from herobench.config import from_dict

        return from_dict(self.options_class, dict(options), "method_options")

    def setup(self, gen, options: dict[str, Any], seed: int) -> None:
        """Build the LoRA adapter, optimizers and state, with ``self.resolve_options(options)``.
        Called once, before any other method."""
        raise NotImplementedError

    def train_prompts(self, task: TaskSpec, n: int) -> list[str]:
        """Prompts of the next training batch: ``task.train_prompts`` cycled (see :func:`cycle_prompts`)."""
        return cycle_prompts(task.train_prompts, n)

    def eval_prompts(self, prompts: list[str], task: TaskSpec) -> list[str]:
        """The prompts the model is shown when evaluated on ``prompts`` (identity except SD-Enhanced)."""
        return list(prompts)

    def init_noise(self, n: int, shape: tuple[int, int, int], rng: torch.Generator) -> torch.Tensor:
        """``n×C×h×w`` initial noise ``x_T`` of the next training batch; default ``N(0, I)`` from ``rng``."""
        return torch.randn((n, *shape), generator=rng, device=rng.device)

    def groups(self, n: int) -> list[int] | None:
        """Group id of each of the ``n`` images (images of a group share prompt and initial noise), or None."""
        return None

    def learn(self, rollout: Rollout, feedback: Feedback, rng: torch.Generator) -> dict[str, float]:
        """Learn from one rated batch; returns scalar statistics for the training log."""
        if self.trains:
            raise NotImplementedError
        return {}

    def eval_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """Initial noise used at evaluation, given the harness' held-out ``N(0, I)`` noise (identity)."""
        return noise

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume except the LoRA weights (saved by the runner)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (after :meth:`setup`)."""


def merge_fixed(options: dict[str, Any], fixed: dict[str, Any], method: str) -> dict[str, Any]:
    """``options`` plus the settings a named variant fixes (e.g. ``hero-no-fgg`` fixes
    ``feedback_guided_generation = false``); contradicting a fixed setting is a config error, so a
    run's name never lies about what ran."""
    from herobench.errors import ConfigError

    for key, value in fixed.items():
        if key in options and options[key] != value:
            raise ConfigError(
                f"method_options.{key} = {options[key]!r} contradicts method '{method}' (which fixes it to {value!r}); "
                f"use the base method instead"
            )
    return {**options, **fixed}


def cpu_state(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """A detached float32 CPU copy (what method state dicts hold), or None."""
    return None if tensor is None else tensor.detach().to("cpu", torch.float32).clone()


def attach_lora(gen, rank: int, lr: float, seed: int, targets: Sequence[str] = ATTENTION_TARGETS
                ) -> torch.optim.Optimizer:
    """Add a rank-``rank`` LoRA adapter to ``gen``'s UNet modules named ``targets`` (default: the
    attention projections; HERO/DDPO/D3PO all finetune LoRA rank 4) and return ddpo-pytorch's AdamW
    over its parameters."""
    from herobench.core.policy_gradient import make_optimizer

    if not targets:
        raise ConfigError("method_options.lora_targets must name at least one module")
    params = add_lora(gen.components.unet, rank=rank, seed=seed, targets=targets)
    return make_optimizer(params, lr)


def prefixed(prefix: str, stats: dict[str, float | list[float]]) -> dict[str, float | list[float]]:
    """``{prefix + key: value}`` (keeps the training log's keys apart by origin); a list value (e.g. a
    per-step diagnostic) stays a list of floats."""
    return {f"{prefix}{k}": [float(x) for x in v] if isinstance(v, list | tuple) else float(v)
            for k, v in stats.items()}


def labels_tensor(feedback: Feedback, rollout: Rollout) -> torch.Tensor:
    """The ``B`` good/bad labels as a bool tensor, checked against the batch size."""
    good = torch.tensor(feedback.good, dtype=torch.bool)
    if good.numel() != len(rollout):
        raise ValueError(f"feedback has {good.numel()} labels for a batch of {len(rollout)}")
    return good
