"""The sampler every method shares: DDIM with classifier-free guidance, recording the trajectory.

A short loop of our own over the diffusers components (not a copy of ``StableDiffusionPipeline
.__call__``): encode prompts -> x_T -> T DDIM steps (``ddim_step_with_logprob``) -> VAE decode. With a
CPU ``torch.Generator`` it draws the same noise as ``StableDiffusionPipeline(latents=x_T,
generator=g, eta=eta)`` and so reproduces its images (tested).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from herobench.core.ddim import ddim_step_mean, ddim_step_with_logprob
from herobench.core.pipeline import SDComponents
from herobench.errors import ConfigError, HerobenchError
from herobench.types import Rollout

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


@dataclass(frozen=True)
class SamplerConfig:
    """How images are sampled (HERO: 50 steps, eta 1.0, CFG 5.0; D3PO: 20 steps).

    Attributes:
        steps: number of DDIM steps ``T``.
        eta: DDIM noise weight in ``[0, 1]``; 1.0 is stochastic (needed for meaningful log-probs),
            0 deterministic.
        guidance_scale: classifier-free guidance weight; ``<= 1`` disables guidance (as in diffusers).
        negative_prompt: the unconditional prompt of CFG.
        micro_batch: most samples per UNet / VAE call (memory bound only: results do not depend on it).
    """

    steps: int = 20
    eta: float = 1.0
    guidance_scale: float = 5.0
    negative_prompt: str = ""
    micro_batch: int = 64

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"eta must be in [0, 1], got {self.eta}")
        if self.micro_batch < 1:
            raise ConfigError(f"micro_batch must be >= 1, got {self.micro_batch}")

    @property
    def uses_cfg(self) -> bool:
        return self.guidance_scale > 1.0


class Generator:
    """Samples rollouts and recomputes step log-probs with the UNet's current (LoRA) weights.

    The components must already be on ``device`` (``load_components(path, device, dtype)``); the
    UNet is shared, so adding or training LoRA on ``components.unet`` changes what this samples.
    The only state besides the components is the ``unet_seconds`` counter.

    ``precision="bf16"`` runs every UNet call (sampling, log-prob recomputation and so its backward) under
    ``torch.autocast(bfloat16)``: an opt-in fast path with its own determinism class (its images differ from
    fp32's); the UNet's output is cast back to ``dtype`` before the DDIM step. ``"fp32"`` (default) changes
    nothing.
    """

    def __init__(
        self,
        components: SDComponents,
        sampler: SamplerConfig = SamplerConfig(),
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        precision: Precision = "fp32",
    ):
        from diffusers import DDIMScheduler

        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.components = components
        self.sampler = sampler
        self.device = torch.device(device)
        self.dtype = dtype
        unet_device = next(components.unet.parameters()).device
        if unet_device.type != self.device.type:
            raise HerobenchError(
                f"the UNet is on {unet_device} but the Generator was asked for {self.device}"
            )
        # a private copy configured once for `sampler.steps`: sampling never mutates shared state
        self.scheduler = DDIMScheduler.from_config(components.scheduler.config)
        self.scheduler.set_timesteps(sampler.steps)
        self.unet_seconds = 0.0  # wall time inside UNet forward calls (benchmarks)
        self.precision = precision

    # ------------------------------------------------------------------ shapes and text
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of one latent."""
        cfg = self.components.unet.config
        size = cfg.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (cfg.in_channels, h, w)

    @property
    def timesteps(self) -> torch.Tensor:
        """``T`` descending scheduler timesteps (long, CPU)."""
        return self.scheduler.timesteps.to("cpu", torch.long)

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> torch.Tensor:
        tok, enc = self.components.tokenizer, self.components.text_encoder
        ids = tok(
            texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        )
        mask = (
            ids.attention_mask.to(self.device) if getattr(enc.config, "use_attention_mask", False) else None
        )
        return enc(ids.input_ids.to(self.device), attention_mask=mask)[0].to(self.dtype)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings ``(cond B×L×D, uncond B×L×D)``; the uncond rows embed the negative prompt.

        Each distinct prompt is encoded once (batches usually repeat one prompt).
        """
        unique = list(dict.fromkeys(prompts))
        emb = self._encode(unique)
        where = torch.tensor([unique.index(p) for p in prompts], device=self.device)
        cond = emb[where]
        uncond = self._encode([self.sampler.negative_prompt]).expand_as(cond).contiguous()
        return cond, uncond

    # ------------------------------------------------------------------ UNet
    def _unet(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """One timed UNet forward."""
        start = time.perf_counter()
        # "bf16": the UNet's matmuls and convolutions (forward, and so backward) in bfloat16 under autocast;
        # its output, the DDIM step, log-probs and every trained weight stay in self.dtype (issue 30)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = self.components.unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]
        out = out.to(x.dtype)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        self.unet_seconds += time.perf_counter() - start
        return out

    def _guided(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, use_cfg: bool
    ) -> torch.Tensor:
        """Model output (after CFG) for ``B`` latents, in micro-batches of ``sampler.micro_batch``.

        ``t`` is a 0-d tensor or ``B`` timesteps.
        """
        t = t.to(self.device).expand(x.shape[0])
        x_in = self.scheduler.scale_model_input(x, t)
        outs = []
        for s in range(0, x.shape[0], self.sampler.micro_batch):
            sl = slice(s, s + self.sampler.micro_batch)
            if use_cfg:
                # uncond first, as diffusers does
                out = self._unet(
                    torch.cat([x_in[sl]] * 2), torch.cat([t[sl]] * 2), torch.cat([uncond[sl], cond[sl]])
                )
                out_uncond, out_cond = out.chunk(2)
                out = out_uncond + self.sampler.guidance_scale * (out_cond - out_uncond)
            else:
                out = self._unet(x_in[sl], t[sl], cond[sl])
            outs.append(out)
        return torch.cat(outs)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        prompts: list[str],
        init_noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        rows: torch.Tensor | list[int] | None = None,
    ) -> Rollout:
        """Sample one batch and record everything a policy-gradient or preference method needs.

        Args:
            prompts: ``B`` prompts.
            init_noise: ``B×C×h×w`` initial noise ``x_T`` (used exactly, times ``init_noise_sigma`` = 1
                for DDIM); None draws ``N(0, I)`` from ``generator``.
            generator: source of all randomness (x_T when not given, then the noise of each step, in
                that order, float32, on the generator's device). Use a CPU generator: the same seed
                then gives the same rollout on every device. None uses the global RNG.
            rows: sample only these rows of the batch (a process' share in data parallel): the noise is
                still drawn for all ``B`` rows, so each row gets the noise (and, up to float noise, the
                trajectory) it gets when the whole batch is sampled. None: all rows.

        Returns:
            A ``Rollout`` of the sampled rows: latents ``B×(T+1)×C×h×w`` (``self.dtype``), log_probs
            ``B×T`` float32, timesteps ``T`` (CPU), embeddings ``B×L×D`` -- all on ``self.device``
            except timesteps -- and images ``B×3×H×W`` float32 in ``[0, 1]`` on the CPU.
        """
        n = len(prompts)
        if n == 0:
            raise ValueError("sample() needs at least one prompt")
        shape = (n, *self.latent_shape)
        if init_noise is None:
            noise_device = generator.device if generator is not None else self.device
            init_noise = torch.randn(shape, generator=generator, device=noise_device, dtype=torch.float32)
        elif tuple(init_noise.shape) != shape:
            raise ValueError(f"init_noise has shape {tuple(init_noise.shape)}, expected {shape}")
        x = init_noise.to(self.device, self.dtype) * self.scheduler.init_noise_sigma
        part = None if rows is None else torch.as_tensor(rows, dtype=torch.long).to(self.device)
        if part is not None:
            x, prompts = x[part], [prompts[int(i)] for i in part]
        cond, uncond = self.encode_prompts(prompts)
        latents, log_probs = [x], []
        for t in self.scheduler.timesteps:
            out = self._guided(x, t, cond, uncond, self.sampler.uses_cfg)
            if part is None:
                x, log_prob = ddim_step_with_logprob(
                    self.scheduler, out, t, x, self.sampler.eta, generator=generator
                )
            else:
                x, log_prob = self._step_rows(out, t, x, part, n, generator)
            latents.append(x)
            log_probs.append(log_prob)
        return Rollout(
            prompts=list(prompts),
            latents=torch.stack(latents, dim=1),
            log_probs=torch.stack(log_probs, dim=1),
            timesteps=self.timesteps,
            prompt_embeds=cond,
            negative_embeds=uncond,
            images=self.decode(x),
        )

    def _step_rows(self, out, t, x, part: torch.Tensor, n: int, generator):
        """The DDIM step of rows ``part`` of an ``n``-row batch, drawing the step noise for all ``n``
        rows (zeros stand in for the other rows) and keeping ``part``'s."""
        full_out, full_x = out.new_zeros((n, *out.shape[1:])), x.new_zeros((n, *x.shape[1:]))
        full_out[part], full_x[part] = out, x
        x, log_prob = ddim_step_with_logprob(
            self.scheduler, full_out, t, full_x, self.sampler.eta, generator=generator
        )
        return x[part], log_prob[part]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode ``B×C×h×w`` latents to ``B×3×H×W`` float32 images in ``[0, 1]`` on the CPU."""
        vae = self.components.vae
        images = []
        for s in range(0, latents.shape[0], self.sampler.micro_batch):
            z = (
                latents[s : s + self.sampler.micro_batch].to(self.device, vae.dtype)
                / vae.config.scaling_factor
            )
            img = vae.decode(z, return_dict=False)[0]
            images.append((img.float() / 2 + 0.5).clamp(0, 1).cpu())
        return torch.cat(images)

    # ------------------------------------------------------------------ training path
    def step_log_prob(
        self,
        rollout_or_tensors: Rollout | Mapping[str, torch.Tensor],
        step_idx: torch.Tensor,
        batch_idx: torch.Tensor | None = None,
        *,
        use_cfg: bool = True,
    ) -> torch.Tensor:
        """Recompute ``log p(x_{t-1} | x_t)`` of stored steps with the UNet's *current* weights.

        Gradients flow to the UNet's trainable (LoRA) parameters unless called under ``no_grad``.

        Args:
            rollout_or_tensors: a ``Rollout``, or a mapping with its ``latents``, ``timesteps``,
                ``prompt_embeds`` and ``negative_embeds``.
            step_idx: step indices into ``0..T-1`` (step ``k`` goes from ``latents[:, k]`` to
                ``latents[:, k+1]``): shape ``K`` (the same steps for every row) or ``B'×K`` (per row).
            batch_idx: ``B'`` rows of the rollout to use; None uses all.
            use_cfg: apply classifier-free guidance as at sampling time (DDPO's ``train.cfg``); False
                uses the conditional prediction only. Ignored when the sampler does not use CFG.

        Returns:
            ``B'×K`` float32 log-probs (summed over latent dimensions, like ``Rollout.log_probs``).
        """
        n_rows, k, out, t, x_t, x_prev = self._stored_steps(rollout_or_tensors, step_idx, batch_idx, use_cfg)
        _, log_prob = ddim_step_with_logprob(
            self.scheduler, out, t, x_t, self.sampler.eta, prev_sample=x_prev
        )
        return log_prob.reshape(n_rows, k)

    @torch.no_grad()
    def step_means(
        self,
        rollout_or_tensors: Rollout | Mapping[str, torch.Tensor],
        step_idx: torch.Tensor,
        batch_idx: torch.Tensor | None = None,
        *,
        use_cfg: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The means and standard deviations of stored steps' Gaussians under the *current* weights.

        Arguments as :meth:`step_log_prob`. Returns ``(mean, std)``: ``B'·K×C×h×w`` float32 (rows in
        ``batch_idx`` order, each row's ``K`` steps together) and ``B'·K×1×1×1``."""
        _, _, out, t, x_t, _ = self._stored_steps(rollout_or_tensors, step_idx, batch_idx, use_cfg)
        return ddim_step_mean(self.scheduler, out, t, x_t, self.sampler.eta)

    def _stored_steps(self, rollout_or_tensors, step_idx, batch_idx, use_cfg: bool):
        """Model outputs of stored steps: ``(B', K, out, t, x_t, x_prev)`` with flat ``B'·K`` tensors."""
        r = rollout_or_tensors
        get = (lambda k: r[k]) if isinstance(r, Mapping) else (lambda k: getattr(r, k))
        latents, timesteps = get("latents"), get("timesteps").cpu()
        cond, uncond = get("prompt_embeds"), get("negative_embeds")
        rows = (
            torch.arange(latents.shape[0])
            if batch_idx is None
            else torch.as_tensor(batch_idx, dtype=torch.long).cpu()
        )
        steps = torch.as_tensor(step_idx, dtype=torch.long).cpu()
        if steps.ndim == 1:
            steps = steps.expand(rows.numel(), -1)
        n_rows, k = steps.shape
        flat_rows = rows[:, None].expand(n_rows, k).reshape(-1)
        flat_steps = steps.reshape(-1)
        dev = latents.device
        r_dev, s_dev = flat_rows.to(dev), flat_steps.to(dev)
        x_t = latents[r_dev, s_dev].to(self.device, self.dtype)
        x_prev = latents[r_dev, s_dev + 1].to(self.device, self.dtype)
        t = timesteps[flat_steps]
        c = cond[flat_rows.to(cond.device)].to(self.device)
        u = uncond[flat_rows.to(uncond.device)].to(self.device)
        out = self._guided(x_t, t, c, u, use_cfg and self.sampler.uses_cfg)
        return n_rows, k, out, t, x_t, x_prev
