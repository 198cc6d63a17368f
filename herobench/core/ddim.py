"""One pure DDIM step and the Gaussian log-density of its result.

Adapted from ``DDIMScheduler.step`` (diffusers 0.42, formulas (12) and (16) of the DDIM paper,
arXiv 2010.02502) and ddpo-pytorch's ``ddim_step_with_logprob``. What changed:

* it returns ``log p(x_{t-1} | x_t)`` of the Gaussian the step samples from, **summed** over the
  latent dimensions (ddpo-pytorch averages; ``herobench.core.policy_gradient`` divides by the number
  of latent elements where the published hyper-parameters assume the average);
* given ``prev_sample`` it only scores it (the training path recomputes log-probs of stored steps);
* ``timestep`` may be a ``B`` tensor (one timestep per sample);
* for the last step it uses ``final_alpha_cumprod`` exactly like ``DDIMScheduler.step``
  (ddpo-pytorch clamps the previous timestep to 0 and so uses ``alphas_cumprod[0]`` instead);
* the arithmetic is done in float32 whatever the latent dtype, and the log-prob is computed from the
  sample *as stored* (after casting to the latent dtype), so recomputation from a stored trajectory
  reproduces the sampling-time value;
* a step with zero standard deviation (``eta = 0``, or ``set_alpha_to_one`` on the last step) is
  deterministic: its log-prob is reported as 0 (a point mass has no density; it carries no gradient).
"""

from __future__ import annotations

import math

import torch

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _per_sample(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a scalar or ``B`` tensor so it broadcasts against a ``B×…`` tensor of ``ndim`` dims."""
    return values.reshape(values.shape + (1,) * (ndim - values.ndim)) if values.ndim else values


def ddim_step_mean(
    scheduler, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor, eta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian a DDIM step ``x_t -> x_{t-1}`` samples from: its mean (DDIM eq. 12) and standard
    deviation ``σ_t(η)`` (eq. 16).

    Arguments as :func:`ddim_step_with_logprob`. Returns ``(mean, std)``: ``B×C×h×w`` float32 and a float32
    tensor broadcastable against it (``B×1×1×1`` or 0-d), on ``sample.device``. herobench's policy-gradient
    diagnostics use it for the true KL between the step distributions of two weights,
    ``Σ_d (μ₁ − μ₀)² / 2σ_t²``.
    """
    if scheduler.num_inference_steps is None:
        raise ValueError("call scheduler.set_timesteps(...) before ddim_step_with_logprob")
    cfg = scheduler.config
    ndim = sample.ndim
    device = sample.device

    t = torch.as_tensor(timestep, dtype=torch.long).cpu()
    prev_t = t - cfg.num_train_timesteps // scheduler.num_inference_steps
    alphas_cumprod = scheduler.alphas_cumprod.to(torch.float32)
    alpha_t = alphas_cumprod[t]
    alpha_prev = torch.where(
        prev_t >= 0, alphas_cumprod[prev_t.clamp(min=0)], scheduler.final_alpha_cumprod.to(torch.float32)
    )
    beta_t = 1 - alpha_t
    # sigma_t(eta), DDIM eq. (16)
    variance = (1 - alpha_prev) / beta_t * (1 - alpha_t / alpha_prev)
    std = eta * variance.clamp(min=0).sqrt()
    alpha_t, alpha_prev, beta_t, std = (
        _per_sample(v, ndim).to(device) for v in (alpha_t, alpha_prev, beta_t, std)
    )

    x = sample.to(torch.float32)
    out = model_output.to(torch.float32)
    if cfg.prediction_type == "epsilon":
        x0 = (x - beta_t.sqrt() * out) / alpha_t.sqrt()
        eps = out
    elif cfg.prediction_type == "v_prediction":
        x0 = alpha_t.sqrt() * x - beta_t.sqrt() * out
        eps = alpha_t.sqrt() * out + beta_t.sqrt() * x
    elif cfg.prediction_type == "sample":
        x0 = out
        eps = (x - alpha_t.sqrt() * x0) / beta_t.sqrt()
    else:
        raise ValueError(f"unsupported prediction_type {cfg.prediction_type!r}")

    if cfg.thresholding:
        x0 = scheduler._threshold_sample(x0)
    elif cfg.clip_sample:
        x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)

    # DDIM eq. (12): mean of x_{t-1}
    mean = alpha_prev.sqrt() * x0 + (1 - alpha_prev - std**2).clamp(min=0).sqrt() * eps
    return mean, std


def ddim_step_with_logprob(
    scheduler,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    eta: float,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step ``x_t -> x_{t-1}`` and ``log p(x_{t-1} | x_t)``.

    Args:
        scheduler: a ``DDIMScheduler`` on which ``set_timesteps`` has been called (its
            ``num_inference_steps`` gives the step size, as in ``DDIMScheduler.step``). Not modified.
        model_output: ``B×C×h×w`` UNet output (after classifier-free guidance), interpreted by
            ``scheduler.config.prediction_type`` (``"epsilon"``, ``"v_prediction"`` or ``"sample"``).
        timestep: the current timestep ``t``: an int, a 0-d tensor, or a ``B`` tensor.
        sample: ``B×C×h×w`` current latent ``x_t``.
        eta: DDIM noise weight: 1.0 is DDPM-like (HERO's default), 0 deterministic DDIM. With
            ``eta = 0`` the step is deterministic and the returned log-prob (0) is not meaningful.
        prev_sample: ``B×C×h×w`` latent ``x_{t-1}`` to score; when given nothing is sampled and it is
            returned unchanged.
        generator: the source of the step noise when ``prev_sample`` is None. The noise is drawn on
            the generator's device in float32 (CPU generator -> identical noise on every device and
            dtype) and then moved to ``sample``; None uses the global RNG on ``sample.device``.

    Returns:
        ``(prev_sample, log_prob)``: ``B×C×h×w`` in ``sample.dtype`` and ``B`` float32 (summed over
        all non-batch dimensions; differentiable w.r.t. ``model_output``, not w.r.t. ``prev_sample``).
    """
    if prev_sample is not None and generator is not None:
        raise ValueError("pass either prev_sample (to score it) or generator (to sample), not both")
    ndim = sample.ndim
    device = sample.device
    mean, std = ddim_step_mean(scheduler, model_output, timestep, sample, eta)

    if prev_sample is None:
        noise_device = generator.device if generator is not None else device
        noise = torch.randn(sample.shape, generator=generator, device=noise_device, dtype=torch.float32)
        prev_sample = (mean + std * noise.to(device)).to(sample.dtype)

    stochastic = std > 0
    safe_std = torch.where(stochastic, std, torch.ones_like(std))
    x_prev = prev_sample.detach().to(torch.float32)
    log_prob = -((x_prev - mean) ** 2) / (2 * safe_std**2) - torch.log(safe_std) - _LOG_SQRT_2PI
    log_prob = torch.where(stochastic, log_prob, torch.zeros_like(log_prob))
    log_prob = log_prob.sum(dim=tuple(range(1, ndim)))
    return prev_sample, log_prob
