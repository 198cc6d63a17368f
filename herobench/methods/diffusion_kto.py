"""Diffusion-KTO (Li et al., NeurIPS 2024): a Kahneman–Tversky utility of per-image like/dislike labels.

No pairs and no reward model: each labelled image's implicit reward is how much better the model denoises
it than the reference (the initial model), and the loss pushes that reward up for liked images and down for
disliked ones through a sigmoid value function around a reference point. Follows the official trainer,
jacklishufan/diffusion-kto @226bbd0 ``train_kto_sd_v1.5.py`` (``train:LINE`` below) with the paper's
launch script ``exps/example.sh``; docs/FIDELITY.md (DiffusionNFT, Diffusion-KTO) has the row-by-row comparison.

* **Implicit reward.** ``g = ‖ε_ref - target‖² - ‖ε_θ - target‖²`` (each the per-image mean of the denoising
  loss, ``train:1395-1399, 1427-1432``; ``g = policy - reference`` log-likelihood proxies, ``:1451-1453``),
  one uniform timestep ``t ∈ [0, 1000)`` and one noise per image (``:1321, :1332-1338``), target ε or v by
  ``prediction_type`` (``:1385-1392``). With LoRA the reference is the UNet with its adapter disabled
  (``:1409-1410``; ``core.lora.reference_policy``).
* **Reference point.** ``z₀ = max(0, mean of g over the training batch)``, detached (``bce_offset =
  "none"``, the default, ``:613-614, 1459, 1470-1471``; the original KTO's mismatched-prompt estimate is
  the non-default ``"original"``).
* **Value function.** ``h = σ(±β·(g - z₀))`` (+ liked, - disliked; ``halo = "sigmoid"``, ``:1457, 1472-1475``)
  and the loss ``mean(λ_y·(1 - h))`` with ``λ_D = λ_U = 1`` (``:394-404, 1488-1492, 1508-1509``); β 1000
  (``--beta_dpo``, ``:387-391``, not overridden by example.sh).
* **Data.** The official trainer is offline on Pick-a-Pic with binary labels, batches drawn with replacement
  so that a fraction ``positive_ratio`` (0.8, example.sh) of them are liked (``:724-753, 1186-1190``), 20 %
  of the prompts replaced by ``""`` (``:632-636, 683-684``), 8 images per step (2 per GPU × 4 processes,
  example.sh and config.json). Online, as herobench's DreamBooth-style baseline does, every labelled image so
  far (its sampled final latent, prompt and label) is kept in a buffer and each iteration takes
  ``steps_per_iteration`` steps on batches drawn from it that way.
* **Optimizer.** AdamW, weight decay 1e-2 (``:470``), grad clip 1.0 (``:479``), the lr warmed up linearly over
  200 steps from 0 (``constant_with_warmup``, example.sh; ``:1212-1219``). LoRA rank 4, alpha = rank, on the
  attention projections (``:565-569, 866-875``) with the LoRA path's lr 5e-4 (``:405-409``): the paper's
  1e-7 (example.sh) finetunes the whole UNet.

Labelled deviations besides the lr and the online buffer: the sampled latents are trained as they are (the
official VAE-encodes, crops and flips its images at random, ``train:1122-1139, 1303-1313``); float32 AdamW
(example.sh: 8-bit Adam). Runs in one process (data parallel is not implemented for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from herobench.core.lora import reference_policy
from herobench.core.policy_gradient import clip_and_step
from herobench.errors import ConfigError
from herobench.methods.base import LoRAMethod, LoRAOptions, cpu_state, labels_tensor, lr_option
from herobench.methods.baselines import denoising_target
from herobench.methods.diffusion_nft import single_process
from herobench.types import Feedback, Rollout


def kto_loss(
    model_losses: torch.Tensor,
    ref_losses: torch.Tensor,
    good: torch.Tensor,
    beta: float = 1000.0,
    lambda_desirable: float = 1.0,
    lambda_undesirable: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Diffusion-KTO's loss on one batch (train:1451-1509, ``halo = "sigmoid"``, ``bce_offset = "none"``).

    Args:
        model_losses: ``B`` per-image denoising losses of the trained model (differentiable).
        ref_losses: ``B`` the same under the reference model.
        good: ``B`` bools, liked (True) or disliked.
        beta: the implicit reward's scale β.
        lambda_desirable, lambda_undesirable: the value function's weights of liked / disliked images.

    Returns:
        ``(loss, stats)``: ``mean(λ_y·(1 - σ(±β·(g - z₀))))`` with ``g = ref - model`` and ``z₀ =
        max(0, mean(g))`` detached; ``stats``: ``reference_point`` z₀, ``reward_mean`` mean g and
        ``accuracy`` the fraction of images on the right side of z₀ (detached scalars). ``1/2·mean(λ_y)``
        when model and reference agree.
    """
    g = ref_losses - model_losses
    z0 = g.detach().mean().clamp(min=0.0)
    sign = good.to(g.device, g.dtype) * 2 - 1
    h = torch.sigmoid(sign * beta * (g - z0))
    weight = torch.where(good.to(g.device), lambda_desirable, lambda_undesirable).to(g.dtype)
    loss = (weight * (1 - h)).mean()
    stats = {
        "reference_point": z0,
        "reward_mean": g.detach().mean(),
        "accuracy": (sign * (g.detach() - z0) > 0).float().mean(),
    }
    return loss, stats


