"""One HERO iteration at Stable Diffusion 1.5's real size, with random weights, on one GPU: prints timings.

The model is ``herobench.core.sd15``'s random-weight SD-1.5 architecture (UNet 859.5 M parameters, KL VAE,
CLIP ViT-L/14 text encoder), built directly on the GPU; no download, no weights needed. The iteration goes
through the shared core and the HERO method exactly as a run does, with the paper's settings:

    batch 64 at 512×512 (latents 4×64×64), DDIM 50 steps, eta 1.0, CFG 5.0 -> feedback (simulated: random
    good/bad labels, best = a random good image) -> HERO learn: triplet encoder 500 epochs + rewards +
    PPO (5 random timesteps per trajectory, CFG in training, LoRA rank 4 in float32 on a float16 UNet)
    -> the next batch's noise from the pool.

Feedback is simulated because the images of a random model mean nothing; ``--clip-oracle`` also times the
clip-contrastive judge with a random ViT-L/14 on the 64 images when open_clip is installed.

Expected on one H100: well under 5 minutes (build ~10 s, sampling tens of seconds, PPO about as long).

It also prints the iteration's **UNet-only time**: the wall time inside UNet forward calls (sampling and the
PPO's log-prob recomputation, ``Generator.unet_seconds``) plus the PPO's backward (``core.policy_gradient
.backward``, timed by wrapping it: the loss is a function of the UNet's output only), and the iteration's
time over it (issue 30's target: at most 1.15).

    python benchmarks/gpu_sd15_iteration.py                      # the paper's iteration
    python benchmarks/gpu_sd15_iteration.py --batch 16 --steps 20  # a quicker look

On the device machine (no diffusers there), carry its wheel: here, in the repo root,
``echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12
--implementation cp --platform manylinux2014_x86_64 -d .whl diffusers`` and run with carry ``[".whl"]``:
``python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site:.
python3 benchmarks/gpu_sd15_iteration.py``.
"""

from __future__ import annotations

import argparse
import time

import torch


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="images per iteration (HERO: 64)")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps (HERO: 50)")
    ap.add_argument("--micro-batch", type=int, default=32, help="images per UNet call when sampling (x2 with CFG)")
    ap.add_argument("--train-micro-batch", type=int, default=8, help="trajectory steps per PPO backward (x2 with CFG)")
    ap.add_argument("--encoder-epochs", type=int, default=500)
    ap.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    ap.add_argument("--clip-oracle", action="store_true", help="also time clip-contrastive with a random ViT-L/14")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--reduce", type=int, default=1, choices=[1, 2, 4, 8],
                    help="width divisor of the model (8 + --device cpu: a smoke test of this script)")
    return ap.parse_args()


def sync_time() -> float:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def backward_timer() -> list[float]:
    """Wrap ``core.policy_gradient.backward`` (a module global, looked up at call time by ``ppo_update``);
    its wall time adds up in the returned one-element list."""
    from herobench.core import policy_gradient

    seconds = [0.0]
    plain_backward = policy_gradient.backward

    def timed_backward(loss, accelerator=None):
        t0 = sync_time()
        plain_backward(loss, accelerator)
        seconds[0] += sync_time() - t0

    policy_gradient.backward = timed_backward
    return seconds


def build(args, dtype: torch.dtype, times: dict[str, float]):
    """The random SD-1.5, its generator and HERO (LoRA, encoder), warmed up: ``(gen, method)``."""
    from herobench.core.generator import Generator, SamplerConfig
    from herobench.core.policy_gradient import make_optimizer, ppo_update
    from herobench.core.sd15 import random_sd15_components
    from herobench.methods.hero import HeroMethod

    t = sync_time()
    comps = random_sd15_components(args.seed, reduce=args.reduce, device=args.device, dtype=dtype)
    times["build random SD-1.5 on the device"] = sync_time() - t
    sampler = SamplerConfig(steps=args.steps, eta=1.0, guidance_scale=5.0, micro_batch=args.micro_batch)
    gen = Generator(comps, sampler, device=args.device, dtype=dtype)
    method = HeroMethod()
    t = sync_time()
    method.setup(gen, {"train_micro_batch": args.train_micro_batch, "encoder_epochs": args.encoder_epochs},
                 args.seed)
    times["LoRA + HERO setup"] = sync_time() - t
    # warm-up (cuDNN/cuBLAS kernel selection, lazy inits) on 2 images, with a zero learning rate
    t = sync_time()
    warm = gen.sample(["1 hand"] * 2, generator=torch.Generator().manual_seed(1))
    lora = method.optimizer.param_groups[0]["params"]
    ppo_update(gen, warm, torch.tensor([1.0, -1.0]), make_optimizer(lora, 0.0), method.pg,
               torch.Generator().manual_seed(1))
    times["warm-up (2 images, not part of the iteration)"] = sync_time() - t
    return gen, method


