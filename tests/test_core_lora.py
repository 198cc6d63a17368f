"""LoRA: no-op init, diffusers-format save/load, reference policy."""

import pytest
import torch
from fixtures_sd import PROMPTS, STEPS, make_generator, noise, seeded, tiny_sd_fixture  # noqa: F401

from herobench.core.lora import add_lora, load_lora, lora_parameters, reference_policy, save_lora
from herobench.errors import HerobenchError


def images(gen, seed=0):
    return gen.sample(PROMPTS, init_noise=noise(), generator=seeded(seed)).images


def perturb(params, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=g))


def test_add_lora_starts_as_noop_and_only_lora_is_trainable(tiny_sd_dir):
    gen = make_generator(tiny_sd_dir)
    base = images(gen)
    params = add_lora(gen.components.unet, rank=4, seed=0)
    assert params and all(p.requires_grad and p.dtype == torch.float32 for p in params)
    # 4 transformer blocks (down 1, mid 1, up 2) × (attn1, attn2) × (q, k, v, out) × (A, B)
    assert len(params) == 4 * 2 * 4 * 2
    trainable = [n for n, p in gen.components.unet.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert torch.equal(images(gen), base)
    again = make_generator(tiny_sd_dir)
    same = add_lora(again.components.unet, rank=4, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(params, same))
    with pytest.raises(HerobenchError, match="already"):
        add_lora(gen.components.unet)


def test_saved_lora_loads_in_plain_diffusers_with_identical_images(tiny_sd_dir, tmp_path):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    gen = make_generator(tiny_sd_dir)
    base = images(gen)
    params = add_lora(gen.components.unet, rank=4, alpha=8, seed=0)  # alpha != rank: metadata must carry it
    perturb(params)
    ours = images(gen)
    assert not torch.allclose(ours, base)
    path = save_lora(gen.components.unet, tmp_path / "lora")
    assert path.name == "pytorch_lora_weights.safetensors" and path.is_file()

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, local_files_only=True, safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(tmp_path / "lora")
    theirs = pipe(
        PROMPTS,
        latents=noise(),
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        eta=1.0,
        generator=seeded(0),
        output_type="pt",
    ).images
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-6)


def test_load_lora_round_trip(tiny_sd_dir, tmp_path):
    gen = make_generator(tiny_sd_dir)
    params = add_lora(gen.components.unet, rank=4, alpha=8, seed=0)
    perturb(params, seed=1)
    ours = images(gen)
    save_lora(gen.components.unet, tmp_path / "lora")

    fresh = make_generator(tiny_sd_dir)  # no adapter yet: created from the saved config
    load_lora(fresh.components.unet, tmp_path / "lora")
    assert torch.equal(images(fresh), ours)
    assert all(p.requires_grad for p in lora_parameters(fresh.components.unet))

    resumed = make_generator(tiny_sd_dir)  # existing adapter: loaded in place
    into = add_lora(resumed.components.unet, rank=4, alpha=8, seed=5)
    load_lora(resumed.components.unet, tmp_path / "lora")
    after = lora_parameters(resumed.components.unet)
    assert all(a is b for a, b in zip(into, after))  # same Parameter objects: an optimizer stays valid
    assert all(torch.equal(a, b) for a, b in zip(after, params))
    assert torch.equal(images(resumed), ours)


def test_load_lora_errors(tiny_sd_dir, tmp_path):
    gen = make_generator(tiny_sd_dir)
    add_lora(gen.components.unet, rank=4, seed=0)
    with pytest.raises(HerobenchError, match="not found"):
        load_lora(gen.components.unet, tmp_path / "missing")
    other = make_generator(tiny_sd_dir)
    add_lora(other.components.unet, rank=4, targets=("to_q",), seed=0)
    save_lora(other.components.unet, tmp_path / "only_q")
    with pytest.raises(HerobenchError, match="do not fit"):
        load_lora(gen.components.unet, tmp_path / "only_q")


def test_reference_policy_is_the_base_model(tiny_sd_dir):
    gen = make_generator(tiny_sd_dir)
    base = images(gen)
    with reference_policy(gen.components.unet):  # no adapter: harmless
        assert torch.equal(images(gen), base)
    perturb(add_lora(gen.components.unet, seed=0))
    tuned = images(gen)
    assert not torch.allclose(tuned, base)
    with reference_policy(gen.components.unet):
        assert torch.equal(images(gen), base)
        with reference_policy(gen.components.unet):  # nested: stays disabled, outer restores
            assert torch.equal(images(gen), base)
        assert torch.equal(images(gen), base)
    assert torch.equal(images(gen), tuned)
    with pytest.raises(RuntimeError), reference_policy(gen.components.unet):
        raise RuntimeError
    assert torch.equal(images(gen), tuned)
