"""The shipped GlyphWorld model: loads offline through plain diffusers, has a model card, renders images of
the documented size, and runs the main job end to end (CLI smoke test on GlyphWorld)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from herobench.cli import main
from herobench.glyphworld import render
from herobench.harness.runlog import read_jsonl
from herobench.paths import glyphworld_model_dir
from herobench.tasks import glyphworld_tasks

TASKS = glyphworld_tasks()  # the task files' GlyphWorld prompt sets, by task name

MODEL = glyphworld_model_dir(must_exist=False)  # shipped with the package: a missing model fails every test


def test_model_card_and_size():
    card = json.loads((MODEL / "herobench.json").read_text())
    assert card["backend"] == "glyphworld" and card["image_size"] == render.IMAGE_SIZE
    assert set(card["sampler"]) >= {"steps", "eta", "guidance_scale"}
    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert size <= 30 * 2**20, f"shipped model is {size / 2**20:.1f} MiB"
    assert (MODEL / "README.md").exists()


@pytest.mark.parametrize("dtype_kwargs", [{}, {"torch_dtype": torch.float32}], ids=["no-dtype", "float32"])
def test_plain_diffusers_loads_it_offline(dtype_kwargs):
    # with no dtype argument transformers 5 loads the text encoder in its config's dtype: the config must say
    # float32 (the weights are fp16 on disk), or the first call fails with "mat1 and mat2 ... Half and Float"
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(MODEL, local_files_only=True, **dtype_kwargs)
    assert pipe.text_encoder.dtype == pipe.unet.dtype == torch.float32
    out = pipe(["1 hand", "photo of one blue rose in a vase"], num_inference_steps=4, guidance_scale=3.0,
               height=64, width=64, output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 64, 64, 3)
    assert np.isfinite(out.images).all() and out.images.std() > 0.02  # not a blank image


def test_every_task_prompt_fits_the_tokenizer():
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(MODEL / "tokenizer")
    for spec in TASKS.values():
        for p in (*spec.train_prompts, *spec.eval_prompts, *spec.enhanced_prompts):
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


def _row(task, success, unreadable, prompts="train", profile="default"):
    return {"task": task, "prompts": prompts, "profile": profile, "n": 256, "success": success,
            "lo": success - 0.05, "hi": success + 0.05, "unreadable": unreadable}


def test_band_misses_names_each_row_outside_the_targets():
    from herobench.glyphworld.calibrate import band_misses

    rows = [_row("hand", 0.30, 0.0), _row("blue-rose", 0.59, 0.01), _row("nsfw", 0.04, 0.086, "eval"),
            _row("mountain", 0.05, 0.05, profile="snowy")]
    misses = band_misses(rows)
    assert misses == [
        "blue-rose (train prompts, default rater): success 0.590 outside [0.05, 0.5]",
        "nsfw (eval prompts, default rater): success 0.040 outside [0.05, 0.5]",
        "nsfw (eval prompts, default rater): unreadable 0.086 above 0.05",
    ]  # the band's edges are inside it
    assert band_misses(rows[:1]) == []


def test_model_card_states_the_band_verdict(tmp_path):
    import shutil

    from herobench.glyphworld.card import write_card

    model = tmp_path / "model"
    shutil.copytree(glyphworld_model_dir(), model)
    text = write_card(model, [_row("hand", 0.30, 0.0), _row("nsfw", 0.60, 0.02, "eval")]).read_text()
    assert "| hand | train | default | 256 | 0.300 |" in text
    assert "- nsfw (eval prompts, default rater): success 0.600 outside [0.05, 0.5]" in text
    assert "Every row meets the targets" not in text
    text = write_card(model, [_row("hand", 0.30, 0.0)]).read_text()
    assert "Every row meets the targets" in text and (model / "loss_curve.png").exists()


def test_write_card_refuses_another_guidance_scale():
    # the card records the card's own sampler: a sweep at another CFG must not overwrite it
    result = CliRunner().invoke(main, ["glyphworld", "calibrate", "--write-card", "--guidance-scale", "2.0"])
    assert result.exit_code == 2 and "--write-card" in result.output


def test_hand_diagnosis_script_runs_and_the_vae_keeps_every_hand_kind(capsys):
    """benchmarks/hand_diagnosis.py on a few images: its VAE round trip must read each kind as rendered."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "hand_diagnosis.py"
    spec = importlib.util.spec_from_file_location("hand_diagnosis", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.CAPTIONS = ["1 hand"]  # one caption is enough for a smoke test
    mod.main(["--n", "4", "--n-vae", "3", "--cfg"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    vae = lines[lines.index(next(x for x in lines if x.startswith("2. VAE"))) + 1:][: 2 * len(mod.KINDS)]
    for before, after in zip(vae[::2], vae[1::2]):
        assert before.split(None, 1)[1].strip() == after.strip(), (before, after)
    assert "   1 hand " in out and "unreadable" in out


def test_train_command_writes_a_loadable_model_with_its_records(tmp_path):
    """`herobench glyphworld train` end to end at a toy size: the folder loads offline through plain diffusers
    and records its config, timings and device; the model card is written by `calibrate --write-card`."""
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "gw"
    res = CliRunner().invoke(main, ["glyphworld", "train", "--out", str(out), "--unet-steps", "3",
                                    "--vae-steps", "2", "--n-images", "64", "--threads", "1"])
    assert res.exit_code == 0, res.output
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["unet_steps"] == 3 and record["config"]["n_images"] == 64
    assert record["device"] == "cpu, 1 threads" and record["seconds"]["total"] > 0
    log = [json.loads(x) for x in (out / "training_log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in log} == {"vae", "unet"}
    sampler = json.loads((out / "herobench.json").read_text())["sampler"]
    assert (sampler["steps"], sampler["guidance_scale"]) == (50, 5.0)  # the paper's sampler (v3)
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "epsilon"
    pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True, dtype=torch.float32)
    img = pipe(["1 hand"], num_inference_steps=2, height=64, width=64, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 64, 64, 3) and np.isfinite(img).all()


def test_v_equivalent_weighting_is_the_v_loss_of_the_implied_v():
    # ‖ε̂ − ε‖² / ᾱ equals ‖v̂ − v‖² for v̂ = √ᾱ ε̂ − √(1−ᾱ) x̂₀ with x̂₀ = (x_t − √(1−ᾱ) ε̂)/√ᾱ (fixed x_t)
    from herobench.glyphworld.train import denoising_loss

    g = torch.Generator().manual_seed(0)
    x0, noise, eps_hat = (torch.randn(3, 4, 2, 2, generator=g) for _ in range(3))
    ab = torch.tensor([0.9, 0.3, 0.005])
    a, s = ab.sqrt().view(-1, 1, 1, 1), (1 - ab).sqrt().view(-1, 1, 1, 1)
    x_t = a * x0 + s * noise
    x0_hat = (x_t - s * eps_hat) / a
    v_hat, v = a * eps_hat - s * x0_hat, a * noise - s * x0
    expected = (v_hat - v).pow(2).mean()
    got = denoising_loss(eps_hat, x0, noise, ab, "epsilon", "v-equivalent")
    assert torch.allclose(got, expected, rtol=1e-4)
    assert torch.allclose(denoising_loss(eps_hat, x0, noise, ab, "epsilon", "none"), (eps_hat - noise).pow(2).mean())
    assert torch.allclose(denoising_loss(v_hat, x0, noise, ab, "v_prediction", "v-equivalent"), expected, rtol=1e-4)
    with pytest.raises(ValueError):
        denoising_loss(eps_hat, x0, noise, ab, "epsilon", "min-snr")
