"""DiffusionNFT (Zheng et al., ICLR 2026): online RL on the *forward* process, from good/bad labels.

No likelihoods and no trajectories: the labelled images are noised again and the model is trained with a
denoising loss that contrasts an implicit *positive* policy ``v⁺ = β·v_θ + (1-β)·v_old`` and an implicit
*negative* one ``v⁻ = (1+β)·v_old - β·v_θ``, weighted by each image's reward. Follows the official trainer,
NVlabs/DiffusionNFT @24af555 ``scripts/train_nft_sd3.py`` (``train:LINE`` below) with ``config/base.py`` and
``config/nft.py`` (``sd3_geneval``, the GenEval run) for the numbers; docs/FIDELITY.md (DiffusionNFT, Diffusion-KTO) has the
row-by-row comparison.

* **Rewards → r.** The label is the reward (1 good, 0 bad). Advantages are per-prompt centred and divided by
  the whole batch's std + 1e-4 (``flow_grpo/stat_tracking.py:17-31``, ``global_std = True``,
  ``base.py:57``), clipped to ±5 (``train:910-914``, ``base.py:84``) and, with ``advantages = "binary"``,
  replaced by their sign (``train:924-925``); then ``r = clamp(A/5/2 + 1/2, 0, 1)`` (``train:928-929``). So
  a good image of a prompt with some bad ones gets r = 0.6, a bad one 0.4, an image whose prompt's labels
  all agree 0.5 (trained too: it only holds θ near the old policy). ``"all"`` (``nft.py:62``) keeps ``A``.
* **Loss.** Per image and timestep: ``(r·L⁺ + (1-r)·L⁻)/β · 5`` (``train:959-960``), ``L^± = mean((x̂₀^± -
  x₀)²) / w^±`` with the adaptive weight ``w^± = mean|x̂₀^± - x₀|`` (detached, ≥ 1e-5; ``train:939-957``),
  plus ``kl_beta · mean((v_θ - v_ref)²)`` to the initial model (``train:966-970``). β 1.0 (``nft.py:61``),
  kl_beta 1e-4 (``nft.py:24``).
* **Old model.** The data are sampled by ``v_old`` (``train:640``); after each batch
  ``old ← d·old + (1-d)·θ`` with ``d = min(rate·(step - flat), max)`` after ``flat`` optimizer steps
  (``train:169-189``, ``:1034-1039``; ``decay_type = 1``, ``nft.py:60``: 0, 0.001, 0.5). Here the LoRA the
  harness samples, evaluates and checkpoints *is* ``v_old``; θ lives in the method state and is swapped into
  the same LoRA parameters while it trains (so the optimizer's moments stay on θ).
* **Timesteps.** Each image gets its own permutation of the sampler's ``T`` timesteps and is trained at the
  first ``int(T·0.99)`` (``train:569``, ``:810-816``, ``base.py:87``), with fresh noise each (``train:868``);
  the conditional prediction only (CFG-free, ``nft.py:64``, ``train:839-851``).
* **Updates.** One AdamW step per labelled batch (``gradient_step_per_epoch = 1``, ``nft.py:89``;
  ``num_inner_epochs = 1``, ``base.py:82``): lr 3e-4, weight decay 1e-4 (``base.py:66, 72``), grad clip 1.0
  (``:79``). ``steps_per_batch = k`` splits the shuffled batch into k steps (``nft.py:75``: 2 for OCR).

**Flow ↔ VP (ε / v) adaptation.** The paper's model is a rectified flow, ``x_s = (1-s)·x₀ + s·ε``, velocity
``v = ε - x₀``, ``x̂₀ = x_s - s·v`` (``train:870``, ``:940``). A DDIM/VP state ``x_t = a·x₀ + b·ε``
(``a = √ᾱ``, ``b = √(1-ᾱ)``) *is* a flow state rescaled: ``x_s = x_t/(a+b)`` at ``s = b/(a+b)``, with the
same ``x₀`` and ``ε``. Any VP output (ε, v or x₀ prediction) gives ``(x̂₀, ε̂)`` and so the flow velocity
``v̂ = ε̂ - x̂₀`` of the same point (:func:`flow_view`). The official policy loss is written on ``x̂₀``, which
is affine in ``v``, so ``x̂₀(v⁺) = β·x̂₀_θ + (1-β)·x̂₀_old``: the loss computed here from x₀-predictions *is*
the official loss of the equivalent flow, not an analogue (tested against the velocity form on fixed
tensors); the KL term is computed on the flow velocities. In ε units the same squared difference is
``(a/(a+b))²`` times the velocity one, in x₀ units ``s²`` times: naive ε-space formulas would reweight
the timesteps, which is why they are not used.

Labelled deviations: LoRA rank 4, alpha = rank, as for every herobench method (official: 32 / 64,
``train:430-431``); the images come from the harness' shared sampler (DDIM, eta 1, with CFG; official: dpm2
without CFG, ``nft.py:64-66``); the model evaluated and saved is ``v_old`` (official: an EMA of θ with decay
0.9, ``train:567, 220-221, 342-345``). Runs in one process (data parallel is not implemented for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

from herobench.core.lora import reference_policy
from herobench.core.policy_gradient import clip_and_step
from herobench.errors import ConfigError, HerobenchError
from herobench.methods.base import LoRAMethod, LoRAOptions, Method, cpu_state, labels_tensor, lr_option
from herobench.methods.baselines import denoising_target
from herobench.types import Feedback, Rollout


class FlowView(NamedTuple):
    """A VP model output seen as the rectified flow through the same point (module docstring).

    x0: ``B×C×h×w`` predicted clean latent ``x̂₀``; velocity: ``B×C×h×w`` flow velocity ``ε̂ - x̂₀``;
    s: ``B×1×1×1`` flow time ``√(1-ᾱ)/(√ᾱ + √(1-ᾱ))`` in ``(0, 1)``.
    """

    x0: torch.Tensor
    velocity: torch.Tensor
    s: torch.Tensor


def flow_view(prediction_type: str, out: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> FlowView:
    """``(x̂₀, v̂, s)`` of a UNet output ``out`` (``B×C×h×w``) at ``x_t = √ᾱ·x₀ + √(1-ᾱ)·ε``.

    ``prediction_type``: ``"epsilon"`` (``x̂₀ = (x_t - b·ε̂)/a``), ``"v_prediction"`` (``x̂₀ = a·x_t - b·v̂``,
    ``ε̂ = b·x_t + a·v̂``, Salimans & Ho 2022) or ``"sample"``; ``alpha_bar``: ``B`` values ``ᾱ`` in (0, 1).
    """
    dtype = torch.float64 if out.dtype == torch.float64 else torch.float32  # (float64: the tests)
    ab = alpha_bar.to(out.device, dtype).reshape(-1, *([1] * (out.ndim - 1)))
    a, b = ab.sqrt(), (1 - ab).sqrt()
    out, x_t = out.to(dtype), x_t.to(dtype)
    if prediction_type == "epsilon":
        eps, x0 = out, (x_t - b * out) / a
    elif prediction_type == "v_prediction":
        eps, x0 = b * x_t + a * out, a * x_t - b * out
    elif prediction_type == "sample":
        eps, x0 = (x_t - a * out) / b, out
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}")
    return FlowView(x0=x0, velocity=eps - x0, s=b / (a + b))


def nft_reward_weights(
    rewards: torch.Tensor, prompts: Sequence[str], adv_clip_max: float = 5.0, mode: str = "binary"
) -> torch.Tensor:
    """The ``B`` weights ``r ∈ [0, 1]`` of the positive loss (``1 - r``: the negative), from ``B`` rewards.

    ``A = (R - mean of R over the image's prompt) / (std of R over the batch + 1e-4)`` (population std;
    stat_tracking.py:17-31 with global_std), clipped to ``±adv_clip_max``; ``mode = "binary"``: ``sign(A)``;
    then ``r = clamp(A/adv_clip_max/2 + 1/2, 0, 1)`` (train:910-929).
    """
    if mode not in ("binary", "all"):
        raise ValueError(f"unknown advantage mode {mode!r}")
    r = rewards.detach().to(torch.float64).flatten()
    if len(prompts) != r.numel():
        raise ValueError(f"{len(prompts)} prompts for {r.numel()} rewards")
    std = r.std(unbiased=False) + 1e-4
    adv = torch.empty_like(r)
    for p in dict.fromkeys(prompts):
        idx = torch.tensor([i for i, q in enumerate(prompts) if q == p])
        adv[idx] = (r[idx] - r[idx].mean()) / std
    adv = adv.clamp(-adv_clip_max, adv_clip_max)
    if mode == "binary":
        adv = torch.sign(adv)
    return (adv / adv_clip_max / 2.0 + 0.5).clamp(0.0, 1.0).to(torch.float32)


def nft_policy_loss(
    x0_theta: torch.Tensor,
    x0_old: torch.Tensor,
    x0: torch.Tensor,
    r: torch.Tensor,
    beta: float = 1.0,
    adv_clip_max: float = 5.0,
) -> torch.Tensor:
    """DiffusionNFT's policy loss per item, ``B`` values (train:934-960, written on x₀-predictions).

    ``x̂⁺ = β·x̂_θ + (1-β)·x̂_old`` and ``x̂⁻ = (1+β)·x̂_old - β·x̂_θ`` (``x̂_old`` detached), ``L^± =
    mean((x̂^± - x₀)² / w^±)`` with ``w^± = max(mean|x̂^± - x₀|, 1e-5)`` detached (the adaptive weight), and
    the loss ``(r·L⁺ + (1-r)·L⁻) / β · adv_clip_max``.

    Args:
        x0_theta: ``B×C×h×w`` x₀-prediction of the trained model (differentiable).
        x0_old: ``B×C×h×w`` x₀-prediction of the old (sampling) model.
        x0: ``B×C×h×w`` the clean latents that were noised.
        r: ``B`` weights in [0, 1] (:func:`nft_reward_weights`).
    """
    dims = tuple(range(1, x0.ndim))
    old = x0_old.detach()
    positive = beta * x0_theta + (1.0 - beta) * old
    negative = (1.0 + beta) * old - beta * x0_theta

    def weighted(pred: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # train:942-946 (in float64 there)
            w = (pred.double() - x0.double()).abs().mean(dim=dims, keepdim=True).clamp(min=1e-5)
        return ((pred - x0) ** 2 / w.to(pred.dtype)).mean(dim=dims)

    r = r.to(x0_theta.device, x0_theta.dtype)
    return (r * weighted(positive) + (1.0 - r) * weighted(negative)) / beta * adv_clip_max


def old_decay(step: int, flat_steps: int = 0, rate: float = 0.001, max_decay: float = 0.5) -> float:
    """The old model's EMA decay after ``step`` optimizer steps (train:169-189; decay_type 1 by default)."""
    return 0.0 if step < flat_steps else min((step - flat_steps) * rate, max_decay)


