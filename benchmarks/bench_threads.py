"""Time one sampling batch and one PPO update under several thread settings, each in a fresh process
(``OMP_WAIT_POLICY`` is read once, when torch's OpenMP runtime starts, so it must be set before import).

    python benchmarks/bench_threads.py                     # 1 thread, 2 threads, 2 threads + PASSIVE
    python benchmarks/bench_threads.py --batch 16 --repeat 2

Prints one line per setting: seconds for sampling ``--batch`` images at the model card's sampler and for
one PPO update on them (5 timesteps), the best of ``--repeat``. Say what else ran on the machine beside
any number you keep: oversubscribed cores are where thread settings matter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from herobench.openmp import SHORT_SPIN  # no torch import: the parent process never loads torch

SETTINGS = {  # name -> environment
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "2 threads": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": ""},
    "2 threads, OMP_WAIT_POLICY=PASSIVE": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
    # libgomp's spin before a thread sleeps (GOMP_SPINCOUNT overrides the policy's: PASSIVE 0, unset 300000)
    f"2 threads, GOMP_SPINCOUNT={SHORT_SPIN} (herobench when idle)": {"OMP_NUM_THREADS": "2",
                                                                   "OMP_WAIT_POLICY": "PASSIVE",
                                                                   "GOMP_SPINCOUNT": SHORT_SPIN},
    "2 threads, GOMP_SPINCOUNT=100000": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE",
                                         "GOMP_SPINCOUNT": "100000"},
}


def child(batch: int, repeat: int) -> dict:
    """In the measured process: the best wall seconds of sampling and of one PPO update."""
    import torch

    from herobench.config import RunSettings
    from herobench.core.generator import Generator
    from herobench.core.lora import add_lora
    from herobench.core.losses import normalize_advantages
    from herobench.core.pipeline import load_components
    from herobench.core.policy_gradient import PGConfig, make_optimizer, ppo_update
    from herobench.harness.run_build import sampler_for
    from herobench.paths import glyphworld_model_dir

    model = glyphworld_model_dir()
    gen = Generator(load_components(model), sampler_for(RunSettings(task="hand", method="hero", budget_labels=0), model))
    params = add_lora(gen.components.unet, rank=4, seed=0)
    cfg = PGConfig(train_micro_batch=8, n_train_timesteps=5)
    opt = make_optimizer(params, 1e-5)
    prompts = ["1 hand"] * batch
    gen.sample(prompts[:2], generator=torch.Generator().manual_seed(1))  # warm-up, not timed
    best = {"sampling": float("inf"), "ppo_update": float("inf")}
    for r in range(repeat):
        t0 = time.perf_counter()
        ro = gen.sample(prompts, generator=torch.Generator().manual_seed(r))
        best["sampling"] = min(best["sampling"], time.perf_counter() - t0)
        adv = normalize_advantages(torch.rand(batch, generator=torch.Generator().manual_seed(r)))
        t0 = time.perf_counter()
        ppo_update(gen, ro, adv, opt, cfg, torch.Generator().manual_seed(r))
        best["ppo_update"] = min(best["ppo_update"], time.perf_counter() - t0)
    return {"threads": torch.get_num_threads(), **best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.batch, args.repeat)))
        return
    with open("/proc/loadavg") as fh:
        print(f"load average before: {fh.read().split()[0]} on {os.cpu_count()} cores")
    for name, env in SETTINGS.items():
        full = {**os.environ, **env}
        full = {k: v for k, v in full.items() if v != ""}  # "" = unset
        out = subprocess.run([sys.executable, __file__, "--child", "--batch", str(args.batch),
                              "--repeat", str(args.repeat)], env=full, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:<36} sampling {args.batch} images {r['sampling']:7.2f} s | one PPO update {r['ppo_update']:7.2f} s")


if __name__ == "__main__":
    main()
