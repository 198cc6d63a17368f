"""Can the shared policy-gradient core move the GlyphWorld model at all? A positive control for issue 6.

HERO, DDPO and D3PO barely moved GlyphWorld's ``hand`` success in 1,152 labels
(results/hand-grid-h200/). This probe separates "the core cannot train this model" (a bug) from "this
signal is hard to learn here" (a property of the world): it runs the shared core -- ``Generator.sample``,
PEFT LoRA, ``normalize_advantages``, ``ppo_update`` with HERO's settings (lr 1e-3, 5 random timesteps,
clip 1e-4, 8 trajectories per optimizer step) -- on ``1 hand`` with one of two rewards:

* ``brightness``: the mean pixel value of each image, a dense reward any working policy gradient should
  raise within a few iterations;
* ``hand``: the exact oracle's good/bad label, the task's own signal (what DDPO gets from a rater).

After every iteration it samples the same held-out noise and prints both statistics (mean brightness and
hand success), so each reward's effect on both is visible. No rater, no ledger: this is a probe of the
core, not a benchmark run.

    python benchmarks/learnability_probe.py --reward brightness --iterations 8
    python benchmarks/learnability_probe.py --reward hand --iterations 8 --lr 1e-3
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reward", choices=["brightness", "hand"], default="brightness")
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eval-images", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3, help="AdamW lr (HERO: 1e-3)")
    ap.add_argument("--clip-range", type=float, default=1e-4, help="PPO ratio clip (HERO: 1e-4)")
    ap.add_argument("--timesteps", type=int, default=5, help="denoising steps trained per trajectory (HERO: 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from herobench.core.lora import add_lora
    from herobench.core.losses import normalize_advantages
    from herobench.core.policy_gradient import PGConfig, make_optimizer, ppo_update
    from herobench.glyphworld.calibrate import load_generator
    from herobench.oracles.glyphworld_exact import GlyphOracle
    from herobench.paths import glyphworld_model_dir

    gen = load_generator(glyphworld_model_dir())
    oracle = GlyphOracle("hand")
    opt = make_optimizer(add_lora(gen.components.unet, rank=4, seed=args.seed), args.lr)
    cfg = PGConfig(lr=args.lr, n_train_timesteps=args.timesteps, clip_range=args.clip_range, samples_per_step=8)
    prompt = "1 hand"
    eval_noise = torch.randn((args.eval_images, *gen.latent_shape), generator=torch.Generator().manual_seed(10_007))

    def rewards_of(images: torch.Tensor) -> torch.Tensor:
        if args.reward == "brightness":
            return images.mean(dim=(1, 2, 3))
        return torch.tensor([float(v.success) for v in oracle.judge(images, [prompt] * len(images))])

    @torch.no_grad()
    def evaluate() -> tuple[float, float]:
        images = gen.sample([prompt] * args.eval_images, init_noise=eval_noise,
                            generator=torch.Generator().manual_seed(10_009)).images
        success = sum(v.success for v in oracle.judge(images, [prompt] * len(images))) / len(images)
        return float(images.mean()), success

    print(f"reward {args.reward} | batch {args.batch} | lr {args.lr} | clip {args.clip_range} | "
          f"{args.timesteps} timesteps | seed {args.seed} | eval {args.eval_images} images")
    b, s = evaluate()
    print(f"iteration  0: eval brightness {b:.4f}  hand success {s:.3f}")
    for it in range(1, args.iterations + 1):
        t0 = time.perf_counter()
        rng = torch.Generator().manual_seed(args.seed * 1000 + it)
        ro = gen.sample([prompt] * args.batch, generator=rng)
        r = rewards_of(ro.images)
        stats = ppo_update(gen, ro, normalize_advantages(r), opt, cfg, rng)
        b, s = evaluate()
        print(f"iteration {it:2d}: batch reward {float(r.mean()):.4f}  eval brightness {b:.4f}  hand success "
              f"{s:.3f}  (kl {stats['approx_kl']:.2e}, clipfrac {stats['clipfrac']:.2f}, "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
