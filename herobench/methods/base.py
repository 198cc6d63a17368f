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

What the training methods share lives here, once: the option tables (:class:`LoRAOptions` for every
LoRA finetuner; :class:`PolicyGradientOptions` / :class:`PPOOptions` / :class:`DDPOStepOptions` for the
methods on ``core.policy_gradient``'s updates, with one :meth:`PolicyGradientOptions.pg_config`) and
:class:`LoRAMethod`, whose ``setup`` attaches the adapter and its AdamW and whose checkpoint holds the
options (checked on resume) and the optimizer. A method keeps its own defaults by re-declaring a field
(``lr`` differs per method: HERO 1e-3, DDPO 3e-4, D3PO 3e-5, ...); tests/test_methods_options.py pins
every method's resolved defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from herobench.config import in_range, to_dict
from herobench.core.lora import ATTENTION_TARGETS, add_lora
from herobench.core.policy_gradient import PGConfig, pg_config_from
from herobench.errors import ConfigError, HerobenchError
from herobench.types import Feedback, FeedbackProtocol, Rollout, TaskSpec


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


# Field ranges (``config.in_range``). They are checked only where an options class calls
# ``config.check_ranges`` (GRPO, the reward model); the other methods validate in their own
# ``__post_init__``, each as it did before the bases existed (tests/test_methods_options.py).
LR_RANGE = in_range(1e-12, 1.0)
POSITIVE = in_range(1e-12, 1e6)
COUNT = in_range(1, 4096)


def lr_option(default: float) -> Any:
    """The ``lr`` field with a method's own default (each method cites where its default comes from)."""
    return field(default=default, metadata=LR_RANGE)


@dataclass(frozen=True)
class LoRAOptions:
    """What every LoRA-finetuning method sets: the adapter (rank, alpha = rank, on the UNet modules named
    by ``lora_targets``), its AdamW learning rate and the gradient-norm clip.

    ``lr``'s default here is HERO's; every method re-declares it with :func:`lr_option`.
    """

    lora_rank: int = field(default=4, metadata=in_range(1, 1024))  # herobench's shared rank
    lora_targets: tuple[str, ...] = ATTENTION_TARGETS  # UNet module-name suffixes the LoRA adapts
    lr: float = lr_option(1e-3)
    max_grad_norm: float = field(default=1.0, metadata=POSITIVE)


@dataclass(frozen=True)
class PolicyGradientOptions(LoRAOptions):
    """A method trained by ``core.policy_gradient``'s update loops (PPO or DPO on stored denoising steps)."""

    train_micro_batch: int = field(default=8, metadata=COUNT)  # (trajectory, step) items per UNet call: memory only

    def train_timesteps(self, n_steps: int) -> int:
        """Denoising steps trained per trajectory on a sampler of ``n_steps`` steps: ``n_train_timesteps``
        as given (a method where 0 means "every step", or with a timestep fraction, overrides this)."""
        return self.n_train_timesteps

    def pg_config(self, n_steps: int) -> PGConfig:
        """The update's settings for a sampler of ``n_steps`` denoising steps: every field this options
        class shares with :class:`~herobench.core.policy_gradient.PGConfig`, and :meth:`train_timesteps`."""
        return pg_config_from(self, n_train_timesteps=self.train_timesteps(n_steps))

    def check_pg_config(self) -> None:
        """Validate the shared fields through :class:`PGConfig` (its message, under ``method_options.``)."""
        try:
            self.pg_config(1)
        except ConfigError as e:
            raise ConfigError(f"method_options.{e}") from None


@dataclass(frozen=True)
class PPOOptions(PolicyGradientOptions):
    """A PPO-clip update (ddpo-pytorch ``config/base.py``: clip range 1e-4 ``:87``, advantage clip 5 ``:85``)."""

    clip_range: float = field(default=1e-4, metadata=POSITIVE)
    adv_clip: float = field(default=5.0, metadata=POSITIVE)


@dataclass(frozen=True)
class DDPOStepOptions(PPOOptions):
    """ddpo-pytorch's sampling of what PPO trains: ``n_train_timesteps`` random denoising steps per
    trajectory, ``samples_per_step`` trajectories per optimizer step (HERO's official config, train batch
    2 × gradient accumulation 4 = 8: 8 optimizer steps per 64-image batch; 0 = one step per batch)."""

    n_train_timesteps: int = 5  # HERO's; DDPO re-declares 0 (every step)
    samples_per_step: int = field(default=8, metadata=in_range(0, 4096))


class Method:
    """Base class of every method; subclasses override what differs.

    Attributes (class defaults; a variant may set them per instance):
        name: registry name, e.g. ``"hero"``.
        protocol: the :data:`~herobench.types.FeedbackProtocol` the rater must use:
            ``"hero"`` good/bad + best pick, ``"d3po"`` good/bad + (winner, loser) pairs inside
            groups sharing an initial noise, ``"scalar"`` good/bad as 0/1 scores, ``"none"``.
        trains: False for methods that never learn (the runner then spends no labels and saves no
            LoRA).
        custom_eval_noise: True when ``eval_noise`` is not the identity (recorded in the run config,
            because it changes what "evaluation on held-out noise" means).
        accelerator: None, or the ``accelerate.Accelerator`` passed to :meth:`setup` for data-parallel
            training: the method then passes it to its optimizer updates (``core.policy_gradient``), and
            every process must call ``learn`` with the same whole batch.
        fixed: options a named variant pins (e.g. ``hero-no-fgg``: ``feedback_guided_generation = false``),
            merged into every ``resolve_options`` by :func:`merge_fixed`.
    """

    name: str = "method"
    protocol: FeedbackProtocol = "none"
    trains: bool = False
    custom_eval_noise: bool = False
    accelerator = None
    options_class: type = NoOptions  # the dataclass ``method_options`` is read into

    def __init__(self, name: str | None = None, fixed: dict[str, Any] | None = None):
        if name is not None:
            self.name = name
        self.fixed = dict(fixed or {})

    def resolve_options(self, options: dict[str, Any]) -> Any:
        """``options`` (with the variant's :attr:`fixed` ones) read into :attr:`options_class`: unknown
        keys and wrong types raise ConfigError naming them. Needs no model, so a grid checks every cell's
        options before anything runs."""
        from herobench.config import from_dict

        return from_dict(self.options_class, merge_fixed(dict(options), self.fixed, self.name), "method_options")

    def setup(self, gen, options: dict[str, Any], seed: int, accelerator=None) -> None:
        """Resolve ``options`` into ``self.options``, keep ``gen`` and ``accelerator``, then :meth:`build`.
        Called once, before any other method."""
        self.options = self.resolve_options(options)
        self.gen = gen
        self.accelerator = accelerator
        self.attach(gen, seed)
        self.build(gen, seed)

    def attach(self, gen, seed: int) -> None:
        """What every method of a family builds first (:class:`LoRAMethod`: the adapter); nothing here."""

    def build(self, gen, seed: int) -> None:
        """Build what the method holds (encoders, buffers, state) from ``self.options``; nothing here."""

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


class LoRAMethod(Method):
    """A method that finetunes a LoRA adapter with AdamW (every training method).

    ``setup`` attaches the adapter and its optimizer (``self.optimizer``, :meth:`attach`) before :meth:`build`; a
    :class:`PolicyGradientOptions` method also gets ``self.pg`` (its :class:`PGConfig` on the generator's
    sampler). The checkpoint holds the options, the optimizer and :meth:`extra_state`.

    Attributes:
        title: the method's name in messages (e.g. "HERO").
    """

    trains = True
    options_class: type = LoRAOptions
    title: str = "method"

    def attach(self, gen, seed: int) -> None:
        """The LoRA adapter and its AdamW (``self.optimizer``), and ``self.pg`` for a policy-gradient method."""
        o = self.options
        if isinstance(o, PolicyGradientOptions):
            self.pg = o.pg_config(gen.sampler.steps)
        # (weight_decay: DiffusionNFT's and Diffusion-KTO's option; the others use ddpo-pytorch's 1e-4)
        self.optimizer = attach_lora(gen, o.lora_rank, o.lr, seed, o.lora_targets,
                                     weight_decay=getattr(o, "weight_decay", DEFAULT_WEIGHT_DECAY))

    def extra_state(self) -> dict[str, Any]:
        """What the checkpoint holds besides the options and the optimizer (override to add)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state` from the checkpoint's ``state`` (override to add)."""

    def state_dict(self) -> dict[str, Any]:
        return {"options": to_dict(self.options), "optimizer": self.optimizer.state_dict(), **self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Refuse a checkpoint of other options, then restore the optimizer and :meth:`extra_state`.

        An option added after the checkpoint was written was at its default then (e.g. HERO's
        ``triplet_distance``), so a key the checkpoint lacks counts as its default."""
        saved = {**to_dict(self.options_class()), **state["options"]}
        if saved != to_dict(self.options):
            raise HerobenchError(f"the checkpoint was written with other {self.title} options than this run's")
        self.optimizer.load_state_dict(state["optimizer"])
        self.load_extra_state(state)


def merge_fixed(options: dict[str, Any], fixed: dict[str, Any], method: str) -> dict[str, Any]:
    """``options`` plus the settings a named variant fixes (e.g. ``hero-no-fgg`` fixes
    ``feedback_guided_generation = false``); contradicting a fixed setting is a config error, so a
    run's name never lies about what ran."""
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


DEFAULT_WEIGHT_DECAY = 1e-4  # ddpo-pytorch's AdamW (core.policy_gradient.make_optimizer)


def attach_lora(gen, rank: int, lr: float, seed: int, targets: Sequence[str] = ATTENTION_TARGETS,
                weight_decay: float = DEFAULT_WEIGHT_DECAY) -> torch.optim.Optimizer:
    """Add a rank-``rank`` LoRA adapter to ``gen``'s UNet modules named ``targets`` (default: the
    attention projections; HERO/DDPO/D3PO all finetune LoRA rank 4) and return ddpo-pytorch's AdamW
    over its parameters (``weight_decay``: its 1e-4 unless a method's official code says otherwise)."""
    from herobench.core.policy_gradient import make_optimizer

    if not targets:
        raise ConfigError("method_options.lora_targets must name at least one module")
    params = add_lora(gen.components.unet, rank=rank, seed=seed, targets=targets)
    return make_optimizer(params, lr, weight_decay=weight_decay)


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
