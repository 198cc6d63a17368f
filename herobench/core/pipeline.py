"""Load Stable Diffusion components from a local diffusers folder (never the network)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from herobench.errors import HerobenchError

# subfolder -> files that must exist (any one of each tuple) in the StableDiffusionPipeline layout
_REQUIRED = {
    "unet": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "vae": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "text_encoder": (("config.json",), ("model.safetensors", "pytorch_model.bin")),
    "tokenizer": (("tokenizer.json", "vocab.json"),),
    "scheduler": (("scheduler_config.json",),),
}


@dataclass
class SDComponents:
    """The five parts of a Stable Diffusion model (diffusers objects).

    ``scheduler`` is always a ``DDIMScheduler``; the text encoder and VAE are frozen
    (``requires_grad`` False) and in eval mode; the UNet is in eval mode with its own parameters frozen
    (``herobench.core.lora.add_lora`` adds the trainable part).
    """

    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    scheduler: Any

    def to_pipeline(self):
        """A plain ``StableDiffusionPipeline`` sharing these components (no safety checker), for interop."""
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device that this machine has; HerobenchError (one line) otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise HerobenchError(f"device {str(device)!r} is not a torch device ({' '.join(str(e).split())[:120]})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HerobenchError(f"device {str(device)!r}: this torch sees no CUDA GPU (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise HerobenchError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise HerobenchError(f"device {str(device)!r}: MPS is not available on this machine")
    return dev


def check_model_folder(root: Path) -> None:
    """A diffusers SD folder with every component file and readable JSON configs; one-line HerobenchError
    naming the first missing or corrupt file otherwise."""
    if not root.is_dir():
        raise HerobenchError(f"model folder not found: {root}" if not root.exists() else
                             f"model path {root} is a file, not a diffusers model folder")
    if not (root / "model_index.json").is_file():
        raise HerobenchError(f"not a diffusers model folder (missing {root / 'model_index.json'})")
    for sub, groups in _REQUIRED.items():
        for names in groups:
            if not any((root / sub / n).is_file() for n in names):
                raise HerobenchError(f"incomplete model folder: missing {root / sub / names[0]}")
    for cfg in (
        "model_index.json",
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "scheduler/scheduler_config.json",
    ):
        try:
            json.loads((root / cfg).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise HerobenchError(f"corrupt model file {root / cfg}: {e}") from None


def _quietly(fn):
    """Run a transformers loader without its "Loading weights" progress bar (noise on every run's stderr)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return fn()
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load(what: str, root: Path, fn):
    """Run a loader; any failure becomes a one-line HerobenchError naming the file (or folder) read."""
    try:
        return fn()
    except Exception as e:  # diffusers/transformers raise many types (OSError, SafetensorError, ValueError …)
        groups = _REQUIRED[what]
        files = [root / what / n for n in groups[-1] if (root / what / n).is_file()]
        msg = " ".join(str(e).split())[:300]
        raise HerobenchError(
            f"cannot load {files[0] if files else root / what}: {type(e).__name__}: {msg}"
        ) from None


def load_components(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> SDComponents:
    """Load tokenizer, text encoder, VAE, UNet and a DDIM scheduler from a local diffusers folder.

    Args:
        path: a folder in the ``StableDiffusionPipeline.save_pretrained`` layout.
        device: where the models are put.
        dtype: the models' dtype (float32 on CPU; float16/bfloat16 on GPU for speed).

    Raises:
        HerobenchError: the folder or one of its files is missing or unreadable (the message names it).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    check_device(device)
    root = Path(path).expanduser()
    check_model_folder(root)
    kw = {"local_files_only": True}
    tokenizer = _load("tokenizer", root, lambda: AutoTokenizer.from_pretrained(root / "tokenizer", **kw))
    text_encoder = _load("text_encoder", root, lambda: _quietly(
        lambda: CLIPTextModel.from_pretrained(root / "text_encoder", dtype=dtype, **kw)))
    vae = _load("vae", root, lambda: AutoencoderKL.from_pretrained(root / "vae", torch_dtype=dtype, **kw))
    unet = _load(
        "unet", root, lambda: UNet2DConditionModel.from_pretrained(root / "unet", torch_dtype=dtype, **kw)
    )
    scheduler = _load(
        "scheduler",
        root,
        lambda: DDIMScheduler.from_config(DDIMScheduler.load_config(root / "scheduler", **kw)),
    )
    for model in (text_encoder, vae, unet):
        model.requires_grad_(False)
        model.eval()
        model.to(device)
    return SDComponents(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, unet=unet, scheduler=scheduler
    )
