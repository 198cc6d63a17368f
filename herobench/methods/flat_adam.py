"""Many steps of a CPU ``torch.optim.Adam`` on one flat tensor: the same numbers, a fraction of the overhead.

HERO trains its small encoder and head for 500 Adam steps per iteration (``hero_repr._fit_triplets``). On
a CPU, torch's default Adam runs its single-tensor loop (``torch.optim.adam._single_tensor_adam``): about
ten small operations per parameter tensor plus the optimizer's bookkeeping, for 14 tensors of 49 k numbers
in all -- about a sixth of the step's time (docs/PERFORMANCE.md). :func:`flat_adam` runs the same update on
one flat buffer: a flat copy of the parameters and two flat moments, each step the loop's eight operations
once, then each parameter copied from its slice (an exact copy). Every operation is element-wise and runs in
the same order per element as torch's loop, so parameters and moments are bit-identical to
``optimizer.step()``'s (``tests/test_hero_encoder_speed.py`` checks it over hundreds of steps). Adapted from torch 2.14's
``_single_tensor_adam`` (the non-capturable, non-differentiable branch); what changed: one tensor for all.

It applies only where torch itself would run that loop and where it pays: one parameter group of contiguous
float32 CPU tensors of at most ``MAX_NUMEL`` numbers in all (GlyphWorld's scaled encoder and head, not SD-1.5's
2048-d ones), no AMSGrad, no weight decay, not maximizing, ``foreach`` and ``fused`` not asked for, every state
at the same step. Anywhere else (a GPU, where torch's default is the multi-tensor loop) it hands back the
optimizer's own ``step``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# Above this many numbers the flat copies (gradients in, parameters out) cost more than the per-tensor overhead
# they save: on SD-1.5's encoder and head (11 M numbers) a flat step took 1.35x torch's, on GlyphWorld's (49 k)
# 0.77x
# (benchmarks/bench_encoder_step.py, one CPU thread).
MAX_NUMEL = 1 << 17


def _applies(optimizer: torch.optim.Optimizer) -> bool:
    """Would ``optimizer.step()`` run torch's single-tensor Adam loop with the options :func:`flat_adam` copies?"""
    if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
        return False
    g = optimizer.param_groups[0]
    plain = {"amsgrad": False, "maximize": False, "capturable": False, "differentiable": False,
             "decoupled_weight_decay": False}
    if any(g.get(k, v) != v for k, v in plain.items()) or g["weight_decay"] != 0 or g["foreach"] or g["fused"]:
        return False
    if isinstance(g["lr"], torch.Tensor) or any(isinstance(b, torch.Tensor) for b in g["betas"]):
        return False
    params = g["params"]
    ok = all(p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous() for p in params)
    ok = ok and sum(p.numel() for p in params) <= MAX_NUMEL
    steps = {float(optimizer.state[p]["step"]) if optimizer.state.get(p) else 0.0 for p in params}
    return ok and len(steps) == 1


class _FlatAdam:
    """The flat buffers of one :func:`flat_adam` block (parameters, moments, step)."""

    def __init__(self, optimizer: torch.optim.Adam):
        self.optimizer = optimizer
        self.params = list(optimizer.param_groups[0]["params"])
        sizes = [p.numel() for p in self.params]
        self.flat = torch.cat([p.detach().reshape(-1) for p in self.params])
        state = [optimizer.state.get(p) or {} for p in self.params]
        fresh = not state[0]
        self.exp_avg = torch.zeros_like(self.flat) if fresh else torch.cat([s["exp_avg"].reshape(-1) for s in state])
        self.exp_avg_sq = (torch.zeros_like(self.flat) if fresh else
                           torch.cat([s["exp_avg_sq"].reshape(-1) for s in state]))
        # torch keeps each step count as a float32 CPU scalar; counting in the same type keeps bias corrections equal
        self.step_t = torch.tensor(0.0) if fresh else state[0]["step"].detach().clone()
        self.sizes = sizes
        # each parameter's slice of the flat buffer, shaped like it (copied back after every step: exact)
        self.views = [v.view_as(p) for p, v in zip(self.params, torch.split(self.flat, sizes))]

    def zero_grad(self) -> None:
        """``optimizer.zero_grad(set_to_none=True)``."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """``optimizer.step()``: torch's single-tensor Adam, once over the flat buffers."""
        g = self.optimizer.param_groups[0]
        if any(p.grad is None for p in self.params):  # torch would skip those tensors: keep its own loop
            raise RuntimeError("flat_adam: every parameter needs a gradient at every step")
        beta1, beta2 = g["betas"]
        lr, eps = g["lr"], g["eps"]
        grad = torch.cat([p.grad.reshape(-1) for p in self.params])
        self.step_t += 1
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = self.step_t.item()
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        self.flat.addcdiv_(self.exp_avg, denom, value=-step_size)
        with torch.no_grad():
            for p, v in zip(self.params, self.views):
                p.copy_(v)

    def close(self) -> None:
        """Write the moments back into the optimizer's state (the layout ``torch.optim.Adam`` makes: ``step``,
        ``exp_avg``, ``exp_avg_sq``)."""
        moments = zip(torch.split(self.exp_avg, self.sizes), torch.split(self.exp_avg_sq, self.sizes))
        for p, (m, v) in zip(self.params, moments):
            if self.step_t.item() > 0:
                self.optimizer.state[p] = {"step": self.step_t.clone(), "exp_avg": m.view_as(p).clone(),
                                           "exp_avg_sq": v.view_as(p).clone()}


class _PlainSteps:
    """The optimizer's own ``zero_grad`` / ``step`` (where :func:`flat_adam` does not apply)."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.zero_grad = lambda: optimizer.zero_grad(set_to_none=True)
        self.step = optimizer.step


@contextmanager
def flat_adam(optimizer: torch.optim.Optimizer) -> Iterator[_FlatAdam | _PlainSteps]:
    """``with flat_adam(opt) as o:`` then ``o.zero_grad()`` / ``o.step()`` as ``opt.zero_grad(set_to_none=True)``
    / ``opt.step()``, bit for bit; on leaving, ``opt`` holds the state its own steps would have left. Inside the
    block the flat copy is the truth: do not change the parameters or the optimizer other than by ``o.step()``."""
    if not _applies(optimizer):
        yield _PlainSteps(optimizer)
        return
    flat = _FlatAdam(optimizer)
    try:
        yield flat
    finally:
        flat.close()
