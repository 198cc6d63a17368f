"""A Stable Diffusion 1.5-architecture model with random weights, built offline (for timing the real-size path).

The configs below are SD-1.5's own (``unet/``, ``vae/``, ``text_encoder/`` and ``scheduler/`` of the
``stable-diffusion-v1-5`` diffusers folder) written as literals: a UNet of 859.5 M parameters (latents
4×64×64 for 512×512 images), the KL VAE (83.7 M) and CLIP ViT-L/14's text encoder (123.1 M). Two things
differ from the real model: the weights are random, and the tokenizer is a byte-level vocabulary of 514
tokens written to the folder (the real CLIP BPE vocabulary is not shipped here); prompts still become 77
token ids, so every tensor has SD-1.5's shape and every matrix product its cost. The scheduler is DDIM
with SD-1.5's noise schedule (herobench samples with DDIM).

``reduce`` divides every width (channels, hidden sizes, group counts) by 2, 4 or 8 and keeps the depth,
block layout and head counts, so tests can check the structure without 860 M parameters.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from herobench.core.pipeline import SDComponents

# stable-diffusion-v1-5/unet/config.json (diffusers' "attention_head_dim": 8 is the number of heads)
SD15_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

# stable-diffusion-v1-5/vae/config.json
SD15_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# stable-diffusion-v1-5/text_encoder/config.json (CLIP ViT-L/14's text tower); token ids are the tiny
# tokenizer's (the real config's bos/eos/pad are 0/2/1 and the real tokenizer's 49406/49407/49407)
SD15_TEXT_ENCODER = {
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 1,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}

# stable-diffusion-v1-5/scheduler/scheduler_config.json's noise schedule, as a DDIM scheduler
SD15_SCHEDULER = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
}

# parameter counts of the full-size models (checked by the tests on the meta device)
SD15_PARAMS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
REDUCTIONS = (1, 2, 4, 8)


def sd15_configs(reduce: int = 1) -> dict[str, dict]:
    """``{"unet", "vae", "text_encoder", "scheduler"}`` configs; widths divided by ``reduce`` (1, 2, 4, 8)."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce}")
    unet, vae, text = copy.deepcopy(SD15_UNET), copy.deepcopy(SD15_VAE), copy.deepcopy(SD15_TEXT_ENCODER)
    if reduce > 1:
        unet["block_out_channels"] = [c // reduce for c in unet["block_out_channels"]]
        unet["norm_num_groups"] //= reduce
        unet["cross_attention_dim"] //= reduce
        vae["block_out_channels"] = [c // reduce for c in vae["block_out_channels"]]
        vae["norm_num_groups"] //= reduce
        for k in ("hidden_size", "intermediate_size", "projection_dim"):
            text[k] //= reduce
    return {"unet": unet, "vae": vae, "text_encoder": text, "scheduler": dict(SD15_SCHEDULER)}


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins byte-level BPE (GPT-2, CLIP) uses for the bytes 0..255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_byte_tokenizer(directory: Path) -> None:
    """``vocab.json`` + ``merges.txt`` of a byte-level CLIP tokenizer: 2 specials, 256 bytes and 256
    word-final bytes (the same scheme as ``tests/tinysd.py``, without merges)."""
    directory.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars + [c + "</w>" for c in chars]:
        vocab[c] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def random_sd15_components(seed: int = 0, reduce: int = 1, device: str | torch.device = "cpu",
                           dtype: torch.dtype = torch.float32, tokenizer_dir: Path | None = None) -> SDComponents:
    """SD-1.5-architecture components with random weights, created directly on ``device`` (fast on a GPU).

    Args:
        seed: seeds the weights (the global RNG is left untouched).
        reduce: width divisor (1 = the real size).
        tokenizer_dir: where the byte-level vocabulary is written (default: a temporary folder).

    Returns:
        Frozen models in eval mode, as :func:`herobench.core.pipeline.load_components` returns them.
    """
    import tempfile

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    cfg = sd15_configs(reduce)
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**cfg["unet"])
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**cfg["vae"])
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else Path(tmp)
        write_byte_tokenizer(tok_dir)
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir, model_max_length=77)
    for m in (unet, vae, text_encoder):
        if dtype != torch.float32:
            m.to(dtype=dtype)
        m.requires_grad_(False).eval()
    return SDComponents(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, unet=unet,
                        scheduler=DDIMScheduler(**cfg["scheduler"]))


def build_random_sd15(directory: str | Path, seed: int = 0, reduce: int = 1,
                      dtype: torch.dtype = torch.float32) -> Path:
    """Write a random-weight SD-1.5-architecture ``StableDiffusionPipeline`` folder and return it.

    The folder loads with :func:`herobench.core.pipeline.load_components` and with plain
    ``StableDiffusionPipeline.from_pretrained(path, local_files_only=True)``. At full size it holds
    about 4.3 GB in float32 (2.1 GB in float16).
    """
    out = Path(directory)
    comps = random_sd15_components(seed, reduce, "cpu", dtype)
    comps.to_pipeline().save_pretrained(out)
    return out
