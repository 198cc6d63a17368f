"""Data-parallel updates over two real processes (gloo on 127.0.0.1, a real ``Accelerator``).

Each process is this file run as a script (``python tests/test_data_parallel.py RANK FOLDER``) with
the environment ``accelerate launch`` gives it; ``Accelerator(cpu=True)`` then joins the two as
``MULTI_CPU`` over gloo. Both load the same rollout, run the same updates with the accelerator and save
their LoRA weights; the test runs the same updates in one process without one and compares. The batch
(5 rows) and the item counts are odd, so the processes' shares differ, and one optimizer step leaves a
process with no item at all.

The updates use SGD (the weight change is linear in the averaged, clipped gradient), so the comparison
is tight; Adam's first step ``lr·g/(|g| + eps)`` would turn float noise in near-zero gradient entries
into weight changes of order ``lr``. Tolerance: 1e-4 of the largest weight change. Measured: 1e-6 to
2e-5 (the UNet sees micro-batches of other sizes, and the DDIM log-prob's gradient amplifies float32
noise in the predicted mean by about |mean| / σ); a wrong update (gradients not averaged, the loss
weighted by the process' own item count, other random steps) is off by the order of the change itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures_sd import tiny_sd_v_fixture  # noqa: F401

from herobench.core.generator import Generator, SamplerConfig
from herobench.core.lora import add_lora
from herobench.core.pipeline import load_components
from herobench.core.policy_gradient import PGConfig, dpo_update, ppo_update, process_share
from herobench.methods.baselines import DreamBoothMethod
from herobench.types import Feedback

WORLD = 2
STEPS = 6
PROMPTS = ["1 hand", "a rose", "1 hand", "a cat", "a rose"]
ADVANTAGES = torch.tensor([1.0, -1.0, 0.5, -0.25, 0.0])
PAIRS = [(0, 1), (2, 3), (4, 1)]
GOOD = (True, True, False, True, True)


def _generator(model_dir: Path) -> Generator:
    return Generator(load_components(model_dir), SamplerConfig(steps=STEPS, guidance_scale=2.0))


def _flat(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


def run_updates(model_dir: Path, rollout, accelerator) -> dict[str, tuple[torch.Tensor, torch.Tensor, dict]]:
    """Every update: ``{case: (LoRA weights before, after, stats)}``."""
    gen = _generator(model_dir)
    params = add_lora(gen.components.unet, seed=0)
    start = [p.detach().clone() for p in params]

    def sgd() -> torch.optim.Optimizer:
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        return torch.optim.SGD(params, lr=0.05)

    def rng() -> torch.Generator:
        return torch.Generator().manual_seed(3)

    out = {}
    # 15 items per step (8/7); two inner epochs: the second draws its steps after the first's
    cfg = PGConfig(n_train_timesteps=3, train_micro_batch=2, inner_epochs=2)
    stats = ppo_update(gen, rollout, ADVANTAGES, sgd(), cfg, rng(), accelerator=accelerator)
    out["ppo"] = (_flat(start), _flat(params), stats)
    # shuffled groups of 2, 2, 1 trajectories, one step each: the last leaves process 1 nothing
    cfg = PGConfig(n_train_timesteps=1, samples_per_step=2, inner_epochs=2)
    stats = ppo_update(gen, rollout, ADVANTAGES, sgd(), cfg, rng(), accelerator=accelerator)
    out["ppo_groups"] = (_flat(start), _flat(params), stats)
    cfg = PGConfig(n_train_timesteps=3, train_micro_batch=4, inner_epochs=2)  # 9 items (5/4)
    stats = dpo_update(gen, rollout, PAIRS, sgd(), cfg, rng(), accelerator=accelerator)
    out["dpo"] = (_flat(start), _flat(params), stats)

    # DreamBooth: 4 good images, batches of 3 (2/1); its own generator, LoRA and (replaced) optimizer
    method = DreamBoothMethod()
    method.setup(_generator(model_dir), {"steps_per_iteration": 3, "train_batch": 3}, seed=0,
                 accelerator=accelerator)
    lora = [p for g in method.optimizer.param_groups for p in g["params"]]
    method.optimizer = torch.optim.SGD(lora, lr=0.05)
    before = _flat(lora)
    stats = method.learn(rollout, Feedback(good=GOOD), rng())
    out["dreambooth"] = (before, _flat(lora), stats)
    return out


def _worker(rank: int, folder: Path) -> None:
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    assert acc.num_processes == WORLD and torch.distributed.get_backend() == "gloo"
    case = torch.load(folder / "case.pt", weights_only=False)
    torch.save(run_updates(case["model"], case["rollout"], acc), folder / f"rank{rank}.pt")
    acc.wait_for_everyone()
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, folder: Path) -> None:
    """Run ``python script RANK FOLDER`` as ``WORLD`` processes with the environment ``accelerate launch``
    gives them (gloo rendezvous on 127.0.0.1); fails with every process' output if one fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "WORLD_SIZE": str(WORLD), "LOCAL_WORLD_SIZE": str(WORLD)}
    procs = [
        subprocess.Popen([sys.executable, script, str(rank), str(folder)],
                         env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(WORLD)
    ]
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(f"rank {r}:\n{log}" for r, log in enumerate(logs))


def test_process_share_partitions_the_items():
    class Fake:
        def __init__(self, rank, world):
            self.process_index, self.num_processes = rank, world

    assert torch.equal(process_share(7), torch.arange(7))
    for world in (2, 3):
        for n in (0, 1, 2, 5, 8):
            parts = [process_share(n, Fake(r, world)) for r in range(world)]
            assert torch.equal(torch.cat(parts), torch.arange(n))  # contiguous, in rank order, each once
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_sampling_a_share_of_the_rows_gives_those_rows_of_the_whole_batch(tiny_sd_v_dir):
    gen = _generator(tiny_sd_v_dir)
    noise = torch.randn(len(PROMPTS), *gen.latent_shape, generator=torch.Generator().manual_seed(1))
    whole = gen.sample(PROMPTS, init_noise=noise, generator=torch.Generator().manual_seed(2))
    shares = [gen.sample(PROMPTS, init_noise=noise, generator=torch.Generator().manual_seed(2), rows=rows)
              for rows in ([0, 1, 2], [3, 4])]
    assert shares[0].prompts + shares[1].prompts == PROMPTS
    for field in ("latents", "log_probs", "prompt_embeds", "images"):
        joined = torch.cat([getattr(share, field) for share in shares])
        torch.testing.assert_close(joined, getattr(whole, field), rtol=1e-5, atol=1e-5)
    # (sampling the sub-batch on its own draws other step noise: its first step is O(1) off)
    alone = gen.sample(PROMPTS[3:], init_noise=noise[3:], generator=torch.Generator().manual_seed(2))
    assert float((alone.latents[:, 1] - whole.latents[3:, 1]).abs().max()) > 0.1


@pytest.mark.slow  # two processes importing torch + diffusers: ~25 s on a loaded 2-core machine
def test_two_processes_take_the_one_process_step(tiny_sd_v_dir, tmp_path):
    gen = _generator(tiny_sd_v_dir)
    noise = torch.randn(len(PROMPTS), *gen.latent_shape, generator=torch.Generator().manual_seed(1))
    rollout = gen.sample(PROMPTS, init_noise=noise, generator=torch.Generator().manual_seed(2))
    torch.save({"model": tiny_sd_v_dir, "rollout": rollout}, tmp_path / "case.pt")
    launch(__file__, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD)]
    ref = run_updates(tiny_sd_v_dir, rollout, None)
    for case in ("ppo", "ppo_groups", "dpo", "dreambooth"):
        start, w_ref, s_ref = ref[case]
        (start0, w0, s0), (_, w1, s1) = ranks[0][case], ranks[1][case]
        assert torch.equal(start0, start), case
        assert torch.equal(w0, w1) and s0 == s1, case  # the processes agree bit for bit
        moved = float((w_ref - start).abs().max())
        err = float((w0 - w_ref).abs().max())
        print(f"{case}: weights moved {moved:.2e}, two processes vs one {err:.2e}")
        assert moved > 1e-5, case
        assert err <= 1e-4 * moved, f"{case}: {err:.2e} off the one-process weights (moved {moved:.2e})"
        for key, value in s_ref.items():  # losses, KL, grad norm: over the whole batch
            # the true-KL diagnostics are measured after the step, on weights that differ by float noise
            tol = 1e-3 if key.startswith("kl_true") else 1e-5
            for got, want in zip(*(v if isinstance(v, list) else [v] for v in (s0[key], value)), strict=True):
                assert abs(got - want) <= tol * max(1.0, abs(want)), (case, key, got, want)


def test_leave_process_group_destroys_it_once(tmp_path):
    """``accelerator_for`` registers ``leave_process_group`` at exit: a process left with its gloo group at
    interpreter teardown may abort (``terminate called without an active exception``) after a finished run."""
    import torch.distributed as dist

    from herobench.harness.parallel import leave_process_group

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    leave_process_group()
    assert not dist.is_initialized()
    leave_process_group()  # idempotent: a second call (a second registration, a user's own call) does nothing


if __name__ == "__main__":
    _worker(int(sys.argv[1]), Path(sys.argv[2]))