def kto_sampling_weights(good: torch.Tensor, positive_ratio: float) -> torch.Tensor:
    """``N`` sampling weights over the buffer: a liked image is drawn with probability ``positive_ratio``
    (when both kinds are present); the official ``make_weights_for_balanced_classes`` (train:724-741)."""
    good = good.bool()
    n = float(len(good))
    n_good = float(good.sum())
    w_good = n / (n_good + 1e-9) * positive_ratio
    w_bad = n / (n - n_good + 1e-9) * (1 - positive_ratio)
    return torch.where(good, w_good, w_bad).to(torch.float64)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """diffusers' ``constant_with_warmup``: ``step / warmup`` before ``warmup`` steps, then 1 (``step`` =
    optimizer steps already taken, so the first step has lr 0)."""
    return 1.0 if step >= warmup_steps else step / warmup_steps


@dataclass(frozen=True)
class DiffusionKTOOptions(LoRAOptions):
    """Diffusion-KTO's settings (module docstring). From the shared base (``methods.base``): LoRA rank 4
    (train:565-569, --rank default 4, alpha = rank at :869) on the attention projections (train:871) and
    grad clip 1.0 (train:479)."""

    lr: float = lr_option(5e-4)  # --learning_rate default (train:405-409), the LoRA path
    lr_warmup_steps: int = 200  # example.sh (constant_with_warmup)
    weight_decay: float = 1e-2  # train:470
    beta: float = 1000.0  # --beta_dpo (train:387-391)
    lambda_desirable: float = 1.0  # train:394-398
    lambda_undesirable: float = 1.0  # train:399-404
    positive_ratio: float = 0.8  # example.sh (default 0.5, train:590-594)
    empty_prompt_prob: float = 0.2  # --proportion_empty_prompts (train:632-636)
    train_batch: int = 8  # example.sh: 2 per GPU × 4 processes
    steps_per_iteration: int = 50  # herobench: the DreamBooth-style baseline's (the official is offline)

    def __post_init__(self) -> None:
        for name in ("lora_rank", "train_batch", "steps_per_iteration"):
            if getattr(self, name) < 1:
                raise ConfigError(f"method_options.{name} must be >= 1 (got {getattr(self, name)})")
        for name in ("lr", "max_grad_norm", "beta"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"method_options.{name} must be > 0 (got {getattr(self, name)})")
        for name in ("lr_warmup_steps", "weight_decay", "lambda_desirable", "lambda_undesirable"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method_options.{name} must be >= 0 (got {getattr(self, name)})")
        for name in ("positive_ratio", "empty_prompt_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"method_options.{name} must be in [0, 1] (got {getattr(self, name)})")


class DiffusionKTOMethod(LoRAMethod):
    """Diffusion-KTO on good/bad labels, online with a buffer (module docstring). Protocol ``"scalar"``.

    State: ``options``, ``optimizer`` (AdamW over the LoRA), ``step`` (optimizer steps so far: the lr
    warmup), ``buffer_latents`` (``N×C×h×w`` final latents of every labelled image, CPU float32),
    ``buffer_prompts`` (their ``N`` prompts) and ``buffer_good`` (their ``N`` labels).
    """

    name = "diffusion-kto"
    title = "Diffusion-KTO"
    options_class = DiffusionKTOOptions
    protocol = "scalar"

    def build(self, gen, seed: int) -> None:
        self.step = 0
        self.buffer_latents = torch.zeros((0, *gen.latent_shape))
        self.buffer_prompts: list[str] = []
        self.buffer_good = torch.zeros(0, dtype=torch.bool)

    def learn(self, rollout: Rollout, feedback: Feedback, rng: torch.Generator) -> dict[str, float]:
        single_process(self)
        o = self.options
        good = labels_tensor(feedback, rollout)
        self.buffer_latents = torch.cat([self.buffer_latents, cpu_state(rollout.latents[:, -1])])
        self.buffer_prompts += list(rollout.prompts)
        self.buffer_good = torch.cat([self.buffer_good, good])
        unet, sched, device = self.gen.components.unet, self.gen.scheduler, self.gen.device
        kind = sched.config.prediction_type
        texts = list(dict.fromkeys([*self.buffer_prompts, ""]))
        embeds = self.gen.encode_prompts(texts)[0]
        row_of = {p: i for i, p in enumerate(texts)}
        weights = kto_sampling_weights(self.buffer_good, o.positive_ratio)
        alphas = sched.alphas_cumprod.to(torch.float32)
        dims = tuple(range(1, self.buffer_latents.ndim))
        log: dict[str, list[float]] = {"loss": [], "reference_point": [], "reward_mean": [], "accuracy": []}
        n_good_drawn = 0
        for _ in range(o.steps_per_iteration):
            pick = torch.multinomial(weights, o.train_batch, replacement=True, generator=rng)
            blank = torch.rand(o.train_batch, generator=rng) < o.empty_prompt_prob  # train:683-684
            rows = [row_of["" if b else self.buffer_prompts[int(i)]] for i, b in zip(pick, blank)]
            emb = embeds[torch.tensor(rows, device=embeds.device)]
            x0 = self.buffer_latents[pick].to(device)
            labels = self.buffer_good[pick]
            noise = torch.randn(x0.shape, generator=rng).to(device)  # train:1321
            t = torch.randint(0, sched.config.num_train_timesteps, (o.train_batch,), generator=rng)  # :1332
            x_t, target = denoising_target(kind, x0, noise, alphas[t])
            x_in, t_in = x_t.to(unet.dtype), t.to(device)
            pred = unet(x_in, t_in, encoder_hidden_states=emb, return_dict=False)[0]
            model_losses = F.mse_loss(pred.float(), target, reduction="none").mean(dim=dims)
            with torch.no_grad(), reference_policy(unet):
                ref = unet(x_in, t_in, encoder_hidden_states=emb, return_dict=False)[0]
                ref_losses = F.mse_loss(ref.float(), target, reduction="none").mean(dim=dims)
            loss, stats = kto_loss(model_losses, ref_losses, labels, o.beta, o.lambda_desirable,
                                   o.lambda_undesirable)
            loss.backward()
            for group in self.optimizer.param_groups:
                group["lr"] = o.lr * warmup_factor(self.step, o.lr_warmup_steps)
            clip_and_step(self.optimizer, o.max_grad_norm)
            self.step += 1
            n_good_drawn += int(labels.sum())
            log["loss"].append(float(loss.detach()))
            for key, value in stats.items():
                log[key].append(float(value))
        mean = {f"kto_{k}_mean": sum(v) / len(v) for k, v in log.items()}
        return {
            "n_good": float(good.sum()),
            "buffer_images": float(len(self.buffer_prompts)),
            "kto_loss_first": log["loss"][0],
            **mean,
            "kto_drawn_good_fraction": n_good_drawn / (o.steps_per_iteration * o.train_batch),
            "kto_lr": float(self.optimizer.param_groups[0]["lr"]),
        }

    def extra_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "buffer_latents": self.buffer_latents,
            "buffer_prompts": list(self.buffer_prompts),
            "buffer_good": self.buffer_good.clone(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.buffer_latents = state["buffer_latents"]
        self.buffer_prompts = list(state["buffer_prompts"])
        self.buffer_good = state["buffer_good"].clone().bool()
