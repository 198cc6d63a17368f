"""Data parallelism for a run: several processes (``accelerate launch --num_processes N``) share each
batch's sampling and every update; the main process alone rates, writes the ledger and the run folder.

With one process every helper here is the identity (no accelerate import, no communication), so a run
without ``accelerate launch`` is exactly the single-process run. tests/test_data_parallel.py and
tests/test_data_parallel_run.py check that N processes give the one-process rows up to float noise.
"""

from __future__ import annotations

import atexit
import os

import torch

from herobench.core.generator import Generator
from herobench.core.policy_gradient import process_share, process_shares
from herobench.types import Rollout


def accelerator_for(device: str):
    """An ``Accelerator`` when launched as several processes (``accelerate launch --multi_gpu
    --num_processes N``; on a machine without CUDA, or with ``device = "cpu"``, they join over gloo),
    else None: one process runs exactly as without accelerate."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    from accelerate import Accelerator

    acc = Accelerator(cpu=torch.device(device).type == "cpu" or not torch.cuda.is_available())
    atexit.unregister(leave_process_group)  # a process that prepares several runs registers it once
    atexit.register(leave_process_group)
    return acc


def leave_process_group() -> None:
    """Destroy the process group while the interpreter is still whole. Left to interpreter teardown,
    gloo's worker threads may still hold tensors whose release needs the GIL, and the process ends in
    ``terminate called without an active exception`` (SIGABRT, a non-zero exit after a finished run;
    pytorch/pytorch#190489). Idempotent."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def from_main(obj, acc):
    """``obj`` as the main process has it, on every process (unchanged with one process)."""
    if acc is None:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj])[0]


def gather_rows(x: torch.Tensor, n: int, acc) -> torch.Tensor:
    """The ``n`` rows of a batch from each process' ``process_share`` of them, on every process."""
    sizes = [len(share) for share in process_shares(n, acc)]
    m = max(sizes)
    padded = torch.cat([x, x.new_zeros((m - len(x), *x.shape[1:]))]).to(acc.device)
    everything = acc.gather(padded)  # (processes · m) rows, in process order
    keep = torch.cat([torch.arange(r * m, r * m + k) for r, k in enumerate(sizes)])
    return everything[keep.to(everything.device)].to(x.device)


def sample_batch(gen: Generator, acc, prompts: list[str], noise: torch.Tensor,
                 generator: torch.Generator) -> Rollout:
    """The batch, on every process: sampled whole, or (several processes) each samples its share of
    the rows -- with the whole batch's noise, so each row is the one-process row up to float noise --
    and all gather the rest."""
    n = len(prompts)
    if acc is None or n < acc.num_processes:
        return gen.sample(prompts, init_noise=noise, generator=generator)
    part = gen.sample(prompts, init_noise=noise, generator=generator, rows=process_share(n, acc))
    fields = ("latents", "log_probs", "prompt_embeds", "negative_embeds", "images")
    return Rollout(prompts=list(prompts), timesteps=part.timesteps,
                   **{f: gather_rows(getattr(part, f), n, acc) for f in fields})
