"""The shipped GlyphWorld model: loads offline through plain diffusers, has a model card, renders images of
the documented size, and runs the main job end to end (CLI smoke test on GlyphWorld)."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner

from herobench.cli import main
from herobench.glyphworld import render
from herobench.harness.runlog import read_jsonl
from herobench.paths import glyphworld_model_dir

MODEL = glyphworld_model_dir(must_exist=False)  # shipped with the package: a missing model fails every test


def test_model_card_and_size():
    card = json.loads((MODEL / "herobench.json").read_text())
    assert card["backend"] == "glyphworld" and card["image_size"] == render.IMAGE_SIZE
    assert set(card["sampler"]) >= {"steps", "eta", "guidance_scale"}
    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert size <= 30 * 2**20, f"shipped model is {size / 2**20:.1f} MiB"
    assert (MODEL / "README.md").exists()


def test_plain_diffusers_loads_it_offline():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(MODEL, local_files_only=True, dtype=torch.float32)
    out = pipe(["1 hand", "photo of one blue rose in a vase"], num_inference_steps=4, guidance_scale=3.0,
               height=64, width=64, output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 64, 64, 3)
    assert np.isfinite(out.images).all() and out.images.std() > 0.02  # not a blank image


def test_every_task_prompt_fits_the_tokenizer():
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(MODEL / "tokenizer")
    for spec in render.TASK_PROMPTS.values():
        for p in (*spec["train"], *spec["eval"], *spec["enhanced"]):
            ids = tok(p).input_ids
            assert len(ids) <= tok.model_max_length, p
            assert tok.unk_token_id not in ids[1:-1] or "_" in p, p


def test_main_job_smoke_on_glyphworld(tmp_path):
    res = CliRunner().invoke(main, [
        "run", "--task", "hand", "--method", "hero", "--budget", "8", "--out", str(tmp_path), "--quiet",
        "--set", "batch_size=8", "--set", "sampler.steps=4", "--set", "eval.n_images=16",
        "--set", "eval.every_labels=8", "--set", "method_options.encoder_epochs=5",
    ])
    assert res.exit_code == 0, res.output
    (run_dir,) = list(tmp_path.iterdir())
    labels = [r for r in read_jsonl(run_dir / "labels.jsonl") if "good" in r]
    assert len(labels) == 8
    assert [e["labels"] for e in read_jsonl(run_dir / "evals.jsonl")] == [0, 8]
    assert "success (eval prompts)" in res.output