@dataclass(frozen=True)
class DiffusionNFTOptions(LoRAOptions):
    """DiffusionNFT's settings (module docstring). From the shared base (``methods.base``): LoRA rank 4
    (herobench's; official: 32, alpha 64, train:430-431) and grad clip 1.0 (base.py:79)."""

    lr: float = lr_option(3e-4)  # base.py:66
    weight_decay: float = 1e-4  # base.py:72
    beta: float = 1.0  # implicit-policy mixing, nft.py:61 (OCR and multi-reward: 0.1, nft.py:77, 137)
    kl_beta: float = 1e-4  # KL to the initial model, config.train.beta (nft.py:24)
    adv_clip_max: float = 5.0  # base.py:84
    advantages: Literal["binary", "all"] = "binary"  # train:915-925 (nft.py:62's default is "all")
    timestep_fraction: float = 0.99  # trained timesteps per image: int(T · fraction) (base.py:87)
    old_decay_flat_steps: int = 0  # decay_type 1 (nft.py:60, train:169-189): d = min(rate·step, max)
    old_decay_rate: float = 0.001
    old_decay_max: float = 0.5
    steps_per_batch: int = 1  # optimizer steps per labelled batch (gradient_step_per_epoch, nft.py:89)
    train_micro_batch: int = 8  # memory knob only

    def __post_init__(self) -> None:
        for name in ("lora_rank", "steps_per_batch", "train_micro_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"method_options.{name} must be >= 1 (got {getattr(self, name)})")
        for name in ("lr", "max_grad_norm", "beta", "adv_clip_max"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"method_options.{name} must be > 0 (got {getattr(self, name)})")
        for name in ("weight_decay", "kl_beta", "old_decay_flat_steps", "old_decay_rate"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method_options.{name} must be >= 0 (got {getattr(self, name)})")
        if not 0 < self.timestep_fraction <= 1:
            raise ConfigError(f"method_options.timestep_fraction must be in (0, 1] (got {self.timestep_fraction})")
        if not 0 <= self.old_decay_max < 1:
            raise ConfigError(f"method_options.old_decay_max must be in [0, 1) (got {self.old_decay_max})")


def _assign(params: Sequence[torch.nn.Parameter], values: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)


def _clone(params: Sequence[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _forward(unet, x_t: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    return unet(x_t, t, encoder_hidden_states=embeds, return_dict=False)[0]


def single_process(method: Method) -> None:
    """Raise unless ``method`` runs in one process (its update has no data-parallel path)."""
    acc = method.accelerator
    if acc is not None and acc.num_processes > 1:
        raise HerobenchError(f"method '{method.name}' runs in one process: launch it without accelerate")


class DiffusionNFTMethod(LoRAMethod):
    """DiffusionNFT on good/bad labels (module docstring). Protocol ``"scalar"``.

    State: ``options``, ``optimizer`` (AdamW over the LoRA parameters, i.e. over θ), ``theta`` (θ's LoRA
    values, one tensor per parameter; the UNet's LoRA holds the old policy between calls) and ``step``
    (optimizer steps so far, which set the old model's decay).
    """

    name = "diffusion-nft"
    title = "DiffusionNFT"
    options_class = DiffusionNFTOptions
    protocol = "scalar"

    def build(self, gen, seed: int) -> None:
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.theta = _clone(self.params)  # θ₀ = old₀ (train:576-579)
        self.step = 0

    def learn(self, rollout: Rollout, feedback: Feedback, rng: torch.Generator) -> dict[str, float]:
        single_process(self)
        o = self.options
        good = labels_tensor(feedback, rollout)
        r_all = nft_reward_weights(good.float(), rollout.prompts, o.adv_clip_max, o.advantages)
        device = rollout.latents.device
        x0_all = rollout.latents[:, -1].float()
        n, n_steps = len(rollout), len(rollout.timesteps)
        k = max(1, int(n_steps * o.timestep_fraction))
        perm = torch.randperm(n, generator=rng)  # train:807
        # each image's own order of the sampler's timesteps; the first k are trained (train:810-816, :864)
        cols = torch.stack([torch.randperm(n_steps, generator=rng) for _ in range(n)])[:, :k]
        alphas = self.gen.scheduler.alphas_cumprod.to(torch.float32)

        old = _clone(self.params)  # the policy that sampled this batch
        theta = [t.clone() for t in self.theta]  # θ as the optimizer last left it
        _assign(self.params, theta)
        losses, kls, norms = [], [], []
        for step_rows in perm.tensor_split(o.steps_per_batch):
            items = len(step_rows) * k
            if items == 0:
                continue
            for micro in step_rows.split(o.train_micro_batch):
                emb = rollout.prompt_embeds[micro.to(device)]  # conditional only: CFG-free (train:849-851)
                x0 = x0_all[micro.to(device)]
                for j in range(k):
                    t = rollout.timesteps[cols[micro, j]]
                    noise = torch.randn(x0.shape, generator=rng).to(device)  # train:868
                    loss, policy, kl = self._item_loss(x0, noise, t, alphas[t], emb, r_all[micro], old, theta)
                    (loss / items).backward()  # the step's mean over its (image, timestep) items
                    losses.append(float(policy.detach().mean()))
                    kls.append(float(kl.detach().mean()))
            norms.append(clip_and_step(self.optimizer, o.max_grad_norm))
            self.step += 1
            theta = _clone(self.params)
        decay = old_decay(self.step, o.old_decay_flat_steps, o.old_decay_rate, o.old_decay_max)
        with torch.no_grad():  # train:1034-1039
            new_old = [decay * a + (1.0 - decay) * b for a, b in zip(old, theta)]
            drift = sum(float(((b - a) ** 2).sum()) for a, b in zip(new_old, theta)) ** 0.5
        _assign(self.params, new_old)
        self.theta = theta
        return {
            "n_good": float(good.sum()),
            "r_mean": float(r_all.mean()),
            "r_nonneutral": float((r_all != 0.5).float().mean()),
            "nft_loss_mean": sum(losses) / max(len(losses), 1),
            "nft_kl_mean": sum(kls) / max(len(kls), 1),
            "nft_optimizer_steps": float(len(norms)),
            "nft_grad_norm_mean": sum(norms) / max(len(norms), 1),
            "old_decay": float(decay),
            "theta_minus_old_norm": drift,
        }

    def _item_loss(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, ab: torch.Tensor,
                   emb: torch.Tensor, r: torch.Tensor, old: list[torch.Tensor], theta: list[torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One (image, timestep) item per row: ``x0`` noised at ``t`` (``ᾱ = ab``) with ``noise``, the old,
        reference and θ forwards, and ``(loss summed over the rows, policy loss per row, KL per row)``."""
        o, unet = self.options, self.gen.components.unet
        kind = self.gen.scheduler.config.prediction_type
        x_t, _ = denoising_target(kind, x0, noise, ab)
        args = (unet, x_t.to(unet.dtype), t.to(x0.device), emb)
        with torch.no_grad():
            # old, then reference, *before* θ's forward: the swap writes the LoRA weights that
            # θ's backward reads (train:873-883 also runs the old model first)
            _assign(self.params, old)
            out_old = _forward(*args)
            _assign(self.params, theta)
            out_ref = None
            if o.kl_beta > 0:
                with reference_policy(unet):
                    out_ref = _forward(*args)
        out = _forward(*args)
        new_view = flow_view(kind, out, x_t, ab)
        old_view = flow_view(kind, out_old, x_t, ab)
        policy = nft_policy_loss(new_view.x0, old_view.x0, x0, r, o.beta, o.adv_clip_max)
        loss = policy.sum()
        kl = torch.zeros(())
        if out_ref is not None:
            ref_velocity = flow_view(kind, out_ref, x_t, ab).velocity
            kl = ((new_view.velocity - ref_velocity) ** 2).mean(dim=tuple(range(1, x0.ndim)))
            loss = loss + o.kl_beta * kl.sum()
        return loss, policy, kl

    def extra_state(self) -> dict[str, Any]:
        return {"theta": [cpu_state(t) for t in self.theta], "step": self.step}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if len(state["theta"]) != len(self.params):
            raise HerobenchError("the checkpoint's DiffusionNFT θ does not fit this LoRA")
        self.theta = [t.to(p.device, p.dtype) for t, p in zip(state["theta"], self.params)]
        self.step = int(state["step"])
