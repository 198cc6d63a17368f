"""docs/FIDELITY.md, the policy-gradient rows shared by HERO and DDPO: each mechanism against a value
computed by hand or by the official formula (kvablack/ddpo-pytorch @1958463, sony/hero @6770c7e)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMScheduler
from fixtures_sd import tiny_sd_fixture  # noqa: F401 (pytest fixture)

from herobench.core.ddim import ddim_step_mean, ddim_step_with_logprob
from herobench.core.generator import Generator, SamplerConfig
from herobench.core.lora import ATTENTION_TARGETS, add_lora
from herobench.core.losses import PerPromptStatTracker, normalize_advantages
from herobench.core.pipeline import load_components
from herobench.core.policy_gradient import PGConfig, _random_steps, clip_and_step, make_optimizer, ppo_update
from herobench.errors import ConfigError
from herobench.methods import METHODS
from herobench.methods.ddpo import DDPOMethod, DDPOOptions
from herobench.methods.hero import HeroOptions
from herobench.paths import glyphworld_model_dir
from herobench.types import Feedback

torch.set_num_threads(1)


def _glyphworld_scheduler_config() -> dict:
    return json.loads((glyphworld_model_dir() / "scheduler" / "scheduler_config.json").read_text())


def _scheduler(prediction_type: str, steps: int) -> DDIMScheduler:
    cfg = dict(_glyphworld_scheduler_config(), prediction_type=prediction_type)  # SD-1.5's betas and offsets
    s = DDIMScheduler.from_config(cfg)
    s.set_timesteps(steps)
    return s


# ------------------------------------------------------------------ DDIM step and log-prob


def _official_logprob(s: DDIMScheduler, out, t: int, x, prev, eta: float) -> torch.Tensor:
    """ddpo-pytorch's step (diffusers_patch/ddim_with_logprob.py), re-derived from DDIM eqs. 12 and 16:
    prev_t clamped to [0, 999] (so the last step uses alphas_cumprod[0]) and the Gaussian log-density
    averaged over the latent elements."""
    ac = s.alphas_cumprod.double()
    prev_t = min(max(t - s.config.num_train_timesteps // s.num_inference_steps, 0), 999)
    a, a_prev = ac[t], ac[prev_t]
    x, out, prev = x.double(), out.double(), prev.double()
    if s.config.prediction_type == "epsilon":
        x0, eps = (x - (1 - a).sqrt() * out) / a.sqrt(), out
    else:  # v_prediction
        x0, eps = a.sqrt() * x - (1 - a).sqrt() * out, a.sqrt() * out + (1 - a).sqrt() * x
    std = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
    mean = a_prev.sqrt() * x0 + (1 - a_prev - std**2).sqrt() * eps
    lp = -((prev - mean) ** 2) / (2 * std**2) - std.log() - math.log(math.sqrt(2 * math.pi))
    return lp.mean(dim=(1, 2, 3))


@pytest.mark.parametrize("prediction_type, steps", [("epsilon", 50), ("v_prediction", 20)])
@pytest.mark.parametrize("which", [0, "middle", -1])
def test_ddim_logprob_is_the_official_per_element_mean(prediction_type, steps, which):
    s = _scheduler(prediction_type, steps)
    idx = {0: 0, "middle": steps // 2, -1: steps - 1}[which]
    t = int(s.timesteps[idx])
    g = torch.Generator().manual_seed(idx)
    x, out = (torch.randn(3, 4, 8, 8, generator=g) for _ in range(2))
    prev, _ = ddim_step_with_logprob(s, out, t, x, 1.0, generator=g)  # a sampled x_{t-1}: log-probs O(1)
    _, lp_sum = ddim_step_with_logprob(s, out, t, x, 1.0, prev_sample=prev)
    d = x[0].numel()
    torch.testing.assert_close(lp_sum.double() / d, _official_logprob(s, out, t, x, prev, 1.0), rtol=0, atol=2e-5)


def test_last_step_alpha_is_the_officials_clamped_one():
    # set_alpha_to_one = false (SD-1.5 and GlyphWorld): final_alpha_cumprod = alphas_cumprod[0], which is
    # what the official clamp of prev_t to 0 reads (ddim_with_logprob.py:97-105)
    s = _scheduler("v_prediction", 20)
    assert _glyphworld_scheduler_config()["set_alpha_to_one"] is False
    assert float(s.final_alpha_cumprod) == float(s.alphas_cumprod[0])


# ------------------------------------------------------------------ the sampler: where the gradient lands


def _gradient_factor(s: DDIMScheduler) -> torch.Tensor:
    """r_t = |∂μ/∂(UNet output)| / σ_t per step, by hand from DDIM eq. 12 (pg-audit §3.3)."""
    ac = s.alphas_cumprod.double()
    r = []
    for t in s.timesteps.tolist():
        a, a_prev = ac[t], ac[max(t - 1000 // s.num_inference_steps, 0)]
        var = (1 - a_prev) / (1 - a) * (1 - a / a_prev)
        direction = (1 - a_prev - var).sqrt()
        if s.config.prediction_type == "epsilon":  # μ = √a'·(x − √(1−a)·ε)/√a + dir·ε
            dmu = -a_prev.sqrt() * (1 - a).sqrt() / a.sqrt() + direction
        else:  # μ = √a'·(√a·x − √(1−a)·v) + dir·(√a·v + √(1−a)·x)
            dmu = -a_prev.sqrt() * (1 - a).sqrt() + direction * a.sqrt()
        r.append(abs(float(dmu)) / float(var.sqrt()))
    return torch.tensor(r, dtype=torch.float64)


@pytest.mark.parametrize(
    "prediction_type, steps, first, spike, spike_share, high_noise_share",
    [
        ("v_prediction", 20, 0.077, 5.29, 0.856, 0.013),  # GlyphWorld v2's sampler
        ("epsilon", 50, 0.513, 3.27, 0.487, 0.214),  # the paper's (SD-1.5)
    ],
)
def test_policy_gradient_step_weights_of_the_sampler(prediction_type, steps, first, spike, spike_share,
                                                     high_noise_share):
    s = _scheduler(prediction_type, steps)
    r = _gradient_factor(s)
    # the hand formula is the derivative of herobench's step mean
    for idx in (0, steps // 2, steps - 2):
        out = torch.zeros(1, 1, 1, 1, dtype=torch.float32, requires_grad=True)
        mean, std = ddim_step_mean(s, out, s.timesteps[idx], torch.zeros(1, 1, 1, 1), 1.0)
        (grad,) = torch.autograd.grad(mean.sum(), out)
        assert abs(float(grad)) / float(std) == pytest.approx(float(r[idx]), rel=1e-4)
    sq = r**2
    assert float(r[0]) == pytest.approx(first, abs=2e-3)
    assert float(r.max()) == pytest.approx(spike, abs=0.02) and int(r.argmax()) == steps - 2
    assert float(sq.max() / sq.sum()) == pytest.approx(spike_share, abs=2e-3)
    assert float(sq[: steps // 2].sum() / sq.sum()) == pytest.approx(high_noise_share, abs=2e-3)


# ------------------------------------------------------------------ timesteps, CFG


def test_trained_timesteps_are_the_officials():
    # HERO: 5 random steps per trajectory (train_num_update 5, ddpo_train.py:114, ddpo_trainer.py:507-554)
    assert HeroOptions().pg_config(20).n_train_timesteps == 5
    # DDPO: int(num_steps · timestep_fraction 1.0) = every step (ddpo-pytorch config/base.py:90, train.py:62)
    for steps in (20, 50):
        assert DDPOOptions().pg_config(steps).n_train_timesteps == int(steps * 1.0)
    # the equal-compute variant is named as such, and cannot be told otherwise
    variant = METHODS.get("ddpo-5steps")()
    assert variant.name == "ddpo-5steps" and variant.resolve_options({}).pg_config(20).n_train_timesteps == 5
    assert variant.resolve_options({"lr": 1e-3}).lr == 1e-3
    with pytest.raises(ConfigError, match="ddpo-5steps"):
        variant.resolve_options({"n_train_timesteps": 0})
    assert METHODS.get("ddpo")().resolve_options({}).n_train_timesteps == 0


def test_random_steps_are_a_per_trajectory_permutation_prefix():
    # official: per trajectory an independent randperm of the T steps, then k of its positions
    n, t, k = 4000, 20, 5
    steps = _random_steps(n, t, k, torch.Generator().manual_seed(0))
    assert steps.shape == (n, k)
    assert all(len(set(row.tolist())) == k for row in steps[:200])  # distinct within a trajectory
    freq = torch.bincount(steps.flatten(), minlength=t).double() / n
    assert (freq - k / t).abs().max() < 4 * math.sqrt((k / t) * (1 - k / t) / n)  # each step k/T of the time


def test_training_recomputes_with_the_sampling_guidance(tiny_sd_dir):
    # official: uncond + w·(cond − uncond), w = the sampling guidance scale, negative prompt ""
    # (ddpo_trainer.py:539-569; ddpo-pytorch train.py:493-520)
    gen = Generator(load_components(tiny_sd_dir), SamplerConfig(steps=3, guidance_scale=5.0))
    rollout = gen.sample(["1 hand", "a rose"], generator=torch.Generator().manual_seed(0))
    unet, sched = gen.components.unet, gen.scheduler
    k = 1
    x, x_prev, t = rollout.latents[:, k], rollout.latents[:, k + 1], rollout.timesteps[k]
    with torch.no_grad():
        tok = gen.components.tokenizer  # the official negative prompt "", padded to max length
        ids = tok([""], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        uncond = gen.components.text_encoder(ids.input_ids)[0].expand(2, -1, -1)
        torch.testing.assert_close(rollout.negative_embeds, uncond)
        out = unet(torch.cat([x, x]), t, torch.cat([uncond, rollout.prompt_embeds])).sample
        out_u, out_c = out.chunk(2)
        _, expected = ddim_step_with_logprob(sched, out_u + 5.0 * (out_c - out_u), t, x, 1.0, prev_sample=x_prev)
        got = gen.step_log_prob(rollout, torch.tensor([k]), use_cfg=True)[:, 0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


# ------------------------------------------------------------------ advantages


def test_ddpo_advantages_use_this_batch_not_the_official_16_reward_buffer():
    # one prompt, 16 good of 64, the good ones first. herobench: this batch's statistics, mean 0.25,
    # population std sqrt(3)/4 -> good +sqrt(3), bad -1/sqrt(3). ddpo-pytorch's tracker (buffer 16 =
    # min_count, stat_tracking.py:18-28) would use the last 16 rewards only -- all 0, std 0 + 1e-6 --
    # giving the good images 1e6 (clipped to 5) and the bad ones 0: a documented deviation.
    r = torch.tensor([1.0] * 16 + [0.0] * 48)
    adv = normalize_advantages(r, ["p"] * 64, clip=DDPOOptions().adv_clip)
    assert adv[:16].tolist() == pytest.approx([math.sqrt(3)] * 16, abs=1e-5)
    assert adv[16:].tolist() == pytest.approx([-1 / math.sqrt(3)] * 48, abs=1e-5)
    # HERO: batch statistics, (r - mean) / (std + 1e-8) (ddpo_trainer.py:481), same here (one prompt)
    assert normalize_advantages(r).tolist() == pytest.approx(adv.tolist(), abs=1e-6)
    # advantages = "tracker" is ddpo-pytorch's: 1e6 and 0 before the loop's ±5 clamp
    official = PerPromptStatTracker(buffer_size=16, min_count=16, eps=1e-6).update(["p"] * 64, r)
    assert official[:16].tolist() == pytest.approx([1e6] * 16, rel=1e-6) and official[16:].abs().max() == 0


def test_ddpo_tracker_option_keeps_the_official_buffer_across_iterations(tiny_sd_dir):
    gen = Generator(load_components(tiny_sd_dir), SamplerConfig(steps=2))
    ddpo = DDPOMethod()
    ddpo.setup(gen, {"advantages": "tracker"}, seed=0)
    for it in range(5):  # 4 images per batch: batch statistics until 16 rewards are buffered
        rollout = gen.sample(["1 hand"] * 4, generator=torch.Generator().manual_seed(it))
        ddpo.learn(rollout, Feedback(good=(True, False, False, it % 2 == 0)), torch.Generator().manual_seed(it))
    buffer = ddpo.state_dict()["tracker"]["buffers"]["1 hand"]
    assert buffer == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0] * 2  # iterations 1-4: the last 16 rewards
    other = DDPOMethod()
    other.setup(Generator(load_components(tiny_sd_dir), SamplerConfig(steps=2)), {"advantages": "tracker"}, seed=0)
    other.load_state_dict(ddpo.state_dict())
    assert other.tracker.state_dict() == ddpo.tracker.state_dict()


# ------------------------------------------------------------------ PPO loop: accumulation, clip, steps


class _RecordingSGD(torch.optim.SGD):
    """SGD at lr 0 that records the gradient it is given at each step."""

    def __init__(self, params):
        super().__init__(params, lr=0.0)
        self.grads: list[torch.Tensor] = []

    def step(self, closure=None):
        self.grads.append(self.param_groups[0]["params"][0].grad.detach().clone())
        return super().step(closure)


class _StubGen:
    """step_log_prob = stored log-prob + D·θ·f[row, step]: ratio exp(θ·f), exactly 1 at θ = 0."""

    def __init__(self, rollout, f):
        self.theta = torch.nn.Parameter(torch.zeros(()))
        self.rollout, self.f, self.calls = rollout, f, []

    def step_log_prob(self, rollout, steps, batch_idx, use_cfg):
        rows, st = batch_idx, steps[:, 0]
        self.calls.append((rows.clone(), st.clone()))
        d = rollout.latents[0, 0].numel()
        return (rollout.log_probs[rows, st] + d * self.theta * self.f[rows, st])[:, None]


def test_ppo_optimizer_steps_average_the_officials_items():
    """HERO's official schedule: 64 trajectories, train batch 2 × accumulation 4 = 8 per optimizer step,
    accumulated over 5 timesteps each (accelerator accumulation 4·5 = 20 backward passes of 2 items,
    ddpo_trainer.py:72, 556-626): 8 steps, each on the mean of 8·5 = 40 per-item PPO losses, advantages
    clamped to ±5 (:587-591). At ratio 1 the per-item gradient is −A·f, so each step's gradient is
    −mean(A·f) over its 40 items, whatever the micro-batching."""
    n, t, d = 64, 20, 4
    g = torch.Generator().manual_seed(0)
    rollout = SimpleNamespace(log_probs=torch.randn(n, t, generator=g) * 50, latents=torch.zeros(n, t + 1, d))
    f = torch.randn(n, t, generator=g)
    adv = torch.randn(n, generator=g) * 3
    adv[0], adv[1] = 12.0, -9.0  # clamped to ±5 inside the loop
    for micro in (3, 8):  # uneven and even micro-batches give the same per-step mean
        gen = _StubGen(rollout, f)
        opt = _RecordingSGD([gen.theta])
        cfg = PGConfig(samples_per_step=HeroOptions().samples_per_step, train_micro_batch=micro, kl_rows=0,
                       max_grad_norm=1e9)
        stats = ppo_update(gen, rollout, adv, opt, cfg, torch.Generator().manual_seed(1))
        assert stats["n_optimizer_steps"] == 8 == len(opt.grads) and stats["n_items"] == n * 5
        rows = torch.cat([r for r, _ in gen.calls])
        steps = torch.cat([s for _, s in gen.calls])
        a = adv.clamp(-5, 5)
        for i, grad in enumerate(opt.grads):  # items in call order: 40 per optimizer step
            r_i, s_i = rows[40 * i : 40 * (i + 1)], steps[40 * i : 40 * (i + 1)]
            assert len(set(r_i.tolist())) == 8  # 8 trajectories × 5 steps each
            expected = -(a[r_i] * f[r_i, s_i]).mean()
            assert float(grad) == pytest.approx(float(expected), rel=1e-5, abs=1e-7)
        assert sorted(rows.tolist()) == sorted(list(range(n)) * 5)  # every trajectory once per epoch


def test_gradient_norm_clip_by_hand():
    # official: clip_grad_norm_(params, 1.0) before the step (ddpo_trainer.py:621-623)
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    p.grad = torch.tensor([3.0, 4.0])
    assert clip_and_step(opt, 1.0) == pytest.approx(5.0)
    assert p.detach().tolist() == pytest.approx([-0.6, -0.8], abs=1e-6)


def test_adamw_first_step_by_hand():
    # official AdamW: lr (HERO 1e-3, ddpo_train.py:87; DDPO 3e-4, base.py:64), betas (0.9, 0.999), weight
    # decay 1e-4, eps 1e-8. First step: θ·(1 − lr·wd) − lr·g/(|g| + eps) (bias-corrected m̂ = g, v̂ = g²)
    assert (HeroOptions().lr, DDPOOptions().lr) == (1e-3, 3e-4)
    for lr in (1e-3, 3e-4):
        theta0, grad = torch.tensor([1.0, -2.0]), torch.tensor([0.5, -0.1])
        p = torch.nn.Parameter(theta0.clone())
        opt = make_optimizer([p], lr)
        p.grad = grad.clone()
        opt.step()
        expected = theta0 * (1 - lr * 1e-4) - lr * grad / (grad.abs() + 1e-8)
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7)


# ------------------------------------------------------------------ LoRA


def test_lora_is_the_officials_attention_processor_lora(tiny_sd_dir):
    # official: a LoRAAttnProcessor (diffusers 0.25.1, rank 4) on every entry of unet.attn_processors
    # (ddpo_trainer.py:124-147): q, k, v, out projections; down ~ N(0, (1/r)²), up = 0, scale 1
    unet = load_components(tiny_sd_dir).unet
    attention = {name.removesuffix(".processor") for name in unet.attn_processors}
    expected = {f"{a}.{proj}" for a in attention for proj in ("to_q", "to_k", "to_v", "to_out.0")}
    assert ATTENTION_TARGETS == ("to_q", "to_k", "to_v", "to_out.0")
    add_lora(unet, rank=HeroOptions().lora_rank, seed=0)
    adapted = {name for name, m in unet.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}
    assert adapted == expected
    downs = torch.cat([m.lora_A["default"].weight.detach().flatten() for n, m in unet.named_modules() if n in adapted])
    ups = [m.lora_B["default"].weight for n, m in unet.named_modules() if n in adapted]
    assert all(m.r["default"] == 4 and m.scaling["default"] == 1.0 for n, m in unet.named_modules() if n in adapted)
    assert all(bool((u == 0).all()) for u in ups)
    assert float(downs.std()) == pytest.approx(1 / 4, rel=4 / math.sqrt(downs.numel()))


def test_early_variants_train_only_the_first_half_of_the_steps():
    """``early_fraction`` (labelled adaptation, issue 22): the random steps come from the first int(T·f)
    steps only (Flow-GRPO keeps the first steps in order, flow_grpo scripts/train_sd3.py:345, :864); at
    1.0 the draw is the paper's, bit for bit."""
    n, t, d = 64, 50, 4
    g = torch.Generator().manual_seed(0)
    rollout = SimpleNamespace(log_probs=torch.randn(n, t, generator=g), latents=torch.zeros(n, t + 1, d))
    f = torch.randn(n, t, generator=g)
    adv = torch.randn(n, generator=g)
    called = {}
    for frac in (1.0, 0.5):
        gen = _StubGen(rollout, f)
        cfg = PGConfig(samples_per_step=8, kl_rows=0, early_fraction=frac)
        ppo_update(gen, rollout, adv, _RecordingSGD([gen.theta]), cfg, torch.Generator().manual_seed(1))
        called[frac] = torch.cat([s for _, s in gen.calls])
    assert called[0.5].max() < 25 and len(set(called[0.5].tolist())) == 25 and len(called[0.5]) == n * 5
    # the default consumes the RNG exactly as _random_steps over all T steps did before the option existed
    rng = torch.Generator().manual_seed(1)
    expected = _random_steps(n, t, 5, rng)
    order = torch.randperm(n, generator=rng)
    assert torch.equal(called[1.0], torch.cat([expected[grp].reshape(-1) for grp in order.split(8)]))
    for name, opts in (("hero-early", HeroOptions), ("ddpo-early", DDPOOptions)):
        variant = METHODS.get(name)()
        assert variant.name == name and variant.resolve_options({}).early_fraction == 0.5
        assert opts().early_fraction == 1.0  # the paper's setting stays the default
        with pytest.raises(ConfigError, match=name):
            variant.resolve_options({"early_fraction": 1.0})
    with pytest.raises(ConfigError, match="early_fraction"):
        PGConfig(early_fraction=0.0)
