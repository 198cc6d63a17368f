"""Train the shipped GlyphWorld model: a tiny text-to-image model in Stable Diffusion's own architecture.

Components (all plain diffusers / transformers classes, saved in diffusers format so that
``StableDiffusionPipeline.from_pretrained(path)`` loads it offline):

* ``CLIPTokenizer`` — a BPE trained with ``tokenizers`` on GlyphWorld captions (CLIP's pre-tokenizer
  and ``</w>`` end-of-word suffix), written as ``vocab.json`` + ``merges.txt``;
* ``CLIPTextModel`` — a small transformer trained jointly with the UNet;
* ``AutoencoderKL`` — f = 4: 64×64×3 images ↔ 4×16×16 latents, trained first;
* ``UNet2DConditionModel`` — ε-prediction, Stable Diffusion 1.x's parametrization (v3; v1/v2 were
  v-prediction), classifier-free guidance by dropping 10 % of captions. Its loss is weighted per timestep by
  1/ᾱ_t = (SNR+1)/SNR ("v-equivalent"): ‖ε̂−ε‖²/ᾱ_t equals ‖v̂−v‖² for the v implied by ε̂, so the ε model
  minimises exactly v2's objective (which learned GlyphWorld's colours in 8,000 steps) while its output, and
  so every sampler step's dependence on the network, is SD-1.5's. Plain ε-MSE weights the x₀ error by
  SNR_t, ~0.005 at t = 999: an early prototype at 1.5k steps got background and object colours wrong;
* ``DDIMScheduler``.

Everything is seeded: the same seed on the same CPU gives the same weights. ``device="cuda"`` trains the VAE,
UNet and text encoder on a GPU with the same random draws (taken from CPU generators); its weights differ
from a CPU run's by floating-point order only.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from herobench.core.pipeline import SDComponents
from herobench.glyphworld import render
from herobench.modelcard import write_model_card

MAX_TOKENS = 24

# The sampler the shipped model is calibrated at (its README states it); run configs may override it.
# v1/v2 (v-prediction) were calibrated at DDIM 20 steps and CFG 3
V2_SAMPLER = {"steps": 20, "eta": 1.0, "guidance_scale": 3.0, "negative_prompt": "", "micro_batch": 64}
DEFAULT_SAMPLER = {"steps": 50, "eta": 1.0, "guidance_scale": 5.0, "negative_prompt": "", "micro_batch": 64}


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    n_images: int = 60_000
    vae_steps: int = 1_000
    vae_batch: int = 32
    vae_lr: float = 1e-3
    unet_steps: int = 8_000
    unet_batch: int = 64
    unet_lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    # "epsilon" (SD-1.x, v3) or "v_prediction" (v1/v2)
    prediction_type: str = "epsilon"
    # per-timestep weight of the denoising loss: "v-equivalent" (1/ᾱ_t for ε, 1 for v) or "none" (plain MSE)
    loss_weighting: str = "v-equivalent"
    # a trained model folder to continue from (its tokenizer, text encoder, VAE and UNet; the VAE is not
    # trained again); "" trains everything from the seed
    init_from: str = ""
    vocab_size: int = 600
    text_width: int = 128
    text_layers: int = 2
    unet_channels: tuple[int, int, int] = (32, 64, 128)
    # 2 threads on an idle 2-core machine: 0.48 s per UNet step against 0.81 s on 1 thread. On a loaded
    # machine two OpenMP threads thrash (70x slower seen here): then pass --threads 1.
    threads: int = 2


# --------------------------------------------------------------------------- components

def tokenizers_regex():
    from tokenizers import Regex

    return Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")


def build_tokenizer(corpus: list[str], out_dir: Path, vocab_size: int):
    """Train a CLIP-style BPE on ``corpus`` and return a ``CLIPTokenizer`` saved under ``out_dir``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    bpe.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    # the same split as CLIP's regex: letters runs, single digits, punctuation runs
    bpe.pre_tokenizer = pre_tokenizers.Split(
        pattern=tokenizers_regex(), behavior="removed", invert=True
    )
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789_,.'-!?")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    raw = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = raw["vocab"]
    # CLIP's slow/fast tokenizers expect every single character also with the </w> suffix
    for ch in alphabet:
        for tok in (ch, ch + "</w>"):
            if tok not in vocab:
                vocab[tok] = len(vocab)
    merges = [m if isinstance(m, str) else " ".join(m) for m in raw["merges"]]
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    # transformers 5 builds a CLIP tokenizer in memory from the vocab and (a, b) merge tuples
    tok = CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(m.split(" ")) for m in merges],
        model_max_length=MAX_TOKENS,
        pad_token="<|endoftext|>",
    )
    tok.save_pretrained(out_dir)
    return tok


