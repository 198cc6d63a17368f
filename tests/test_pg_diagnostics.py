"""The policy-gradient diagnostics: the true per-step KL of an update (issue 22, item 4)."""

import math

import pytest
import torch
from fixtures_sd import PROMPTS, STEPS, make_generator, seeded, tiny_sd_fixture  # noqa: F401

from herobench.core.ddim import ddim_step_mean, ddim_step_with_logprob
from herobench.core.lora import add_lora
from herobench.core.policy_gradient import (
    PGConfig,
    diagnostic_rows,
    kl_summary,
    make_optimizer,
    ppo_update,
    true_step_kl,
)


def test_true_step_kl_against_hand_values():
    # two rows, two steps, D = 2: KL = sum_d (mu1 - mu0)^2 / (2 sigma^2)
    mean_old = torch.zeros(4, 2, 1, 1)
    mean_new = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.5, 0.5], [2.0, 0.0]]).reshape(4, 2, 1, 1)
    std = torch.tensor([0.5, 0.0, 1.0, 2.0]).reshape(4, 1, 1, 1)
    kl = true_step_kl(mean_old, mean_new, std, n_rows=2)
    # row 0: step 0 1/(2*.25) = 2; step 1 deterministic (sigma 0) -> 0
    # row 1: step 0 (0.25+0.25)/2 = 0.25; step 1 4/(2*4) = 0.5
    assert kl.tolist() == [[2.0, 0.0], [0.25, 0.5]]
    s = kl_summary(kl)
    assert s["kl_true_per_step"] == [1.125, 0.25]
    assert s["kl_true"] == pytest.approx(1.375)
    assert s["kl_true_high_noise_share"] == pytest.approx(1.125 / 1.375)


def test_gaussian_kl_matches_the_log_density_difference():
    # KL(N(m0, s^2) || N(m1, s^2)) = E_{x~N(m0)}[log p0(x) - log p1(x)]: check the closed form by Monte Carlo
    # through ddim_step_with_logprob's own density
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(1, 4, 4, 4, generator=g).expand(20000, -1, -1, -1).contiguous()
    out0 = torch.randn(1, 4, 4, 4, generator=g).expand_as(x_t)
    out1 = out0 + 0.1 * torch.randn(1, 4, 4, 4, generator=g)
    t = int(sched.timesteps[3])
    m0, std = ddim_step_mean(sched, out0, t, x_t, 1.0)
    m1, _ = ddim_step_mean(sched, out1, t, x_t, 1.0)
    closed = true_step_kl(m0[:1], m1[:1], std.expand(1, 1, 1, 1), 1)[0, 0]
    x_prev, lp0 = ddim_step_with_logprob(sched, out0, t, x_t, 1.0, generator=g)
    _, lp1 = ddim_step_with_logprob(sched, out1, t, x_t, 1.0, prev_sample=x_prev)
    mc = (lp0 - lp1).mean()
    assert float(closed) > 0.05
    assert float(mc) == pytest.approx(float(closed), rel=0.1)


def test_step_means_reproduce_the_sampled_step(tiny_sd_dir):
    gen = make_generator(tiny_sd_dir)
    rollout = gen.sample(PROMPTS, generator=seeded(0))
    mean, std = gen.step_means(rollout, torch.arange(STEPS), batch_idx=torch.tensor([1]))
    # the stored step noise (x_{t-1} - mu) / sigma is a standard normal draw: its log-density is the stored one
    x_prev = rollout.latents[1, 1:].float()
    z = (x_prev - mean) / std
    d = z[0].numel()
    lp = (-0.5 * z.pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    assert torch.allclose(lp, rollout.log_probs[1], atol=1e-3 * d)


def test_diagnostic_rows():
    assert diagnostic_rows(64, 8).tolist() == [0, 9, 18, 27, 36, 45, 54, 63]
    assert diagnostic_rows(3, 8).tolist() == [0, 1, 2]
    assert diagnostic_rows(5, 0).tolist() == []


def test_ppo_update_records_true_kl_without_changing_the_update(tiny_sd_dir):
    results = []
    for kl_rows in (0, 2):
        gen = make_generator(tiny_sd_dir)
        params = add_lora(gen.components.unet, seed=0)
        rollout = gen.sample(PROMPTS, generator=seeded(0))
        opt = make_optimizer(params, 1e-2)
        stats = ppo_update(gen, rollout, torch.tensor([1.0, -1.0, 0.5]), opt,
                           PGConfig(kl_rows=kl_rows, clip_range=0.2), seeded(0))
        results.append((stats, [p.detach().clone() for p in params]))
    (off, w_off), (on, w_on) = results
    assert "kl_true" not in off
    assert all(torch.equal(a, b) for a, b in zip(w_off, w_on))  # the diagnostic does not touch the update
    assert len(on["kl_true_per_step"]) == STEPS
    assert on["kl_true"] > 0 and on["kl_true"] == pytest.approx(sum(on["kl_true_per_step"]))
    assert 0.0 <= on["kl_true_high_noise_share"] <= 1.0
    # the true KL is many orders above approx_kl's per-element-mean reading
    assert on["kl_true"] > 100 * on["approx_kl"]
