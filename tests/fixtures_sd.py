"""Pytest fixtures for the core tests: tiny random SD folders (built once per session, offline).

A test module imports the fixture *functions* (``from fixtures_sd import tiny_sd_fixture``) and
asks for the fixture by its name (``def test_x(tiny_sd_dir)``); the two names differ so that linters
do not see the argument as shadowing the import.
"""

from __future__ import annotations

import pytest
import torch
from tinysd import build_tiny_sd

from herobench.core.generator import Generator, SamplerConfig
from herobench.core.pipeline import load_components

PROMPTS = ["1 hand", "a rose", "1 hand"]
STEPS = 6


@pytest.fixture(scope="session", name="tiny_sd_dir")
def tiny_sd_fixture(tmp_path_factory):
    """Folder of a tiny epsilon-prediction SD (32×32 images, latents 4×16×16)."""
    return build_tiny_sd(tmp_path_factory.mktemp("tinysd"), prediction_type="epsilon", seed=0)


@pytest.fixture(scope="session", name="tiny_sd_v_dir")
def tiny_sd_v_fixture(tmp_path_factory):
    """Folder of a tiny v-prediction SD (GlyphWorld's parameterisation)."""
    return build_tiny_sd(tmp_path_factory.mktemp("tinysd_v"), prediction_type="v_prediction", seed=1)


def make_generator(path, steps: int = STEPS, **sampler_kw) -> Generator:
    """A fresh Generator on freshly loaded components (tests may add LoRA to its UNet)."""
    return Generator(load_components(path), SamplerConfig(steps=steps, **sampler_kw))


def noise(n: int = len(PROMPTS), seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
