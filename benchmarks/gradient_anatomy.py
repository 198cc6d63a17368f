"""Where does the policy gradient of a GlyphWorld task land? Its split over the denoising steps, at the
pretrained point (issue 22; the audit in which it was first measured is quoted in the model card's history).

For ``--batches`` independent 64-image batches of the task's train prompts, sampled from N(0, I) at the model
card's sampler and judged by the exact oracle, the policy-gradient surrogate of DDPO/HERO with the 0/1 label
as reward (batch-normalised advantages, HERO's LoRA, CFG as sampled, per-element-mean log-prob) is
differentiated *one denoising step at a time*: ``g_k = ∇ mean_b[-A_b · log π(x_{k+1} | x_k) / D]``. It prints,
per step, the share of ``Σ_k ‖g_k‖²`` that step carries, and ends with one JSON line:

* ``high_noise_share``: the share of the squared norm from the first half of the steps (the x_T side);
* ``last2_share``: from the last two steps;
* ``cos_between_batches``: mean pairwise cosine of the whole gradients ``G = Σ_k g_k`` of independent batches
  (how reproducible the direction one batch of binary labels gives is);
* ``cos_pg_sft``: mean cosine of ``G`` with the DreamBooth-style denoising-loss gradient on the same batch's
  good images (the direction supervised finetuning takes); ``cos_pg_sft_first_half`` the same for the first
  half of the steps only; the ``*_excl_last3`` keys the same without the last three steps.

    python benchmarks/gradient_anatomy.py --task blue-rose --json
    python benchmarks/gradient_anatomy.py --task hand --model DIR --batches 3

About 2 minutes per batch at 50 steps on 2 CPU threads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import torch

from herobench.core.losses import normalize_advantages
from herobench.glyphworld.calibrate import calibrated_tasks, load_generator
from herobench.methods.base import attach_lora, cycle_prompts
from herobench.methods.baselines import denoising_loss
from herobench.methods.hero import HeroOptions
from herobench.oracles.glyphworld_exact import GlyphOracle

TASKS = calibrated_tasks()  # the task files' GlyphWorld prompt sets, in the exact oracle's task order


def flat_grad(params) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).clone() for p in params])


def zero(params) -> None:
    for p in params:
        p.grad = None


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = a.norm(), b.norm()
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def per_step_gradients(gen, rollout, advantages: torch.Tensor, params, micro: int = 32) -> torch.Tensor:
    """``T×P``: the PG surrogate's gradient from each denoising step alone (mean over the batch)."""
    n, n_steps = rollout.log_probs.shape
    dim = rollout.latents[0, 0].numel()
    grads = []
    for k in range(n_steps):
        zero(params)
        for rows in torch.arange(n).split(micro):
            log_prob = gen.step_log_prob(rollout, torch.tensor([k]), batch_idx=rows, use_cfg=True)[:, 0]
            loss = -(advantages[rows] * log_prob / dim).sum() / n
            loss.backward()
        grads.append(flat_grad(params))
    zero(params)
    return torch.stack(grads)


def sft_gradient(gen, rollout, good: torch.Tensor, params, seed: int, draws: int = 4) -> torch.Tensor:
    """The DreamBooth-style denoising loss' gradient on the batch's good images (``draws`` noise draws each)."""
    zero(params)
    idx = torch.nonzero(good).flatten()
    x0 = rollout.latents[idx, -1].float()
    emb = rollout.prompt_embeds[idx]
    rng = torch.Generator().manual_seed(seed)
    for _ in range(draws):
        loss = denoising_loss(gen.components.unet, gen.scheduler, x0, emb, rng)
        (loss / draws).backward()
    out = flat_grad(params)
    zero(params)
    return out


def analytic_weights(scheduler, eta: float) -> torch.Tensor:
    """Per step the squared log-prob gradient factor ``(|∂μ/∂out| / σ_t)²`` of the sampler alone (autograd
    through ``core.ddim.ddim_step_mean``), normalised to shares: what the gradient's split would be if the
    UNet's output Jacobian did not depend on t (the audit's analytic estimate)."""
    from herobench.core.ddim import ddim_step_mean

    r = []
    for t in scheduler.timesteps:
        out = torch.zeros(1, 1, 1, 1, dtype=torch.float64, requires_grad=True)
        mean, std = ddim_step_mean(scheduler, out, t, torch.zeros(1, 1, 1, 1, dtype=torch.float64), eta)
        (grad,) = torch.autograd.grad(mean.sum(), out)
        r.append((float(grad) / float(std)) ** 2)
    w = torch.tensor(r, dtype=torch.float64)
    return w / w.sum()


