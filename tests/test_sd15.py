"""The random-weight SD-1.5-architecture builder: the real configs (parameter counts checked on the meta device,
without allocating 860 M parameters) and, at reduced width, a folder that loads and has SD-1.5's shapes."""

import pytest
import torch

from herobench.core.pipeline import load_components
from herobench.core.sd15 import SD15_PARAMS, SD15_UNET, build_random_sd15, sd15_configs

WIDTHS = {"block_out_channels", "norm_num_groups", "cross_attention_dim", "hidden_size", "intermediate_size",
          "projection_dim"}


def _n(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_full_size_configs_have_sd15_parameter_counts():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = sd15_configs()
    with torch.device("meta"):  # shapes only, no memory
        unet = UNet2DConditionModel(**cfg["unet"])
        vae = AutoencoderKL(**cfg["vae"])
        text = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
    assert {"unet": _n(unet), "vae": _n(vae), "text_encoder": _n(text)} == SD15_PARAMS
    assert cfg["unet"]["sample_size"] == 64 and cfg["vae"]["sample_size"] == 512
    assert cfg["unet"]["cross_attention_dim"] == cfg["text_encoder"]["hidden_size"] == 768


def test_reduced_width_keeps_the_structure():
    full, small = sd15_configs(1), sd15_configs(8)
    for part in ("unet", "vae", "text_encoder", "scheduler"):
        assert {k: v for k, v in full[part].items() if k not in WIDTHS} == {
            k: v for k, v in small[part].items() if k not in WIDTHS}
    assert small["unet"]["block_out_channels"] == [40, 80, 160, 160]
    assert SD15_UNET["block_out_channels"] == [320, 640, 1280, 1280]  # the literal is not mutated
    with pytest.raises(ValueError, match="reduce must be one of"):
        sd15_configs(3)


def test_reduced_folder_loads_and_has_sd15_shapes(tmp_path):
    path = build_random_sd15(tmp_path / "sd15", seed=0, reduce=8)
    c = load_components(path)
    assert (c.unet.config.in_channels, c.unet.config.sample_size) == (4, 64)  # 4×64×64 latents
    assert c.vae.config.scaling_factor == 0.18215 and c.scheduler.config.beta_schedule == "scaled_linear"
    ids = c.tokenizer(["1 hand"], padding="max_length", max_length=c.tokenizer.model_max_length,
                      return_tensors="pt").input_ids
    assert ids.shape == (1, 77)
    with torch.no_grad():
        emb = c.text_encoder(ids)[0]
        assert emb.shape == (1, 77, 96)
        out = c.unet(torch.randn(1, 4, 16, 16), torch.tensor([999]), encoder_hidden_states=emb).sample
        assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()
        img = c.vae.decode(torch.randn(1, 4, 8, 8)).sample
        assert img.shape == (1, 3, 64, 64)  # the VAE upsamples latents 8×
