"""Calibration of the shipped GlyphWorld model against the world's exact oracles.

The model card must state, for every task prompt (and both mountain raters), the pretrained success
rate on >= 256 samples, and the oracle's unreadable rate. The world is calibrated against these numbers
only — never against how a finetuning method later performs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from herobench.core.generator import Generator, SamplerConfig
from herobench.core.images import to_uint8
from herobench.core.pipeline import load_components
from herobench.glyphworld import render
from herobench.glyphworld.grid import verdict_grid
from herobench.modelcard import model_card, resolve_model
from herobench.oracles.glyphworld_exact import TASKS as EXACT_TASKS
from herobench.oracles.glyphworld_exact import GlyphOracle
from herobench.stats import wilson_interval
from herobench.tasks import glyphworld_tasks
from herobench.types import TaskSpec


def calibrated_tasks() -> dict[str, TaskSpec]:
    """The task files judged by the exact oracle, as GlyphWorld sees them, in the oracle's task order (the
    calibration table's row order)."""
    specs = glyphworld_tasks()
    return {task: specs[task] for task in EXACT_TASKS if task in specs}


def task_prompts(spec: TaskSpec, which: str) -> list[str]:
    """A task's ``"train"`` or ``"eval"`` prompt set."""
    return list(spec.train_prompts if which == "train" else spec.eval_prompts)


# (task, prompt set, profile) rows of the calibration table
def calibration_rows() -> list[tuple[str, str, str]]:
    rows = []
    for task, spec in calibrated_tasks().items():
        for which in ("train", "eval"):
            if which == "eval" and task_prompts(spec, "eval") == task_prompts(spec, "train"):
                continue
            for prof in spec.rater_profiles:
                rows.append((task, which, prof))
    return rows


def load_generator(model_dir: Path, sampler: SamplerConfig | None = None, device: str = "cpu",
                   guidance_scale: float | None = None) -> Generator:
    """The model with ``sampler`` (default: its card's), at ``guidance_scale`` when given."""
    if sampler is None:
        sampler = SamplerConfig(**model_card(Path(model_dir))["sampler"])
    if guidance_scale is not None:
        sampler = dataclasses.replace(sampler, guidance_scale=guidance_scale)
    return Generator(load_components(model_dir, device=device), sampler, device=device)


@torch.no_grad()
def sample_task(gen: Generator, prompts: list[str], n: int, seed: int, batch: int = 64) -> torch.Tensor:
    images = []
    ps = [prompts[i % len(prompts)] for i in range(n)]
    for i in range(0, n, batch):
        g = torch.Generator().manual_seed(seed + i)
        images.append(gen.sample(ps[i : i + batch], generator=g).images.cpu())
    return torch.cat(images)


def calibrate(model_dir: Path, n: int = 256, seed: int = 1234, grid_dir: Path | None = None,
              guidance_scale: float | None = None, device: str = "cpu") -> list[dict]:
    """Sample ``n`` images per task prompt set and judge them; returns one row per (task, set, profile).

    ``guidance_scale``: sample at this CFG scale instead of the model card's (the rest of its sampler kept)."""
    gen = load_generator(model_dir, guidance_scale=guidance_scale, device=device)
    cache: dict[tuple[str, str], tuple[list[str], torch.Tensor]] = {}
    out = []
    specs = calibrated_tasks()
    for task, which, prof in calibration_rows():
        prompts = task_prompts(specs[task], which)
        key = (task, which)
        if key not in cache:
            cache[key] = (prompts, sample_task(gen, prompts, n, seed))
        _, images = cache[key]
        ps = [prompts[i % len(prompts)] for i in range(n)]
        verdicts = GlyphOracle(task, profile=prof).judge(images, ps)
        k = sum(v.success for v in verdicts)
        lo, hi = wilson_interval(k, n)
        unread = sum(not v.readable for v in verdicts) / n
        reasons: dict[str, int] = {}
        for v in verdicts:
            reasons[v.reason] = reasons.get(v.reason, 0) + 1
        out.append({"task": task, "prompts": which, "profile": prof, "n": n, "success": k / n, "lo": lo,
                    "hi": hi, "unreadable": unread,
                    "top_reasons": dict(sorted(reasons.items(), key=lambda x: -x[1])[:5])})
        if grid_dir is not None and which == "train":
            grid_dir.mkdir(parents=True, exist_ok=True)
            verdict_grid(to_uint8(images[:32]), verdicts[:32], grid_dir / f"{task}-{prof}.png", cols=8)
    return out


def ground_truth_grid(task: str, path: Path, n: int = 32, seed: int = 0, profile: str = "default") -> None:
    """The same grid for freshly rendered ground truth (what the world looks like)."""
    rng = np.random.default_rng(seed)
    prompts = task_prompts(glyphworld_tasks()[task], "train")
    imgs, ps = [], []
    for i in range(n):
        p = prompts[i % len(prompts)]
        img, _ = render.render_for_prompt(p, rng)
        imgs.append(img)
        ps.append(p)
    arr = np.stack(imgs)
    tens = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
    verdicts = GlyphOracle(task, profile=profile).judge(tens, ps)
    verdict_grid(arr, verdicts, path, cols=8)


def model_grid(task: str, path: Path, model: str = "glyphworld", n: int = 32, seed: int = 0,
               profile: str = "default", lora: Path | None = None) -> None:
    """A grid of model samples for the task's train prompts, each tile with its verdict."""
    from herobench.core.lora import load_lora

    gen = load_generator(resolve_model(model))
    if lora is not None:
        load_lora(gen.components.unet, lora)
    prompts = task_prompts(glyphworld_tasks()[task], "train")
    images = sample_task(gen, prompts, n, seed)
    ps = [prompts[i % len(prompts)] for i in range(n)]
    verdicts = GlyphOracle(task, profile=profile).judge(images, ps)
    verdict_grid(to_uint8(images), verdicts, path, cols=8)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| task | prompts | rater | n | success | 95% CI | unreadable |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['prompts']} | {r['profile']} | {r['n']} | {r['success']:.3f} | "
            f"[{r['lo']:.3f}, {r['hi']:.3f}] | {r['unreadable']:.3f} |"
        )
    return "\n".join(lines)


# issue 3's targets for the pretrained model: success in this band on every row, unreadable at most this
SUCCESS_BAND = (0.05, 0.50)
MAX_UNREADABLE = 0.05


def band_misses(rows: list[dict]) -> list[str]:
    """The calibration rows outside the targets, one readable line each (empty when all are met)."""
    out = []
    for r in rows:
        name = f"{r['task']} ({r['prompts']} prompts, {r['profile']} rater)"
        if not SUCCESS_BAND[0] <= r["success"] <= SUCCESS_BAND[1]:
            out.append(f"{name}: success {r['success']:.3f} outside [{SUCCESS_BAND[0]}, {SUCCESS_BAND[1]}]")
        if r["unreadable"] > MAX_UNREADABLE:
            out.append(f"{name}: unreadable {r['unreadable']:.3f} above {MAX_UNREADABLE}")
    return out
