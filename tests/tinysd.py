"""Build a tiny random-weight Stable Diffusion folder offline (for tests and benchmarks).

Modelled on diffusers' ``StableDiffusionPipelineFastTests.get_dummy_components()`` with two changes:
the UNet's ``sample_size`` is 16 so the default image is 32×32 (latents 4×16×16, like GlyphWorld), and
the CLIP tokenizer is built from a byte-level vocabulary written to the folder instead of being
downloaded from ``hf-internal-testing/tiny-random-clip``.

The folder has the ``StableDiffusionPipeline`` layout, so it loads through
``herobench.core.pipeline.load_components`` and through plain
``StableDiffusionPipeline.from_pretrained(path, local_files_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from herobench.core.sd15 import _bytes_to_unicode  # the same byte-level scheme as SD-1.5's builder

MAX_TOKENS = 77  # the CLIP context length SD uses



def write_tiny_tokenizer_files(directory: Path) -> None:
    """Write ``vocab.json`` and ``merges.txt``: every byte, alone and word-final, and a few merges.

    514 tokens: 2 specials, 256 bytes, 256 word-final bytes (``"a</w>"``), plus merged tokens for a
    handful of frequent words so BPE merging is exercised.
    """
    directory.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges = ["h a", "ha n", "han d</w>", "r o", "ro s", "ros e</w>", "c a", "ca t</w>"]
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def build_tiny_sd(tmp_dir: str | Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Write a complete random-weight SD pipeline folder under ``tmp_dir`` and return its path.

    Args:
        tmp_dir: parent folder; the model goes to ``tmp_dir/tiny-sd-<prediction_type>-<seed>``.
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"`` (scheduler config).
        seed: seeds the random weights (the global torch RNG is left untouched).

    Returns:
        The folder: 32×32 images, latents 4×16×16, text embeddings 77×32.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out = Path(tmp_dir) / f"tiny-sd-{prediction_type}-{seed}"
    if (out / "model_index.json").exists():
        return out
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(8, 16),
            layers_per_block=1,
            sample_size=16,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=4,
        )
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(
            block_out_channels=(8, 16),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            norm_num_groups=4,
            sample_size=32,
        )
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                hidden_size=32,
                intermediate_size=64,
                layer_norm_eps=1e-5,
                num_attention_heads=4,
                num_hidden_layers=2,
                vocab_size=1000,
                max_position_embeddings=MAX_TOKENS,
            )
        )
    scheduler = DDIMScheduler(  # SD-1.5's scheduler settings
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    tok_src = out / "_tokenizer_src"
    write_tiny_tokenizer_files(tok_src)
    tokenizer = CLIPTokenizer.from_pretrained(tok_src, model_max_length=MAX_TOKENS)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out)
    for f in tok_src.iterdir():
        f.unlink()
    tok_src.rmdir()
    return out
