"""Write the shipped model's card: ``README.md`` beside the weights, with the training config, the loss
curve, the sampler it is calibrated at and the measured calibration table."""

from __future__ import annotations

import json
from pathlib import Path

from herobench.glyphworld.calibrate import MAX_UNREADABLE, SUCCESS_BAND, band_misses, markdown_table
from herobench.modelcard import model_card


def loss_curve(model_dir: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (model_dir / "training_log.jsonl").read_text().splitlines() if line]
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8), dpi=80)
    vae = [r for r in rows if r["stage"] == "vae"]
    unet = [r for r in rows if r["stage"] == "unet"]
    axes[0].plot([r["step"] for r in vae], [r["psnr_db"] for r in vae])
    axes[0].set(title="VAE reconstruction", xlabel="step", ylabel="PSNR (dB)")
    axes[1].plot([r["step"] for r in unet], [r["loss"] for r in unet])
    training = json.loads((model_dir / "training.json").read_text())
    cfg = training["config"]
    kind = {"epsilon": "ε-prediction", "v_prediction": "v-prediction"}[cfg.get("prediction_type", "v_prediction")]
    weighting = " (1/ᾱ-weighted)" if kind == "ε-prediction" and cfg.get("loss_weighting") == "v-equivalent" else ""
    axes[1].set(title=f"UNet + text encoder ({kind} MSE{weighting})", xlabel="step", yscale="log")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# why a model's card sampler differs from the paper's, by (prediction type, steps, CFG)
SAMPLER_NOTE = {
    ("v_prediction", 20, 3.0): "This small, briefly trained model degrades at high guidance, so it uses the "
                               "values above.",
    ("epsilon", 50, 5.0): "This is the paper's sampler.",
    ("epsilon", 50, 3.0): "Steps and eta are the paper's. At the paper's CFG 5.0 this small model sharpens each "
                          "prompt's mode and misses two calibration rows (black-cat 0.586, nsfw 6.2 % "
                          "unreadable); at CFG 3.0 every row is in the band (history below).",
}


def write_card(model_dir: Path, calibration: list[dict]) -> Path:
    """Write ``<model_dir>/README.md`` and its loss curve from the model's training record, the sampler of its
    card (``herobench.json``) and the calibration rows; returns the README's path."""
    model_dir = Path(model_dir)
    training = json.loads((model_dir / "training.json").read_text())
    pred = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())["prediction_type"]
    loss_curve(model_dir, model_dir / "loss_curve.png")
    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())  # (the curve included)
    # the shipped model's lineage (v1 -> v2) lives beside its weights; a model you train has none
    history_file = model_dir / "HISTORY.md"
    history = history_file.read_text() if history_file.exists() else ""
    sections = [
        _architecture_section(training, pred, size),
        _sampler_section(model_card(model_dir)["sampler"], pred),
        _training_section(training, pred),
        _calibration_section(calibration),
        history,
    ]
    out = model_dir / "README.md"
    out.write_text("\n\n".join(sections))
    return out


def _kind(pred: str) -> str:
    return {"epsilon": "ε-prediction", "v_prediction": "v-prediction"}.get(pred, pred)


def _architecture_section(training: dict, pred: str, size: int) -> str:
    cfg, params, kind = training["config"], training["parameters"], _kind(pred)
    return f"""# GlyphWorld model card

A tiny text-to-image model in Stable Diffusion's own architecture, trained by herobench on GlyphWorld
renders (`herobench glyphworld train --out DIR --seed {cfg['seed']}{'' if pred == 'epsilon' else ' --prediction-type ' + pred}`). It loads offline with plain diffusers:
`StableDiffusionPipeline.from_pretrained(path, local_files_only=True)`.

| component | class | parameters |
|---|---|---|
| tokenizer | `CLIPTokenizer` (BPE trained on GlyphWorld captions, max {24} tokens) | — |
| text encoder | `CLIPTextModel` ({cfg['text_layers']} layers, width {cfg['text_width']}) | {params['text_encoder']:,} |
| VAE | `AutoencoderKL` (f = 4: 64×64×3 ↔ 4×16×16) | {params['vae']:,} |
| UNet | `UNet2DConditionModel` ({kind}, channels {tuple(cfg['unet_channels'])}) | {params['unet']:,} |
| scheduler | `DDIMScheduler` (SD's scaled-linear betas, {kind}) | — |

Weights are fp16 safetensors, {size / 2**20:.1f} MiB in all."""


def _sampler_section(s: dict, pred: str) -> str:
    return f"""## Sampler it is calibrated at (GlyphWorld's defaults)

DDIM {s['steps']} steps, eta {s['eta']}, classifier-free guidance {s['guidance_scale']}. The paper samples
SD-1.5 ({'ε-prediction, ' if pred == 'epsilon' else ''}50 steps, eta 1.0, CFG 5.0). {SAMPLER_NOTE.get((pred, s['steps'], s['guidance_scale']), '')}
`--set sampler.guidance_scale=…` overrides them for a run, and the run records what it used."""


def _training_section(training: dict, pred: str) -> str:
    cfg = training["config"]
    if cfg.get("init_from"):
        origin = ("Continued from the previous model's weights (`--init-from`: tokenizer, text encoder, VAE and "
                  "UNet) on freshly rendered images of this world.")
        vae_line = "VAE: not trained again."
    else:
        origin = "Trained from the seed."
        vae_line = f"VAE: {cfg['vae_steps']} steps of batch {cfg['vae_batch']} on 32×32 crops."
    loss = ("ε-prediction loss weighted by 1/ᾱ_t, which is v-prediction's loss of the implied v (see "
            "`herobench/glyphworld/train.py`)" if pred == "epsilon" and cfg.get("loss_weighting") == "v-equivalent"
            else f"{_kind(pred)} MSE")
    return f"""## Training

{origin} {cfg['n_images']:,} rendered images. {vae_line}
UNet + text encoder: {cfg['unet_steps']} steps of batch {cfg['unet_batch']}, AdamW lr {cfg['unet_lr']} with
{cfg['warmup_steps']} warm-up steps and cosine decay, EMA {cfg['ema_decay']}, {cfg['caption_dropout']:.0%}
caption dropout for guidance; the {loss}.
Training took {training['seconds']['total'] / 60:.0f} minutes on {cfg['threads']} CPU thread(s) with torch
{training['torch']}. Seed {cfg['seed']}.

![loss curve](loss_curve.png)"""


def _calibration_section(calibration: list[dict]) -> str:
    misses = band_misses(calibration)
    verdict = (
        f"Every row meets the targets: success in [{SUCCESS_BAND[0]}, {SUCCESS_BAND[1]}] and at most "
        f"{MAX_UNREADABLE:.0%} unreadable."
        if not misses
        else "Rows that miss the targets (success in "
        f"[{SUCCESS_BAND[0]}, {SUCCESS_BAND[1]}], at most {MAX_UNREADABLE:.0%} unreadable):\n\n"
        + "\n".join(f"- {m}" for m in misses)
    )
    return f"""## Calibration: pretrained success on each task prompt

Measured with `herobench glyphworld calibrate --n {calibration[0]['n'] if calibration else 256}`: samples
from plain N(0, I) noise, judged by the exact oracle. The world is calibrated against these numbers only,
and never against how a finetuning method performs later.

{markdown_table(calibration)}

{verdict}"""
