"""A PNG grid of images with each tile's verdict drawn on it (for eyeballing oracles and models)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from herobench.types import Verdict

SCALE = 3
BORDER = 4
TEXT_H = 26
GREEN, RED, GREY = (30, 160, 60), (200, 40, 40), (120, 120, 120)


def _as_uint8_list(images) -> list[np.ndarray]:
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected B×3×H×W images, got shape {tuple(images.shape)}")
        x = (images.detach().to("cpu", torch.float32).clamp(0, 1) * 255).round().to(torch.uint8)
        return list(x.permute(0, 2, 3, 1).numpy())
    out = []
    for a in images:
        a = np.asarray(a)
        if a.dtype != np.uint8:
            a = (np.clip(a.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
        out.append(a)
    return out


def verdict_grid(images, verdicts: Sequence[Verdict], path: str | Path, cols: int = 8) -> Path:
    """Write a grid PNG: each tile upscaled ×3, a green (success) / red (failure) / grey (unreadable) border,
    and the verdict's reason (plus score) under it. ``images``: uint8 H×W×3 list/array or B×3×H×W tensor."""
    from PIL import Image, ImageDraw, ImageFont

    imgs = _as_uint8_list(images)
    if len(imgs) != len(verdicts):
        raise ValueError(f"{len(imgs)} images but {len(verdicts)} verdicts")
    if not imgs:
        raise ValueError("no images")
    h, w = imgs[0].shape[:2]
    tw, th = w * SCALE + 2 * BORDER, h * SCALE + 2 * BORDER + TEXT_H
    cols = max(1, min(cols, len(imgs)))
    rows = (len(imgs) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * tw, rows * th), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    chars = max(8, (tw - 4) // 6)
    for i, (a, v) in enumerate(zip(imgs, verdicts)):
        x0, y0 = (i % cols) * tw, (i // cols) * th
        colour = GREY if not v.readable else (GREEN if v.success else RED)
        draw.rectangle([x0, y0, x0 + tw - 1, y0 + h * SCALE + 2 * BORDER - 1], fill=colour)
        tile = Image.fromarray(a).resize((w * SCALE, h * SCALE), Image.NEAREST)
        canvas.paste(tile, (x0 + BORDER, y0 + BORDER))
        text = f"{v.score:.2f} · {v.reason}"  # a separator: "0.54 6 fingers" read as "0.546 fingers"
        lines = textwrap.wrap(text, chars)[:2] or [""]
        for k, line in enumerate(lines):
            draw.text((x0 + 3, y0 + h * SCALE + 2 * BORDER + 1 + 12 * k), line, fill=colour, font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