def iterate(args, gen, method, times: dict[str, float], backward_s: list[float]) -> dict:
    """One HERO iteration (sample -> simulated feedback -> learn -> next noise), its parts into ``times``."""
    from herobench.types import Feedback

    rng = torch.Generator().manual_seed(args.seed)
    it0 = sync_time()
    noise = method.init_noise(args.batch, gen.latent_shape, rng)
    gen.unet_seconds = 0.0
    t = sync_time()
    rollout = gen.sample(["1 hand"] * args.batch, init_noise=noise, generator=rng)
    times["sampling (50 DDIM steps + CFG + VAE decode)" if args.steps == 50 else "sampling"] = sync_time() - t
    unet_sampling = gen.unet_seconds
    t = sync_time()
    g = torch.Generator().manual_seed(args.seed + 1)
    good = torch.rand(args.batch, generator=g) < 0.5
    good[0] = True
    best = int(torch.nonzero(good)[torch.randint(int(good.sum()), (1,), generator=g)].item())
    feedback = Feedback(good=tuple(bool(x) for x in good), best=best)
    times["feedback (simulated)"] = sync_time() - t
    gen.unet_seconds, backward_s[0] = 0.0, 0.0
    t = sync_time()
    stats = method.learn(rollout, feedback, rng)
    learn_s = sync_time() - t
    times["HERO learn: encoder training + rewards"] = stats["seconds_representation"]
    times["HERO learn: PPO update"] = stats["seconds_policy_update"]
    times["HERO learn: rest (pool)"] = learn_s - stats["seconds_representation"] - stats["seconds_policy_update"]
    t = sync_time()
    method.init_noise(args.batch, gen.latent_shape, rng)
    times["next noise from the pool"] = sync_time() - t
    return {"rollout": rollout, "stats": stats, "iteration": sync_time() - it0, "unet_sampling": unet_sampling,
            "unet_only": unet_sampling + gen.unet_seconds + backward_s[0]}


def main() -> None:
    args = parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here (for a CPU smoke test: --device cpu --reduce 8 --batch 2 --steps 2)")
    dtype = getattr(torch, args.dtype) if cuda else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    backward_s = backward_timer()
    times: dict[str, float] = {}
    gen, method = build(args, dtype, times)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out = iterate(args, gen, method, times, backward_s)
    rollout, stats, iteration, unet_only = out["rollout"], out["stats"], out["iteration"], out["unet_only"]

    finite = bool(torch.isfinite(rollout.images).all() and torch.isfinite(rollout.log_probs).all())
    n_unet = sum(p.numel() for p in gen.components.unet.parameters())
    n_lora = sum(p.numel() for p in method.optimizer.param_groups[0]["params"])
    print(f"device      : {torch.cuda.get_device_name() if cuda else 'cpu'}, torch {torch.__version__}, "
          f"{str(dtype)[6:]} UNet/VAE/text, fp32 LoRA")
    size = "" if args.reduce == 1 else f" (widths / {args.reduce}: NOT the real size)"
    print(f"model       : random SD-1.5 architecture{size}, UNet {n_unet / 1e6:.1f} M params, "
          f"LoRA {n_lora / 1e6:.3f} M")
    print(f"iteration   : batch {args.batch}, {tuple(rollout.images.shape[1:])} images, latents {gen.latent_shape}, "
          f"{args.steps} DDIM steps, CFG 5.0, sampling micro-batch {args.micro_batch}, "
          f"PPO micro-batch {args.train_micro_batch}, encoder epochs {args.encoder_epochs}")
    for k, v in times.items():
        print(f"  {k:<50} {v:8.2f} s")
    print(f"  {'ONE HERO ITERATION (sample -> feedback -> learn)':<50} {iteration:8.2f} s")
    print(f"  {'UNet-only time (forward calls + PPO backward)':<50} {unet_only:8.2f} s   iteration / UNet-only = "
          f"{iteration / unet_only:.3f} (issue 30's target: <= 1.15)")
    sampling_s = times[next(k for k in times if k.startswith("sampling"))]
    print(f"  UNet forward share of sampling: {100 * out['unet_sampling'] / sampling_s:.1f} %;"
          f" PPO: {int(stats.get('pg_n_items', 0))} items, loss {stats.get('pg_loss', float('nan')):.3g}")
    peak = f"peak CUDA memory (iteration): {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB; " if cuda else ""
    print(f"{peak}finite images and log-probs: {finite}")
    if args.clip_oracle:  # last: a failure here cannot hide the iteration's figures
        oracle_s = time_clip_oracle(rollout.images, args.device, dtype)
        if oracle_s is not None:
            print(f"  clip-contrastive judge, random ViT-L/14, {args.batch} images: {oracle_s:.2f} s")
    print(f"projection: the hand task's 1,152 labels = {-(-1152 // args.batch)} iterations ≈ "
          f"{-(-1152 // args.batch) * iteration / 60:.1f} min (without evaluation)")


def time_clip_oracle(images: torch.Tensor, device: str, dtype: torch.dtype) -> float | None:
    """clip-contrastive (black-cat prompt set) with a random-weight ViT-L/14: seconds to judge ``images``."""
    try:
        import open_clip
    except ImportError:
        print("  (clip-contrastive timing skipped: open_clip is not installed)")
        return None
    from herobench.oracles.base import load_config
    from herobench.oracles.clip_scorer import ClipScorer
    from herobench.oracles.contrastive import ContrastiveConfig, ContrastiveOracle

    precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")
    model = open_clip.create_model("ViT-L-14-quickgelu", pretrained=None, device=device, precision=precision)
    scorer = ClipScorer(model, open_clip.get_tokenizer("ViT-L-14-quickgelu"), device)
    spec = load_config(ContrastiveConfig, "clip-contrastive").tasks["black-cat"]["default"]
    oracle = ContrastiveOracle(scorer, spec)
    t = time.perf_counter()
    oracle.judge(images, ["a black cat sitting inside a cardboard box"] * len(images))
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
