"""The non-RL baselines of HERO's Table 2: SD-Pretrained, SD-Enhanced and DreamBooth-style finetuning.

* ``pretrained``: the base model, no training, no labels.
* ``enhanced``: the base model shown a more detailed prompt at evaluation (the task's
  ``enhanced_prompts``, one per eval prompt, same order); the judge still sees the task prompt.
* ``dreambooth``: supervised finetuning of the LoRA on the images the rater called good, with the
  standard denoising loss. It asks for the same labels as HERO (protocol ``"hero"``) but uses only
  good/bad, never the best pick. Choices (the paper gives no details):
  - the training images are the *sampled* final latents ``x_0`` of good images (no VAE round trip),
    each with the prompt it was sampled from; every good image seen so far is kept in a buffer;
  - each iteration takes ``steps_per_iteration`` AdamW steps (lr 1e-4, grad clip 1.0) on
    ``train_batch`` images drawn from the buffer without replacement, timesteps uniform over the
    scheduler's training timesteps, target ε / v / x_0 by ``scheduler.config.prediction_type``,
    the conditional prediction only (no CFG), and no prior-preservation loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from herobench.core.policy_gradient import backward, clip_and_step, process_share, sum_over_processes
from herobench.errors import ConfigError, HerobenchError
from herobench.methods.base import LoRAMethod, LoRAOptions, Method, cpu_state, labels_tensor, lr_option
from herobench.types import Feedback, Rollout, TaskSpec


class PretrainedMethod(Method):
    """SD-Pretrained: the base model as it is. Protocol ``"none"``; no state."""

    name = "pretrained"
    protocol = "none"
    trains = False


class EnhancedMethod(PretrainedMethod):
    """SD-Enhanced: the base model prompted with the task's enhanced prompts at evaluation.

    An eval prompt ``task.eval_prompts[i]`` is shown as ``task.enhanced_prompts[i]``. Any other prompt
    (e.g. the training prompts of a task whose eval prompts differ) has no enhanced version and is
    shown unchanged.
    """

    name = "enhanced"

    def eval_prompts(self, prompts: list[str], task: TaskSpec) -> list[str]:
        if len(task.enhanced_prompts) != len(task.eval_prompts):
            raise HerobenchError(
                f"task '{task.name}' has {len(task.enhanced_prompts)} enhanced prompts for "
                f"{len(task.eval_prompts)} eval prompts"
            )
        enhanced = dict(zip(task.eval_prompts, task.enhanced_prompts))
        return [enhanced.get(p, p) for p in prompts]


# ---------------------------------------------------------------------------------------------- DreamBooth


def denoising_target(
    prediction_type: str, x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The noised input and the regression target of the diffusion training loss.

    ``x_t = sqrt(ᾱ)·x_0 + sqrt(1 - ᾱ)·ε``; the target is ``ε`` (``"epsilon"``), ``v = sqrt(ᾱ)·ε -
    sqrt(1 - ᾱ)·x_0`` (``"v_prediction"``, Salimans & Ho 2022) or ``x_0`` (``"sample"``) -- what
    diffusers' ``add_noise`` / ``get_velocity`` compute.

    Args:
        x0, noise: ``B×C×h×w``.
        alpha_bar: ``B`` cumulative alphas ``ᾱ_t`` of each row's timestep.
    """
    a = alpha_bar.to(x0.device, torch.float32).reshape(-1, *([1] * (x0.ndim - 1)))
    x0, noise = x0.to(torch.float32), noise.to(torch.float32)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = a.sqrt() * noise - (1 - a).sqrt() * x0
    elif prediction_type == "sample":
        target = x0
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}")
    return x_t, target


def denoising_loss(
    unet, scheduler, x0: torch.Tensor, embeds: torch.Tensor, rng: torch.Generator,
    rows: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """``mean((unet(x_t, t, c) - target)²)`` with ``t`` uniform over the training timesteps and
    ``ε ~ N(0, I)``, both from ``rng`` (CPU); ``x0`` ``B×C×h×w``, ``embeds`` ``B×L×D``.

    ``rows``: the loss of these rows only (a process' share in data parallel; None when empty); ``t``
    and ``ε`` are still drawn for all ``B`` rows, so each row gets the draw it gets in one process."""
    n = x0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=rng)
    noise = torch.randn(x0.shape, generator=rng).to(x0.device)
    if rows is not None:
        if not len(rows):
            return None
        keep = rows.to(x0.device)
        t, noise, x0, embeds = t[rows], noise[keep], x0[keep], embeds[rows.to(embeds.device)]
    alpha_bar = scheduler.alphas_cumprod.to(torch.float32)[t]
    x_t, target = denoising_target(scheduler.config.prediction_type, x0, noise, alpha_bar)
    pred = unet(x_t.to(unet.dtype), t.to(x0.device), encoder_hidden_states=embeds, return_dict=False)[0]
    return F.mse_loss(pred.float(), target)


