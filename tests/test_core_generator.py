"""Generator and load_components on a tiny random SD."""

import json
import time

import pytest
import torch
from fixtures_sd import PROMPTS, STEPS, make_generator, noise, seeded, tiny_sd_fixture, tiny_sd_v_fixture  # noqa: F401

from herobench.core.generator import SamplerConfig
from herobench.core.pipeline import load_components
from herobench.errors import ConfigError, HerobenchError


@pytest.mark.parametrize("which", ["tiny_sd_dir", "tiny_sd_v_dir"])
def test_recomputed_log_probs_equal_sampling_time(which, request):
    gen = make_generator(request.getfixturevalue(which))
    r = gen.sample(PROMPTS, generator=seeded(0))
    with torch.no_grad():
        all_steps = gen.step_log_prob(r, torch.arange(STEPS))
        per_row = gen.step_log_prob(r, torch.tensor([[5, 0], [1, 2], [3, 4]]))
        subset = gen.step_log_prob(r, torch.tensor([2]), batch_idx=torch.tensor([2, 0]))
    # |log_prob| ~ 1e3 (sum over 1024 latent elements); a wrong step, eta or guidance is off by >> 1
    torch.testing.assert_close(all_steps, r.log_probs, rtol=0, atol=2e-3)
    expected = torch.stack([r.log_probs[0, [5, 0]], r.log_probs[1, [1, 2]], r.log_probs[2, [3, 4]]])
    torch.testing.assert_close(per_row, expected, rtol=0, atol=2e-3)
    torch.testing.assert_close(subset, r.log_probs[[2, 0]][:, [2]], rtol=0, atol=2e-3)
    # the recomputation really depends on the model: a shifted step index gives other values
    with torch.no_grad():
        shifted = gen.step_log_prob(r, torch.arange(1, STEPS), batch_idx=None)
    assert (shifted - r.log_probs[:, :-1]).abs().max() > 1.0


def test_step_log_prob_accepts_a_mapping_and_has_gradients(tiny_sd_dir):
    from herobench.core.lora import add_lora, lora_parameters

    gen = make_generator(tiny_sd_dir)
    add_lora(gen.components.unet, seed=0)
    r = gen.sample(PROMPTS, generator=seeded(0))
    tensors = {k: getattr(r, k) for k in ("latents", "timesteps", "prompt_embeds", "negative_embeds")}
    lp = gen.step_log_prob(tensors, torch.tensor([1]))
    assert lp.shape == (3, 1) and lp.requires_grad
    lp.sum().backward()
    grads = [p.grad for p in lora_parameters(gen.components.unet)]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_rollout_shapes_and_ranges(tiny_sd_dir):
    gen = make_generator(tiny_sd_dir)
    assert gen.latent_shape == (4, 16, 16)
    r = gen.sample(PROMPTS, generator=seeded(0))
    assert r.latents.shape == (3, STEPS + 1, 4, 16, 16)
    assert r.log_probs.shape == (3, STEPS) and r.log_probs.dtype == torch.float32
    assert r.timesteps.dtype == torch.long and r.timesteps.shape == (STEPS,)
    assert (r.timesteps[:-1] > r.timesteps[1:]).all()
    assert r.prompt_embeds.shape == r.negative_embeds.shape == (3, 77, 32)
    assert r.images.shape == (3, 3, 32, 32) and r.images.dtype == torch.float32
    assert r.images.min() >= 0 and r.images.max() <= 1 and r.images.std() > 0.01
    assert r.prompts == PROMPTS and len(r) == 3


def test_init_noise_is_honoured_exactly(tiny_sd_dir):
    gen = make_generator(tiny_sd_dir)
    x_t = noise()
    a = gen.sample(PROMPTS, init_noise=x_t, generator=seeded(0))
    assert torch.equal(a.latents[:, 0], x_t) and torch.equal(a.init_noise, x_t)
    b = gen.sample(PROMPTS, init_noise=x_t.clone(), generator=seeded(0))
    assert torch.equal(a.images, b.images)
    c = gen.sample(PROMPTS, init_noise=noise(seed=2), generator=seeded(0))
    assert not torch.allclose(a.images, c.images)
    # deterministic sampler: the initial noise alone fixes the image
    det = make_generator(tiny_sd_dir, eta=0.0)
    d1 = det.sample(PROMPTS, init_noise=x_t, generator=seeded(0))
    d2 = det.sample(PROMPTS, init_noise=x_t, generator=seeded(99))
    assert torch.equal(d1.images, d2.images)
    with pytest.raises(ValueError, match="shape"):
        gen.sample(PROMPTS, init_noise=noise(n=2))


