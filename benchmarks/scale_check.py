"""Data-parallel training across processes, measured on one PPO and one DPO update (see docs/SCALE.md).

    accelerate launch --multi_gpu --num_processes 2 benchmarks/scale_check.py           # CPU: gloo
    accelerate launch --multi_gpu --num_processes 2 benchmarks/scale_check.py --model path/to/sd

(on a machine without CUDA, ``--multi_gpu`` starts the processes and ``Accelerator(cpu=True)`` joins them
over gloo; ``--cpu`` alone starts a single process.)

Every rank samples the same batch (same noise, same seed), then each update starts from the same LoRA
weights and optimizer (AdamW):

A. one process: the whole batch, no accelerator (the reference), on every rank;
B. data parallel: ``ppo_update`` / ``dpo_update(..., accelerator=acc)`` with the whole batch on every
   rank -- each rank computes its share of the items and the gradients are summed before the clip.

It prints how far the ranks' weights are apart after B, how far B is from A, and the wall time of each
(A runs on every rank at once, so on a machine with one core per process both are timed alike).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


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
    from herobench.core.policy_gradient import PGConfig, dpo_update, make_optimizer, ppo_update
    from herobench.methods.base import attach_lora

    acc = Accelerator(cpu=not torch.cuda.is_available())
    world = acc.num_processes
    if world < 2:
        sys.exit(f"run under `accelerate launch --multi_gpu --num_processes 2` (got {world} process)")
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
    adv = normalize_advantages(torch.linspace(0, 1, args.batch), clip=5.0)
    pairs = [(i, i + 1) for i in range(0, args.batch - 1, 2)]
    cfg = PGConfig(lr=args.lr, n_train_timesteps=args.steps, train_micro_batch=4)

    def ppo(opt, accelerator) -> None:
        ppo_update(gen, rollout, adv, opt, cfg, torch.Generator().manual_seed(3), accelerator=accelerator)

    def dpo(opt, accelerator) -> None:
        dpo_update(gen, rollout, pairs, opt, cfg, torch.Generator().manual_seed(3), accelerator=accelerator)

    def run(update, accelerator) -> tuple[torch.Tensor, float]:
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        opt = make_optimizer(params, args.lr)
        acc.wait_for_everyone()
        t0 = time.perf_counter()
        update(opt, accelerator)
        seconds = time.perf_counter() - t0
        return torch.cat([p.detach().reshape(-1) for p in params]).clone(), seconds

    def spread(w: torch.Tensor) -> float:  # max |w_rank - w_rank0| over ranks
        all_w = acc.gather(w[None].to(acc.device)).cpu()
        return float((all_w - all_w[0]).abs().max())

    initial = torch.cat([s.reshape(-1) for s in start])
    run(ppo, None)  # warm-up: the first UNet backward is slower
    lines = []
    for name, update in (("ppo", ppo), ("dpo", dpo)):
        w_a, t_a = run(update, None)
        w_b, t_b = run(update, acc)
        lines.append(f"{name}: A moved the LoRA weights by up to {float((w_a - initial).abs().max()):.3e} "
                     f"in {t_a:.2f} s; B: ranks differ by {spread(w_b):.3e}, rank 0 vs A "
                     f"{float((w_b - w_a).abs().max()):.3e}, {t_b:.2f} s")
    if acc.is_main_process:
        print(f"{world} processes, {acc.distributed_type}, backend "
              f"{torch.distributed.get_backend() if torch.distributed.is_initialized() else None}, "
              f"batch {args.batch}, {args.steps} steps (all trained), lr {args.lr}, AdamW")
        print("\n".join(lines))
    acc.wait_for_everyone()


if __name__ == "__main__":
    main()
