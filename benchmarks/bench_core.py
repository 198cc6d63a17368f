"""Time the shared core: sampling one batch, one PPO update and one DPO update on it.

Prints wall times and the fraction of each spent inside UNet forward calls.

    python benchmarks/bench_core.py                       # GlyphWorld model if present, else a tiny random SD
    python benchmarks/bench_core.py --model path/to/sd --batch 64 --steps 50 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def default_model(tmp: str) -> tuple[Path, str]:
    """The GlyphWorld model when it exists, else a tiny random SD built in ``tmp``."""
    from herobench.errors import HerobenchError

    try:
        from herobench.paths import glyphworld_model_dir

        path = Path(glyphworld_model_dir(must_exist=False))
        if (path / "model_index.json").is_file():
            return path, "GlyphWorld model"
        why = f"no GlyphWorld model at {path}"
    except (ImportError, HerobenchError) as e:
        why = str(e)
    sys.path.insert(0, str(REPO / "tests"))
    from tinysd import build_tiny_sd

    return build_tiny_sd(tmp), f"TINY RANDOM SD (fallback: {why})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="local diffusers SD folder")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default=None,
        help="model dtype (default: float16 on cuda, float32 on cpu)",
    )
    ap.add_argument("--micro-batch", type=int, default=64, help="sampling micro-batch")
    ap.add_argument("--train-micro-batch", type=int, default=8)
    ap.add_argument("--train-timesteps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from herobench.core.generator import Generator, SamplerConfig
    from herobench.core.lora import add_lora
    from herobench.core.losses import normalize_advantages
    from herobench.core.pipeline import load_components
    from herobench.core.policy_gradient import PGConfig, dpo_update, make_optimizer, ppo_update

    dtype = getattr(torch, args.dtype or ("float16" if args.device.startswith("cuda") else "float32"))
    with tempfile.TemporaryDirectory() as tmp:
        path, what = (args.model, "given model") if args.model else default_model(tmp)
        comps = load_components(path, device=args.device, dtype=dtype)
    sampler = SamplerConfig(steps=args.steps, micro_batch=args.micro_batch)
    gen = Generator(comps, sampler, device=args.device, dtype=dtype)
    params = add_lora(comps.unet, rank=4, seed=args.seed)
    cfg = PGConfig(train_micro_batch=args.train_micro_batch, n_train_timesteps=args.train_timesteps)
    opt = make_optimizer(params, cfg.lr)
    prompts = ["photo of one blue rose in a vase"] * args.batch
    rng = torch.Generator().manual_seed(args.seed)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    # warm-up (kernel selection, lazy init) on a small batch, not timed
    warm = gen.sample(prompts[:2], generator=torch.Generator().manual_seed(1))
    ppo_update(
        gen,
        warm,
        torch.tensor([1.0, -1.0]),
        make_optimizer(params, 0.0),
        cfg,
        torch.Generator().manual_seed(1),
    )

    def timed(fn):
        gen.unet_seconds = 0.0
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        wall = time.perf_counter() - start
        return out, wall, gen.unet_seconds / wall

    rollout, t_sample, f_sample = timed(lambda: gen.sample(prompts, generator=rng))
    rewards = torch.rand(args.batch, generator=rng)
    adv = normalize_advantages(rewards)
    ppo_stats, t_ppo, f_ppo = timed(lambda: ppo_update(gen, rollout, adv, opt, cfg, rng))
    pairs = [(i, i + 1) for i in range(0, args.batch - 1, 2)]
    dpo_stats, t_dpo, f_dpo = timed(lambda: dpo_update(gen, rollout, pairs, opt, cfg, rng))

    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"model        : {what}: {path}")
    print(f"device       : {dev}, {dtype}, torch threads {torch.get_num_threads()}")
    print(
        f"latents      : {gen.latent_shape}, images {tuple(rollout.images.shape[1:])}, "
        f"batch {args.batch}, {args.steps} DDIM steps, CFG {sampler.guidance_scale}"
    )
    print(
        f"sampling     : {t_sample:8.3f} s  ({1e3 * t_sample / args.batch:.1f} ms/image)  UNet {100 * f_sample:5.1f}% of wall"
    )
    print(
        f"ppo_update   : {t_ppo:8.3f} s  ({int(ppo_stats['n_items'])} items, micro-batch {cfg.train_micro_batch})"
        f"  UNet fwd {100 * f_ppo:5.1f}% of wall"
    )
    print(
        f"dpo_update   : {t_dpo:8.3f} s  ({len(pairs)} pairs × {cfg.n_train_timesteps} steps)"
        f"  UNet fwd {100 * f_dpo:5.1f}% of wall"
    )
    if args.device.startswith("cuda"):
        print(f"peak memory  : {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
