"""The one place that converts images between float tensors, uint8 arrays and PIL images, and hashes them.

Everywhere else images are ``float32`` tensors ``B×3×H×W`` in ``[0, 1]``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``B×3×H×W`` floats in ``[0, 1]`` -> ``B×H×W×3`` uint8 (round to nearest, values clamped)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected B×3×H×W images, got shape {tuple(images.shape)}")
    x = images.detach().to("cpu", torch.float32).clamp(0, 1)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """``B×H×W×3`` (or one ``H×W×3``) uint8 -> ``B×3×H×W`` float32 in ``[0, 1]``."""
    a = np.asarray(array)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise ValueError(f"expected uint8 B×H×W×3, got {a.dtype} {a.shape}")
    return torch.from_numpy(a.copy()).permute(0, 3, 1, 2).to(torch.float32) / 255.0


def to_pil(images: torch.Tensor) -> list:
    """``B×3×H×W`` in ``[0, 1]`` -> ``B`` PIL images."""
    from PIL import Image

    return [Image.fromarray(a) for a in to_uint8(images)]


def sha256_of_image(image: torch.Tensor) -> str:
    """Hex sha256 of an image's uint8 pixels (``3×H×W`` or ``1×3×H×W``; HWC byte order)."""
    x = image if image.ndim == 4 else image[None]
    arr = to_uint8(x)
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