@dataclass(frozen=True)
class DreamBoothOptions(LoRAOptions):
    """The DreamBooth-style baseline's settings (module docstring; the LoRA fields from ``methods.base``)."""

    lr: float = lr_option(1e-4)
    steps_per_iteration: int = 50
    train_batch: int = 8

    def __post_init__(self) -> None:
        for name in ("lora_rank", "steps_per_iteration", "train_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"method_options.{name} must be >= 1 (got {getattr(self, name)})")
        for name in ("lr", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"method_options.{name} must be > 0 (got {getattr(self, name)})")


class DreamBoothMethod(LoRAMethod):
    """DreamBooth-style supervised finetuning on good images (see the module docstring). It is what the
    Flow-GRPO repository (yifan123/flow_grpo) calls OnlineSFT: supervised finetuning, online, on the policy's
    own samples that the reward (here the rater) accepted.

    State: ``options``, ``optimizer`` (AdamW over the LoRA), ``buffer_latents`` (``N×C×h×w`` final
    latents of every good image so far, CPU float32) and ``buffer_prompts`` (their ``N`` prompts).
    """

    name = "dreambooth"
    title = "DreamBooth"
    options_class = DreamBoothOptions
    protocol = "hero"

    def build(self, gen, seed: int) -> None:
        self.buffer_latents = torch.zeros((0, *gen.latent_shape))
        self.buffer_prompts: list[str] = []

    def learn(self, rollout: Rollout, feedback: Feedback, rng: torch.Generator) -> dict[str, float]:
        o = self.options
        good = labels_tensor(feedback, rollout)
        idx = torch.nonzero(good).flatten()
        x0 = rollout.latents[:, -1]
        self.buffer_latents = torch.cat([self.buffer_latents, cpu_state(x0[idx.to(x0.device)])])
        self.buffer_prompts += [rollout.prompts[int(i)] for i in idx]
        n = len(self.buffer_prompts)
        stats = {"n_good": float(len(idx)), "buffer_images": float(n)}
        if n == 0:
            return stats | {"sft_skipped": 1.0}
        unet, device = self.gen.components.unet, self.gen.device
        unique = list(dict.fromkeys(self.buffer_prompts))
        embeds = self.gen.encode_prompts(unique)[0]
        row_of = {p: i for i, p in enumerate(unique)}
        acc = self.accelerator  # data parallel: each process computes its share of every step's images
        losses = []
        self.optimizer.zero_grad(set_to_none=True)
        for _ in range(o.steps_per_iteration):
            pick = torch.randperm(n, generator=rng)[: o.train_batch]
            emb = embeds[
                torch.tensor([row_of[self.buffer_prompts[int(i)]] for i in pick], device=embeds.device)
            ]
            mine = process_share(len(pick), acc)
            share = len(mine) / len(pick)  # 1.0 in one process
            x0 = self.buffer_latents[pick].to(device)
            loss = denoising_loss(unet, self.gen.scheduler, x0, emb, rng, None if share == 1 else mine)
            if loss is not None:
                backward(loss * share, acc)
            losses.append(0.0 if loss is None else float(loss.detach()) * share)
            clip_and_step(self.optimizer, o.max_grad_norm, acc)
        losses = sum_over_processes(losses, acc)
        return stats | {
            "sft_skipped": 0.0,
            "sft_loss_first": losses[0],
            "sft_loss_mean": sum(losses) / len(losses),
        }

    def extra_state(self) -> dict[str, Any]:
        return {"buffer_latents": self.buffer_latents, "buffer_prompts": list(self.buffer_prompts)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.buffer_latents = state["buffer_latents"]
        self.buffer_prompts = list(state["buffer_prompts"])