def load_models(model_dir: Path):
    """The tokenizer, text encoder, VAE and UNet of a trained GlyphWorld model folder, in float32 (to continue
    training them: ``TrainConfig.init_from``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if not (model_dir / "model_index.json").is_file():
        raise FileNotFoundError(f"init_from: {model_dir} is not a diffusers model folder (no model_index.json)")
    f32 = {"torch_dtype": torch.float32}
    return (
        CLIPTokenizer.from_pretrained(model_dir / "tokenizer"),
        CLIPTextModel.from_pretrained(model_dir / "text_encoder", **f32),
        AutoencoderKL.from_pretrained(model_dir / "vae", **f32),
        UNet2DConditionModel.from_pretrained(model_dir / "unet", **f32),
    )


def build_models(cfg: TrainConfig, vocab_size: int):
    """Fresh, seeded text encoder, VAE and UNet with the GlyphWorld sizes."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(cfg.seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.text_width,
            intermediate_size=cfg.text_width * 4,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_act="quick_gelu",
        )
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        # narrow at full resolution: pixel-space convolutions dominate the cost on a CPU
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=render.IMAGE_SIZE,
    )
    c1, c2, c3 = cfg.unet_channels
    unet = UNet2DConditionModel(
        sample_size=render.IMAGE_SIZE // 4,
        in_channels=4,
        out_channels=4,
        # attention only at 8×8 and 4×4: 16×16 self-attention doubled the step time on 2 CPU cores
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(c1, c2, c3),
        layers_per_block=1,
        cross_attention_dim=cfg.text_width,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    return text_encoder, vae, unet


def make_scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDIMScheduler

    # Stable Diffusion's training schedule and (v3) its ε-prediction (see module docstring).
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


# --------------------------------------------------------------------------- data

def render_dataset(n: int, seed: int, progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """``n`` training examples: uint8 ``n×64×64×3`` images and captions."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, render.IMAGE_SIZE, render.IMAGE_SIZE, 3), dtype=np.uint8)
    captions: list[str] = []
    for i in tqdm(range(n), desc="render", disable=not progress, mininterval=2):
        img, cap, _ = render.sample_training_example(rng)
        images[i] = img
        captions.append(cap)
    return images, captions


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))) * 0.95 + 0.05

    return f


def train_vae(vae, images: np.ndarray, cfg: TrainConfig, log: list, progress=True, device: str = "cpu"):
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(100, cfg.vae_steps))
    vae.train()
    bar = tqdm(range(cfg.vae_steps), desc="vae", disable=not progress, mininterval=2)
    for step in bar:
        idx = torch.randint(0, len(images), (cfg.vae_batch,), generator=gen)
        x = _to_tensor(images[idx.numpy()]).to(device)
        # random 32×32 crops on the 4-pixel latent grid: the VAE is convolutional, so crops teach it
        # the same local code at a quarter of the cost (the mid-block attention still sees 8×8)
        oy, ox = (torch.randint(0, (x.shape[-1] - 32) // 4 + 1, (2,), generator=gen) * 4).tolist()
        x = x[:, :, oy : oy + 32, ox : ox + 32]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(device)
        rec = vae.decode(z).sample
        mse = F.mse_loss(rec, x)
        loss = mse + 0.5 * F.l1_loss(rec, x) + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            psnr = 10 * math.log10(4.0 / max(mse.item(), 1e-10))
            log.append({"stage": "vae", "step": step, "loss": loss.item(), "psnr_db": psnr})
            bar.set_postfix(psnr=f"{psnr:.1f}")
    vae.eval()


@torch.no_grad()
def encode_dataset(vae, images: np.ndarray, batch: int = 256, device: str = "cpu") -> torch.Tensor:
    """Posterior means (deterministic) of every image, unscaled (on the CPU)."""
    out = []
    for i in range(0, len(images), batch):
        out.append(vae.encode(_to_tensor(images[i : i + batch]).to(device)).latent_dist.mean.cpu())
    return torch.cat(out)


def denoising_loss(pred, x0, noise, alpha_bar, prediction_type: str, weighting: str) -> torch.Tensor:
    """Mean per-sample MSE against the ``prediction_type`` target, weighted per timestep by ``weighting``.

    "v-equivalent" weights an ε-prediction's error by 1/ᾱ_t, which makes it the v-prediction loss of the v that
    the ε output implies (v̂ − v = (ε̂ − ε)/√ᾱ_t for fixed x_t); for v-prediction it is the plain MSE."""
    a = alpha_bar.sqrt().view(-1, 1, 1, 1)
    s = (1 - alpha_bar).sqrt().view(-1, 1, 1, 1)
    if prediction_type == "epsilon":
        target, w = noise, 1.0 / alpha_bar
    elif prediction_type == "v_prediction":
        target, w = a * noise - s * x0, torch.ones_like(alpha_bar)
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}")
    if weighting == "none":
        w = torch.ones_like(alpha_bar)
    elif weighting != "v-equivalent":
        raise ValueError(f"unknown loss_weighting {weighting!r} (v-equivalent or none)")
    per_sample = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))
    return (w * per_sample).mean()


def train_unet(unet, text_encoder, tokenizer, scheduler, latents, captions, cfg: TrainConfig, log, progress=True,
               device: str = "cpu"):
    # every random draw comes from one CPU generator, so a CUDA run sees the same batches, steps and noise
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps, cfg.unet_steps))
    ema = [p.detach().clone() for p in params]
    tokens = tokenizer(
        captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
    ).input_ids
    empty = tokenizer([""], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
    acp = scheduler.alphas_cumprod.to(device)
    latents = latents.to(device)
    unet.train()
    text_encoder.train()
    bar = tqdm(range(cfg.unet_steps), desc="unet", disable=not progress, mininterval=2)
    for step in bar:
        idx = torch.randint(0, len(latents), (cfg.unet_batch,), generator=gen)
        x0 = latents[idx.to(device)]
        ids = tokens[idx].clone()
        drop = torch.rand(len(idx), generator=gen) < cfg.caption_dropout
        ids[drop] = empty
        ids = ids.to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        xt = acp[t].sqrt().view(-1, 1, 1, 1) * x0 + (1 - acp[t]).sqrt().view(-1, 1, 1, 1) * noise
        emb = text_encoder(ids)[0]
        pred = unet(xt, t, encoder_hidden_states=emb).sample
        loss = denoising_loss(pred, x0, noise, acp[t], cfg.prediction_type, cfg.loss_weighting)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            d = min(cfg.ema_decay, (1 + step) / (10 + step))
            torch._foreach_mul_(ema, d)
            torch._foreach_add_(ema, [p.detach() for p in params], alpha=1 - d)
        if step % 50 == 0:
            log.append({"stage": "unet", "step": step, "loss": loss.item(), "lr": sched.get_last_lr()[0]})
            bar.set_postfix(loss=f"{loss.item():.4f}")
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    unet.eval()
    text_encoder.eval()


def mark_float32_default(model_dir: Path) -> None:
    """Weights stay fp16 on disk, but the text encoder's ``config.json`` says float32.

    transformers 5 loads a model in the ``dtype`` its config names when none is passed, while diffusers loads
    the UNet and VAE in float32: a plain ``StableDiffusionPipeline.from_pretrained(dir)`` then fails on the
    CPU with "mat1 and mat2 must have the same dtype" (half text encoder, float UNet)."""
    path = Path(model_dir) / "text_encoder" / "config.json"
    cfg = json.loads(path.read_text())
    cfg["dtype"] = "float32"
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _save_pipeline(out_dir: Path, vae, text_encoder, tokenizer, unet, scheduler) -> None:
    """The trained components as one diffusers folder, weights in fp16 (the text encoder's config float32)."""
    pipe = SDComponents(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, unet=unet,
                        scheduler=scheduler).to_pipeline()
    pipe.to(torch.float16)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    mark_float32_default(out_dir)


def _write_records(out_dir: Path, cfg: TrainConfig, log: list[dict], seconds: dict, scale: float,
                   models: dict, device: str) -> None:
    """``training.json`` (config, times, parameter counts, versions), the model card and the training log."""
    n_params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    record = {
        "config": asdict(cfg),
        "seconds": seconds,
        "parameters": n_params,
        "vae_scaling_factor": scale,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else f"cpu, {cfg.threads} threads",
    }
    (out_dir / "training.json").write_text(json.dumps(record, indent=2))
    # the model card's machine-readable part: marks the backend and the sampler it is calibrated at
    write_model_card(out_dir, DEFAULT_SAMPLER if cfg.prediction_type == "epsilon" else V2_SAMPLER,
                     image_size=render.IMAGE_SIZE)
    with open(out_dir / "training_log.jsonl", "w") as f:
        for row in log:
            f.write(json.dumps(row) + "\n")


def train_glyphworld(out_dir: str | Path, cfg: TrainConfig = TrainConfig(), progress: bool = True,
                     device: str = "cpu") -> Path:
    """Train every component and write a diffusers folder (fp16 safetensors) plus training records.

    ``device``: where the VAE, UNet and text encoder train (``cuda`` runs the same random draws as the CPU;
    its weights differ from a CPU run's by floating-point order only)."""
    out_dir = Path(out_dir)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    log: list[dict] = []
    if cfg.init_from:
        tokenizer, text_encoder, vae, unet = load_models(Path(cfg.init_from))
    else:
        tokenizer = build_tokenizer(render.caption_corpus(20_000, cfg.seed), out_dir / "tokenizer", cfg.vocab_size)
        text_encoder, vae, unet = build_models(cfg, len(tokenizer))
    images, captions = render_dataset(cfg.n_images, cfg.seed, progress)
    t_render = time.time() - t0
    if not cfg.init_from:
        vae.to(device)
        train_vae(vae, images, cfg, log, progress, device)
    t_vae = time.time() - t0 - t_render
    raw = encode_dataset(vae, images, device=device)
    vae.to("cpu")
    if cfg.init_from:  # the VAE is kept as it was, and so its latent scale
        scale = float(vae.config.scaling_factor)
    else:
        scale = float(1.0 / raw.std())
        vae.register_to_config(scaling_factor=scale)
    latents = raw * scale
    scheduler = make_scheduler(cfg.prediction_type)
    unet.to(device)
    text_encoder.to(device)
    train_unet(unet, text_encoder, tokenizer, scheduler, latents, captions, cfg, log, progress, device)
    unet.to("cpu")
    text_encoder.to("cpu")
    t_total = time.time() - t0
    _save_pipeline(out_dir, vae, text_encoder, tokenizer, unet, scheduler)
    seconds = {"render": t_render, "vae": t_vae, "total": t_total}
    _write_records(out_dir, cfg, log, seconds, scale, {"unet": unet, "vae": vae, "text_encoder": text_encoder}, device)
    return out_dir