def anatomy(model: Path | None, task: str, profile: str | None, batches: int, batch_size: int, seed: int,
            lora_targets: tuple[str, ...] | None = None) -> dict:
    from herobench.paths import glyphworld_model_dir

    model_dir = Path(model or glyphworld_model_dir())
    gen = load_generator(model_dir)
    spec = TASKS[task]
    profile = profile or spec.rater_profiles[0]
    oracle = GlyphOracle(task, profile)
    o = HeroOptions()
    targets = tuple(lora_targets or o.lora_targets)
    attach_lora(gen, o.lora_rank, o.lr, seed, targets)
    params = [p for p in gen.components.unet.parameters() if p.requires_grad]
    prompts = cycle_prompts(spec.train_prompts, batch_size)
    steps, sfts, good_rates = [], [], []
    for b in range(batches):
        rollout = gen.sample(prompts, generator=torch.Generator().manual_seed(seed * 1000 + b))
        good = torch.tensor([v.success for v in oracle.judge(rollout.images, prompts)])
        good_rates.append(float(good.float().mean()))
        if good.all() or not good.any():
            raise SystemExit(f"batch {b}: every label equal ({int(good.sum())} good): no policy gradient")
        adv = normalize_advantages(good.float())
        steps.append(per_step_gradients(gen, rollout, adv, params))
        sfts.append(sft_gradient(gen, rollout, good, params, seed * 1000 + b))
    n_steps = steps[0].shape[0]
    half = n_steps // 2
    sq = torch.stack([g.pow(2).sum(1) for g in steps])  # batches×T
    share = (sq / sq.sum(1, keepdim=True)).mean(0)
    whole = [g.sum(0) for g in steps]
    first = [g[:half].sum(0) for g in steps]
    cut = [g[:-3].sum(0) for g in steps]
    pairs = list(itertools.combinations(range(batches), 2))
    timesteps = gen.scheduler.timesteps.tolist()
    analytic = analytic_weights(gen.scheduler, gen.sampler.eta)
    return {
        "task": task,
        "profile": profile,
        "model": str(model_dir),
        "prediction_type": gen.scheduler.config.prediction_type,
        "sampler": {"steps": gen.sampler.steps, "eta": gen.sampler.eta, "guidance_scale": gen.sampler.guidance_scale},
        "lora_targets": list(targets),
        "batches": batches,
        "batch_size": batch_size,
        "good_rate": sum(good_rates) / len(good_rates),
        "per_step": [{"step": k, "t": int(timesteps[k]), "share": float(share[k]),
                      "analytic_share": float(analytic[k]),
                      "norm": float(torch.stack([g[k].norm() for g in steps]).mean())} for k in range(n_steps)],
        "high_noise_share": float(share[:half].sum()),
        # the sampler's own split (t-independent Jacobian); measured / analytic = how the LoRA's output
        # Jacobian grows with t
        "analytic_high_noise_share": float(analytic[:half].sum()),
        "last2_share": float(share[-2:].sum()),
        "cos_between_batches": sum(cosine(whole[i], whole[j]) for i, j in pairs) / max(1, len(pairs)),
        "cos_between_batches_first_half": sum(cosine(first[i], first[j]) for i, j in pairs) / max(1, len(pairs)),
        "cos_sft_between_batches": sum(cosine(sfts[i], sfts[j]) for i, j in pairs) / max(1, len(pairs)),
        "cos_pg_sft": sum(cosine(w, s) for w, s in zip(whole, sfts)) / batches,
        "cos_pg_sft_first_half": sum(cosine(f, s) for f, s in zip(first, sfts)) / batches,
        # the same without the last three steps (what an adapted variant that does not train them would follow)
        "high_noise_share_excl_last3": float(share[:half].sum() / share[:-3].sum()),
        "cos_between_batches_excl_last3": sum(cosine(cut[i], cut[j]) for i, j in pairs) / max(1, len(pairs)),
        "cos_pg_sft_excl_last3": sum(cosine(c, s) for c, s in zip(cut, sfts)) / batches,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="blue-rose", choices=list(TASKS))
    ap.add_argument("--profile", default=None, help="rater profile (mountain: green|snowy)")
    ap.add_argument("--model", type=Path, default=None, help="GlyphWorld model folder (default: the shipped one)")
    ap.add_argument("--batches", type=int, default=3, help="independent batches (>= 2 for the between-batch cosine)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lora-targets", default=None,
                    help="comma-separated UNet module-name suffixes for the LoRA (default HERO's attention "
                         "projections; e.g. add conv1,conv2 to adapt the resnets too)")
    ap.add_argument("--json", action="store_true", help="end with the result as one JSON line")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    targets = tuple(t for t in args.lora_targets.split(",") if t) if args.lora_targets else None
    r = anatomy(args.model, args.task, args.profile, args.batches, args.batch_size, args.seed, targets)
    print(f"{r['task']} ({r['prediction_type']}, {r['sampler']['steps']} steps, eta {r['sampler']['eta']}, "
          f"CFG {r['sampler']['guidance_scale']}), {r['batches']} batches of {r['batch_size']}, "
          f"good rate {r['good_rate']:.3f}")
    print(f"{'step':>4} {'t':>5} {'share':>7} {'analytic':>8} {'ratio':>6} {'norm':>10}")
    for row in r["per_step"]:
        ratio = row["share"] / row["analytic_share"] if row["analytic_share"] > 0 else math.nan
        print(f"{row['step']:>4} {row['t']:>5} {row['share']:>7.3f} {row['analytic_share']:>8.3f} {ratio:>6.2f} "
              f"{row['norm']:>10.3e}")
    for key in ("high_noise_share", "analytic_high_noise_share", "last2_share", "cos_between_batches", "cos_between_batches_first_half",
                "cos_sft_between_batches", "cos_pg_sft", "cos_pg_sft_first_half", "high_noise_share_excl_last3",
                "cos_between_batches_excl_last3", "cos_pg_sft_excl_last3"):
        value = r[key]
        print(f"{key:<32} {value:.3f}" if math.isfinite(value) else f"{key:<32} nan")
    if args.json:
        print(json.dumps({k: v for k, v in r.items() if k != "per_step"} | {"per_step_share": [
            round(row["share"], 5) for row in r["per_step"]], "per_step_analytic_share": [
            round(row["analytic_share"], 5) for row in r["per_step"]]}))


if __name__ == "__main__":
    main()
