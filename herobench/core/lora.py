"""LoRA on the UNet's attention projections through PEFT, saved in the diffusers format.

``save_lora`` writes what ``StableDiffusionPipeline.save_lora_weights`` writes
(``pytorch_lora_weights.safetensors`` with ``unet.``-prefixed diffusers keys and the LoRA config as
metadata), so a plain ``pipe.load_lora_weights(directory)`` reproduces our images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from herobench.errors import HerobenchError

ADAPTER = "default"
WEIGHT_NAME = "pytorch_lora_weights.safetensors"


# HERO's (and diffusers' LoRA training scripts') choice: every attention projection of the UNet
ATTENTION_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


def add_lora(
    unet,
    rank: int = 4,
    alpha: float | None = None,
    targets: Sequence[str] = ATTENTION_TARGETS,
    seed: int | None = None,
) -> list[torch.nn.Parameter]:
    """Add a LoRA adapter (HERO: rank 4 on all attention projections) and return its parameters.

    The UNet's own weights are frozen; the LoRA weights are float32 (even on a half-precision UNet,
    as diffusers' ``cast_training_params`` does) and start as a no-op (``B = 0``, A Gaussian).

    Args:
        unet: a diffusers ``UNet2DConditionModel`` without a LoRA adapter.
        rank: LoRA rank ``r``.
        alpha: LoRA alpha (scale ``alpha / r``); None means ``alpha = rank`` (scale 1, diffusers' default).
        targets: module-name suffixes to adapt (Linear or Conv2d modules, e.g. ``"conv1"`` for every
            ResNet block's first convolution).
        seed: seeds the LoRA init (the global RNG is left untouched); None uses the global RNG.
    """
    from peft import LoraConfig

    if ADAPTER in getattr(unet, "peft_config", {}):
        raise HerobenchError("the UNet already has a LoRA adapter")
    unet.requires_grad_(False)
    config = LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,
        init_lora_weights="gaussian",
        target_modules=list(targets),
    )
    if seed is None:
        unet.add_adapter(config, adapter_name=ADAPTER)
    else:
        devices = [unet.device] if unet.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            unet.add_adapter(config, adapter_name=ADAPTER)
    params = lora_parameters(unet)
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def lora_parameters(unet) -> list[torch.nn.Parameter]:
    """The LoRA parameters of ``unet`` (the trainable ones), in a stable order."""
    return [p for name, p in unet.named_parameters() if "lora_" in name]


def save_lora(unet, directory: str | Path) -> Path:
    """Write the LoRA weights in the diffusers format to ``directory`` and return the file path."""
    # the LoRA mixin, not StableDiffusionPipeline: importing the pipeline class imports every image processor,
    # whose transformers warnings ("requires torchvision") break the progress bar's line
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    if ADAPTER not in getattr(unet, "peft_config", {}):
        raise HerobenchError("the UNet has no LoRA adapter to save")
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=ADAPTER))
    state = {k: v.detach().contiguous() for k, v in state.items()}
    StableDiffusionLoraLoaderMixin.save_lora_weights(
        save_directory=str(directory),
        unet_lora_layers=state,
        weight_name=WEIGHT_NAME,
        safe_serialization=True,
        unet_lora_adapter_metadata=unet.peft_config[ADAPTER].to_dict(),
    )
    return Path(directory) / WEIGHT_NAME


def load_lora(unet, directory: str | Path) -> None:
    """Load weights written by ``save_lora`` into ``unet`` (resume).

    If the UNet already has the adapter (e.g. from ``add_lora``) the weights are copied into it in
    place, so an optimizer holding its parameters stays valid; otherwise the adapter is created from
    the saved config. Raises ``HerobenchError`` when the file is missing or does not fit.
    """
    # the LoRA mixin, not StableDiffusionPipeline: importing the pipeline class imports every image processor,
    # whose transformers warnings ("requires torchvision") break the progress bar's line
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft.utils import set_peft_model_state_dict

    path = Path(directory) / WEIGHT_NAME
    if not path.is_file():
        raise HerobenchError(f"LoRA weights not found: {path}")
    if ADAPTER not in getattr(unet, "peft_config", {}):
        try:
            unet.load_lora_adapter(
                str(directory), prefix="unet", adapter_name=ADAPTER, weight_name=WEIGHT_NAME
            )
        except Exception as e:
            raise HerobenchError(f"cannot load LoRA weights {path}: {type(e).__name__}: {e}") from None
        unet.requires_grad_(False)
        for p in lora_parameters(unet):
            p.data = p.data.float()
            p.requires_grad_(True)
        return
    try:
        state = StableDiffusionLoraLoaderMixin.lora_state_dict(str(directory), weight_name=WEIGHT_NAME)[0]
    except Exception as e:
        raise HerobenchError(f"cannot read LoRA weights {path}: {type(e).__name__}: {e}") from None
    state = convert_unet_state_dict_to_peft(
        {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
    )
    expected = {k.replace(f".{ADAPTER}.", ".") for k, _ in unet.named_parameters() if "lora_" in k}
    got = set(state)
    if got != expected:
        missing, extra = sorted(expected - got), sorted(got - expected)
        raise HerobenchError(
            f"LoRA weights {path} do not fit this UNet ({len(missing)} missing e.g. {missing[:1]}, "
            f"{len(extra)} unexpected e.g. {extra[:1]})"
        )
    with torch.no_grad():
        set_peft_model_state_dict(unet, state, adapter_name=ADAPTER)


def _peft_layers(unet) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]


@contextmanager
def reference_policy(unet) -> Iterator[None]:
    """Within the block the UNet runs without its LoRA adapter: the pretrained (reference) policy.

    Restores the previous state on exit (also on error). A UNet without LoRA is left as it is.
    """
    layers = _peft_layers(unet)
    was_enabled = bool(layers) and not layers[0].disable_adapters
    if was_enabled:
        unet.disable_adapters()
    try:
        yield
    finally:
        if was_enabled:
            unet.enable_adapters()
