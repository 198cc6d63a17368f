"""The model card ``<model>/herobench.json``: which backend a model folder is and the sampler it is
calibrated at. The one place that writes it (``glyphworld/train.py`` calls :func:`write_model_card`) and
reads it (the runner, calibration and the human-readable card in ``glyphworld/card.py``).

A plain Stable Diffusion folder has no card; it reads as backend ``"sd"`` with an empty sampler, so the
paper's sampler defaults apply.
"""

from __future__ import annotations

import json
from pathlib import Path

from herobench.errors import HerobenchError

CARD_FILE = "herobench.json"


def resolve_model(model: str) -> Path:
    """The model folder for a run's ``model`` setting: ``""`` or ``"glyphworld"`` is the shipped GlyphWorld
    model, anything else a local diffusers folder.

    Raises:
        HerobenchError: the path does not exist.
    """
    from herobench.paths import glyphworld_model_dir

    if model in ("", "glyphworld"):
        return glyphworld_model_dir()
    path = Path(model).expanduser()
    if not path.exists():
        raise HerobenchError(f"model path '{model}' does not exist (pass a local diffusers folder or 'glyphworld')")
    return path


def model_card(model_dir: Path) -> dict:
    """``<model>/herobench.json``: ``{"backend": "glyphworld", "sampler": {...}}`` for models this project
    trained; absent for a plain Stable Diffusion folder (backend "sd")."""
    card = model_dir / CARD_FILE
    if not card.exists():
        return {"backend": "sd", "sampler": {}}
    try:
        data = json.loads(card.read_text())
    except json.JSONDecodeError as e:
        raise HerobenchError(f"{card} is not valid JSON ({e})") from e
    return {"backend": data.get("backend", "sd"), "sampler": data.get("sampler", {})}


def write_model_card(out_dir: Path, sampler: dict, image_size: int, backend: str = "glyphworld") -> None:
    """Write ``<out_dir>/herobench.json`` for a model this project trained (``image_size``: its images' side)."""
    (Path(out_dir) / CARD_FILE).write_text(
        json.dumps({"backend": backend, "image_size": image_size, "sampler": sampler}, indent=2)
    )
