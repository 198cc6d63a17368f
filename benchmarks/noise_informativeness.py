"""How much does the initial noise x_T decide a sample's verdict? (What HERO's feedback-guided generation
and D3PO's shared-noise pairs rely on.)

Samples ``--n`` images of a task's first train prompt from plain N(0, I) noise, judges them with the task's
GlyphWorld oracle, takes up to ``--noises`` good and bad initial noises, and re-samples ``--repeats`` images
from each, perturbed as HERO's feedback-guided generation does (``sqrt(1 - sigma^2) z + sigma eps``, fresh
per-step noise each time). Prints P(success) of the re-samples from good noises and from bad noises, with
Wilson 95 % intervals. Equal rates mean x_T carries no information about the verdict; HERO's pool of good
noises then produces no better batches than N(0, I).

    python benchmarks/noise_informativeness.py --task hand                 # the model card's sampler
    python benchmarks/noise_informativeness.py --task hand --eta 0.0 0.5 1.0
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from herobench.core.generator import Generator
from herobench.glyphworld.calibrate import calibrated_tasks, load_generator
from herobench.oracles.glyphworld_exact import GlyphOracle
from herobench.stats import wilson_interval

TASKS = calibrated_tasks()  # the task files' GlyphWorld prompt sets, in the exact oracle's task order


def success(gen: Generator, oracle: GlyphOracle, prompt: str, noise: torch.Tensor, seed: int) -> torch.Tensor:
    out = []
    for i in range(0, len(noise), 64):
        z = noise[i:i + 64]
        images = gen.sample([prompt] * len(z), init_noise=z, generator=torch.Generator().manual_seed(seed + i)).images
        out += [v.success for v in oracle.judge(images, [prompt] * len(z))]
    return torch.tensor(out)


def measure(gen: Generator, task: str, profile: str, n: int, noises: int, repeats: int, sigma: float,
            seed: int) -> dict:
    prompt = TASKS[task].train_prompts[0]
    oracle = GlyphOracle(task, profile)
    shape = gen.latent_shape
    x_t = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))
    base = success(gen, oracle, prompt, x_t, seed + 1)
    row = {"task": task, "eta": gen.sampler.eta, "n": n, "base": float(base.float().mean())}
    for name, pick in (("good", base), ("bad", ~base)):
        idx = torch.nonzero(pick).flatten()[:noises]
        if len(idx) == 0:
            row[name] = None
            continue
        eps = torch.randn((len(idx) * repeats, *shape), generator=torch.Generator().manual_seed(seed + 2))
        z = (1 - sigma**2) ** 0.5 * x_t[idx].repeat_interleave(repeats, 0) + sigma * eps
        ok = success(gen, oracle, prompt, z, seed + 3)
        lo, hi = wilson_interval(int(ok.sum()), len(ok))
        row[name] = {"noises": len(idx), "n": len(ok), "success": float(ok.float().mean()), "lo": lo, "hi": hi}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="hand", choices=list(TASKS))
    ap.add_argument("--profile", default=None, help="rater profile (mountain: green|snowy)")
    ap.add_argument("--model", type=Path, default=None, help="GlyphWorld model folder (default: the shipped one)")
    ap.add_argument("--eta", type=float, nargs="*", default=[None], help="DDIM eta (default: the model card's)")
    ap.add_argument("--n", type=int, default=128, help="first-round samples")
    ap.add_argument("--noises", type=int, default=16, help="good and bad noises re-sampled")
    ap.add_argument("--repeats", type=int, default=8, help="re-samples per noise")
    ap.add_argument("--sigma", type=float, default=0.1, help="perturbation (HERO: 0.1)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from herobench.paths import glyphworld_model_dir

    base_gen = load_generator(args.model or Path(glyphworld_model_dir()))
    profile = args.profile or TASKS[args.task].rater_profiles[0]
    print(f"{'task':<10} {'eta':>4} {'base':>6}   {'from good x_T':<28} {'from bad x_T':<28}")
    for eta in args.eta:
        sampler = base_gen.sampler if eta is None else dataclasses.replace(base_gen.sampler, eta=eta)
        gen = Generator(base_gen.components, sampler)
        row = measure(gen, args.task, profile, args.n, args.noises, args.repeats, args.sigma, args.seed)

        def cell(r):
            return "-" if r is None else f"{r['success']:.3f} [{r['lo']:.2f}, {r['hi']:.2f}] n={r['n']}"

        print(f"{args.task:<10} {row['eta']:>4.2f} {row['base']:>6.3f}   {cell(row['good']):<28} {cell(row['bad']):<28}",
              flush=True)


if __name__ == "__main__":
    main()
