"""The core on CUDA (skipped without a GPU): same noise as on the CPU, exact recomputation, fp16 training."""

import pytest
import torch
from fixtures_sd import PROMPTS, STEPS, noise, seeded, tiny_sd_fixture  # noqa: F401

from herobench.core.generator import Generator, SamplerConfig
from herobench.core.lora import add_lora
from herobench.core.pipeline import load_components
from herobench.core.policy_gradient import PGConfig, make_optimizer, ppo_update

pytestmark = pytest.mark.gpu


def cuda_generator(path, dtype):
    return Generator(load_components(path, "cuda", dtype), SamplerConfig(steps=STEPS), "cuda", dtype)


def test_cuda_rollout_uses_the_cpu_generator_noise(tiny_sd_dir):
    cpu = Generator(load_components(tiny_sd_dir), SamplerConfig(steps=STEPS)).sample(
        PROMPTS, generator=seeded(0)
    )
    gpu = cuda_generator(tiny_sd_dir, torch.float32)
    # float32 means float32: with cuDNN's default TF32 convolutions the recomputed log-prob moved by
    # 3.0e-5 per element on an H200 (a third of HERO's clip range); the runner turns TF32 off too
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        _check_cuda_rollout(gpu, cpu)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def _check_cuda_rollout(gpu, cpu):
    a = gpu.sample(PROMPTS, generator=seeded(0))
    b = gpu.sample(PROMPTS, generator=seeded(0))
    assert torch.equal(a.latents[:, 0].cpu(), cpu.latents[:, 0])
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.images, cpu.images, rtol=0, atol=1e-3)
    with torch.no_grad():
        again = gpu.step_log_prob(a, torch.arange(STEPS))
    dim = a.latents[0, 0].numel()
    # per latent element (the scale the PPO ratio sees) the recomputation is far inside clip_range 1e-4
    assert ((again - a.log_probs).abs() / dim).max() < 1e-5


def test_fp16_ppo_update_trains_fp32_lora_only(tiny_sd_dir):
    gen = cuda_generator(tiny_sd_dir, torch.float16)
    params = add_lora(gen.components.unet, seed=0)
    assert all(p.dtype == torch.float32 and p.is_cuda for p in params)
    r = gen.sample(PROMPTS, init_noise=noise(), generator=seeded(0))
    assert r.latents.dtype == torch.float16 and r.log_probs.dtype == torch.float32
    base = {k: v.clone() for k, v in gen.components.unet.state_dict().items() if "lora_" not in k}
    stats = ppo_update(
        gen, r, torch.tensor([1.0, -1.0, 0.5]), make_optimizer(params, 1e-3), PGConfig(), seeded(0)
    )
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert all(torch.equal(v, gen.components.unet.state_dict()[k]) for k, v in base.items())
    assert any(p.abs().sum() > 0 for n, p in gen.components.unet.named_parameters() if "lora_B" in n)
