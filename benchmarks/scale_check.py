"""What two-process data-parallel training does today, measured on one PPO update (see docs/SCALE.md).

    accelerate launch --multi_gpu --num_processes 2 benchmarks/scale_check.py           # CPU: gloo
    accelerate launch --multi_gpu --num_processes 2 benchmarks/scale_check.py --model path/to/sd

(on a machine without CUDA, ``--multi_gpu`` starts the processes and ``Accelerator(cpu=True)`` joins them
over gloo; ``--cpu`` alone starts a single process.)

Every rank samples the same batch (same noise, same seed), then three updates start from the same
LoRA weights:

A. one process, the whole batch, no accelerator (the reference);
B. today's path: each rank updates on its half of the batch with ``ppo_update(..., accelerator=acc)``;
C. as B, but the LoRA gradients are averaged across ranks before clipping (what a data-parallel update
   needs; done here by a small accelerator wrapper).

It prints how far the ranks' weights are apart after B and C, and how far C is from A. Uses every
denoising step (``n_train_timesteps = T``) so that the halves see the same (row, step) items as A.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


class GradAveraging:
    """Duck-typed accelerator for ``ppo_update``: plain backward, then the LoRA gradients are averaged
    across processes before the gradient-norm clip (equal halves: the mean of per-rank means is the
    full-batch mean)."""

    gradient_accumulation_steps = 1

    def __init__(self, world: int):
        self.world = world

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, params, max_norm: float):
        for p in params:
            torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)
            p.grad /= self.world
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="local SD folder (default: a tiny random SD)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-2)
    args = ap.parse_args()

    from accelerate import Accelerator

    from herobench.core.generator import Generator, SamplerConfig
    from herobench.core.lora import lora_parameters
    from herobench.core.losses import normalize_advantages
    from herobench.core.pipeline import load_components
    from herobench.core.policy_gradient import PGConfig, make_optimizer, ppo_update
    from herobench.methods.base import attach_lora

    acc = Accelerator(cpu=not torch.cuda.is_available())
    rank, world = acc.process_index, acc.num_processes
    if world < 2 or args.batch % world:
        sys.exit(f"run under `accelerate launch --multi_gpu --num_processes 2` with --batch divisible by it "
                 f"(got {world} process(es), batch {args.batch})")
    model = args.model
    if model is None:
        sys.path.insert(0, str(REPO / "tests"))
        from tinysd import build_tiny_sd

        folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"herobench-scale-{os.getuid()}"
        with acc.main_process_first():  # rank 0 writes the model, the others then read it
            model = build_tiny_sd(folder, prediction_type="v_prediction", seed=3)

    gen = Generator(load_components(model, device=str(acc.device)),
                    SamplerConfig(steps=args.steps, guidance_scale=2.0), device=acc.device)
    attach_lora(gen, 4, args.lr, seed=0)
    params = lora_parameters(gen.components.unet)
    start = [p.detach().clone() for p in params]
    prompts = ["1 hand", "a rose"] * (args.batch // 2)
    noise = torch.randn(args.batch, *gen.latent_shape, generator=torch.Generator().manual_seed(1))
    rollout = gen.sample(prompts, init_noise=noise, generator=torch.Generator().manual_seed(2))
    rewards = torch.linspace(0, 1, args.batch)
    adv = normalize_advantages(rewards, clip=5.0)
    cfg = PGConfig(lr=args.lr, n_train_timesteps=args.steps, train_micro_batch=4)
    half = torch.arange(args.batch).chunk(world)[rank]

    def reset() -> torch.optim.Optimizer:
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        return make_optimizer(params, args.lr)

    def flat() -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in params]).clone()

    def spread(w: torch.Tensor) -> float:  # max |w_rank - w_rank0| over ranks
        all_w = acc.gather(w[None].to(acc.device)).cpu()
        return float((all_w - all_w[0]).abs().max())

    ppo_update(gen, rollout, adv, reset(), cfg, torch.Generator().manual_seed(3))
    w_a = flat()
    ppo_update(gen, rollout.select(half), adv[half], reset(), cfg, torch.Generator().manual_seed(3), accelerator=acc)
    w_b = flat()
    ppo_update(gen, rollout.select(half), adv[half], reset(), cfg, torch.Generator().manual_seed(3),
               accelerator=GradAveraging(world))
    w_c = flat()
    moved = float((w_a - torch.cat([s.reshape(-1) for s in start])).abs().max())
    rows = {
        "B spread": spread(w_b), "B vs A": float((w_b - w_a).abs().max()),
        "C spread": spread(w_c), "C vs A": float((w_c - w_a).abs().max()),
    }
    if acc.is_main_process:
        print(f"{world} processes, {acc.distributed_type}, backend "
              f"{torch.distributed.get_backend() if torch.distributed.is_initialized() else None}, "
              f"batch {args.batch} ({args.batch // world} per rank), {args.steps} steps, lr {args.lr}")
        print(f"largest LoRA weight change of the reference update A: {moved:.3e}")
        print(f"B  ppo_update(accelerator=Accelerator) on halves: ranks differ by {rows['B spread']:.3e}, "
              f"rank 0 vs A {rows['B vs A']:.3e}")
        print(f"C  + gradients averaged across ranks:             ranks differ by {rows['C spread']:.3e}, "
              f"rank 0 vs A {rows['C vs A']:.3e}")
    acc.wait_for_everyone()


if __name__ == "__main__":
    main()