def test_same_seed_same_rollout(tiny_sd_dir):
    gen = make_generator(tiny_sd_dir)
    a = gen.sample(PROMPTS, generator=seeded(3))
    b = gen.sample(PROMPTS, generator=seeded(3))
    for field in ("latents", "log_probs", "timesteps", "prompt_embeds", "negative_embeds", "images"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    c = gen.sample(PROMPTS, generator=seeded(4))
    assert not torch.equal(a.latents, c.latents)
    # with the same x_T, a different seed changes the step noise (eta = 1) and so the image
    d = gen.sample(PROMPTS, init_noise=a.init_noise, generator=seeded(4))
    assert not torch.allclose(a.images, d.images)


def test_micro_batch_does_not_change_results(tiny_sd_dir):
    big = make_generator(tiny_sd_dir, micro_batch=64).sample(PROMPTS, generator=seeded(5))
    small_gen = make_generator(tiny_sd_dir, micro_batch=1)
    small = small_gen.sample(PROMPTS, generator=seeded(5))
    # A batch of 1 and a batch of 64 take different CPU kernels, whose float32 rounding differs and
    # accumulates over the denoising steps: 1.8e-5 on an AMD EPYC, under 1e-5 on an Intel Xeon. Drawing
    # the step noise from the wrong stream would move the latents by O(1), far outside 1e-4.
    torch.testing.assert_close(small.latents, big.latents, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(small.log_probs, big.log_probs, rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(small.images, big.images, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(
            small_gen.step_log_prob(big, torch.arange(STEPS)), big.log_probs, rtol=0, atol=2e-3
        )


def test_matches_plain_diffusers_pipeline(tiny_sd_v_dir):
    gen = make_generator(tiny_sd_v_dir, guidance_scale=5.0, eta=1.0)
    x_t = noise()
    ours = gen.sample(PROMPTS, init_noise=x_t, generator=seeded(8))
    pipe = gen.components.to_pipeline()
    pipe.scheduler = gen.scheduler.__class__.from_config(gen.scheduler.config)
    theirs = pipe(
        PROMPTS,
        latents=x_t.clone(),
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        eta=1.0,
        generator=seeded(8),
        output_type="pt",
    ).images
    torch.testing.assert_close(ours.images, theirs, rtol=1e-5, atol=1e-5)


def test_no_guidance_path(tiny_sd_dir):
    gen = make_generator(tiny_sd_dir, guidance_scale=1.0)
    x_t = noise()
    r = gen.sample(PROMPTS, init_noise=x_t, generator=seeded(0))
    with torch.no_grad():
        torch.testing.assert_close(gen.step_log_prob(r, torch.arange(STEPS)), r.log_probs, rtol=0, atol=2e-3)
    guided = make_generator(tiny_sd_dir, guidance_scale=5.0).sample(
        PROMPTS, init_noise=x_t, generator=seeded(0)
    )
    assert not torch.allclose(r.images, guided.images)


def test_cfg_in_training_switch_changes_the_recomputation(tiny_sd_dir):
    gen = make_generator(tiny_sd_dir)
    r = gen.sample(PROMPTS, generator=seeded(0))
    with torch.no_grad():
        with_cfg = gen.step_log_prob(r, torch.arange(STEPS), use_cfg=True)
        without = gen.step_log_prob(r, torch.arange(STEPS), use_cfg=False)
    torch.testing.assert_close(with_cfg, r.log_probs, rtol=0, atol=2e-3)
    assert (without - r.log_probs).abs().max() > 1.0


def test_encode_prompts(tiny_sd_dir):
    gen = make_generator(tiny_sd_dir, negative_prompt="blurry")
    cond, uncond = gen.encode_prompts(["1 hand", "a rose", "1 hand"])
    assert torch.equal(cond[0], cond[2]) and not torch.equal(cond[0], cond[1])
    neg, _ = gen.encode_prompts(["blurry"])
    assert torch.equal(uncond[1], neg[0])
    empty, _ = make_generator(tiny_sd_dir).encode_prompts([""])
    assert not torch.equal(neg[0], empty[0])


def test_unet_seconds_counts_unet_time(tiny_sd_dir):
    gen = make_generator(tiny_sd_dir)
    assert gen.unet_seconds == 0.0
    start = time.perf_counter()
    gen.sample(PROMPTS, generator=seeded(0))
    wall = time.perf_counter() - start
    assert 0 < gen.unet_seconds < wall


def test_sampler_config_validation():
    with pytest.raises(ConfigError, match="eta"):
        SamplerConfig(eta=1.5)
    with pytest.raises(ConfigError, match="steps"):
        SamplerConfig(steps=0)


def test_decode_matches_rollout_images(tiny_sd_dir):
    gen = make_generator(tiny_sd_dir, micro_batch=2)
    r = gen.sample(PROMPTS, generator=seeded(0))
    torch.testing.assert_close(gen.decode(r.latents[:, -1]), r.images, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- load_components
def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_load_components_errors_name_the_file(tiny_sd_dir, tmp_path):
    with pytest.raises(HerobenchError, match="not found"):
        load_components(tmp_path / "nope")
    broken = _copy(tiny_sd_dir, tmp_path / "no_unet_weights")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(HerobenchError, match="diffusion_pytorch_model"):
        load_components(broken)
    bad_json = _copy(tiny_sd_dir, tmp_path / "bad_json")
    (bad_json / "vae" / "config.json").write_text("{not json")
    with pytest.raises(HerobenchError, match=r"vae/config\.json"):
        load_components(bad_json)
    bad_weights = _copy(tiny_sd_dir, tmp_path / "bad_weights")
    (bad_weights / "text_encoder" / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(HerobenchError, match=r"text_encoder/model\.safetensors") as err:
        load_components(bad_weights)
    assert "\n" not in str(err.value)


def test_loaded_scheduler_is_ddim_and_models_frozen(tiny_sd_dir):
    from diffusers import DDIMScheduler

    comp = load_components(tiny_sd_dir)
    assert isinstance(comp.scheduler, DDIMScheduler)
    assert (
        json.loads((tiny_sd_dir / "scheduler" / "scheduler_config.json").read_text())["prediction_type"]
        == "epsilon"
    )
    for m in (comp.unet, comp.vae, comp.text_encoder):
        assert not any(p.requires_grad for p in m.parameters())
