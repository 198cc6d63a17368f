"""HERO's encoder Adam step: candidate speed-ups as ratios against today's step, measured in one process.

One step = encoder + head forward on ``[anchor, positives…, negatives…]``, the all-pairs triplet loss,
backward, Adam (``hero_repr._fit_triplets``'s loop body). Every candidate starts from the same seeded
weights and the same latents; rounds interleave the candidates (A, B, C, … A, B, C, …) so that a
machine shared with other work slows them alike, and each candidate's time is its median over rounds.
After the timed steps each candidate's weights are compared with today's, bit for bit
(``bit-identical``) or by the largest absolute difference.

    python benchmarks/bench_encoder_step.py                     # GlyphWorld's latent (4×16×16), 64 images
    python benchmarks/bench_encoder_step.py --latent 64 --only herobench,fused   # SD-1.5's (2048-d features)

Candidates (``--only`` picks some; ``a+b`` combines features):
    base            the step before issue 30: ``nn.MaxPool2d``, torch's default Adam, all-pairs indices
                    rebuilt every epoch
    hoisted         the all-pairs indices built once
    pool            the first two max-pools on channels-last copies (``hero_repr.ChannelsLastMaxPool``)
    flat_adam       torch's Adam on one flat tensor (``methods.flat_adam``)
    herobench       herobench's step today: ``hero_repr._fit_triplets`` itself (hoisted + pool + flat_adam)
    foreach, fused  torch's multi-tensor / fused Adam (``foreach=True`` / ``fused=True``)
    channels_last   the whole encoder (weights, input) channels-last
    bf16            the forward under ``torch.autocast("cpu", bfloat16)`` (weights and Adam stay fp32)
    compile         ``torch.compile`` of forward + loss (inductor; its first call, the compilation, printed apart)
"""

from __future__ import annotations

import argparse
import statistics
import time

from herobench.openmp import choose_wait_policy

choose_wait_policy()  # as herobench's CLI: how idle OpenMP threads wait (set before torch)
import torch  # noqa: E402
from torch import nn  # noqa: E402

from herobench.methods.flat_adam import flat_adam  # noqa: E402
from herobench.methods.hero import build_representation  # noqa: E402
from herobench.methods.hero_repr import _fit_triplets, triplet_indices, triplet_loss  # noqa: E402

FEATURES = ("base", "hoisted", "pool", "flat_adam", "herobench", "foreach", "fused", "channels_last", "bf16",
            "compile")
DEFAULT = "hoisted,pool,flat_adam,herobench,foreach,fused,channels_last,bf16,compile,herobench+channels_last+bf16"


def representation(latent: int, seed: int, pool: bool):
    """HERO's encoder and head for ``4×latent×latent``; ``pool=False`` puts ``nn.MaxPool2d`` back everywhere."""
    encoder, head = build_representation((4, latent, latent), 0, seed)
    if not pool:
        for i, m in enumerate(encoder.convs):
            if not isinstance(m, nn.Conv2d | nn.ReLU):
                encoder.convs[i] = nn.MaxPool2d(2)
    return encoder, head


def make_step(name: str, latent: int, x: torch.Tensor, n_pos: int, n_neg: int, seed: int):
    """(step function, parameters, close): candidate ``name`` on fresh seeded weights; ``step(k)`` runs
    ``k`` optimizer steps, ``close()`` ends the candidate (writes a flat Adam's state back)."""
    f = set(name.split("+"))
    if "herobench" in f:
        f |= {"hoisted", "pool", "flat_adam"}
    encoder, head = representation(latent, seed, pool="pool" in f)
    params = [*encoder.parameters(), *head.parameters()]
    kw = {"foreach": True} if "foreach" in f else {"fused": True} if "fused" in f else {}
    opt = torch.optim.Adam(params, lr=1e-5, **kw)
    if "channels_last" in f:
        encoder = encoder.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if f <= {"herobench", "hoisted", "pool", "flat_adam"} and "herobench" in f:  # the real code, unchanged
        def run(k):
            _fit_triplets(encoder, head, opt, x, n_pos, n_neg, k, 0.5, "all_pairs", "pairwise", None, n_pos + n_neg)
        return run, params, lambda: None
    fixed = triplet_indices(n_pos, n_neg, "all_pairs", 0, None)

    def loss_of(pi, ni):
        z = head(encoder(x))
        return triplet_loss(z[:1], z[1 : 1 + n_pos][pi], z[1 + n_pos :][ni], 0.5, "pairwise")

    forward = torch.compile(loss_of) if "compile" in f else loss_of
    block = flat_adam(opt) if "flat_adam" in f else None
    steps = block.__enter__() if block is not None else None

    def run(k):
        for _ in range(k):
            pi, ni = fixed if "hoisted" in f else triplet_indices(n_pos, n_neg, "all_pairs", 0, None)
            with torch.autocast("cpu", torch.bfloat16, enabled="bf16" in f):
                loss = forward(pi, ni)
            steps.zero_grad() if steps is not None else opt.zero_grad(set_to_none=True)
            loss.float().backward()
            steps.step() if steps is not None else opt.step()

    return run, params, (lambda: block.__exit__(None, None, None)) if block is not None else (lambda: None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent", type=int, default=16, help="latent side (GlyphWorld 16, SD-1.5 64)")
    ap.add_argument("--positives", type=int, default=21, help="good images besides the best")
    ap.add_argument("--negatives", type=int, default=42)
    ap.add_argument("--steps", type=int, default=100, help="timed steps per candidate per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--only", default=DEFAULT, help="comma-separated candidates (base is always run)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["base", *[n for n in args.only.split(",") if n and n != "base"]]
    unknown = sorted({f for n in names for f in n.split("+")} - set(FEATURES))
    if unknown:
        raise SystemExit(f"unknown feature(s) {unknown}; choose from {', '.join(FEATURES)}")
    n = 1 + args.positives + args.negatives
    x = torch.randn(n, 4, args.latent, args.latent, generator=torch.Generator().manual_seed(0))

    steps, params, close, warm_s = {}, {}, {}, {}
    for name in names:
        steps[name], params[name], close[name] = make_step(name, args.latent, x, args.positives, args.negatives, 7)
        t = time.perf_counter()
        steps[name](1)  # warm-up (for compile: the compilation)
        warm_s[name] = time.perf_counter() - t
    times = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            t = time.perf_counter()
            steps[name](args.steps)
            times[name].append((time.perf_counter() - t) / args.steps)
    for name in names:
        close[name]()

    print(f"HERO encoder step: latent 4×{args.latent}×{args.latent}, {n} rows ({args.positives} positives, "
          f"{args.negatives} negatives, {args.positives * args.negatives} pairs), torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); median of {args.rounds} interleaved rounds × {args.steps} steps")
    base = statistics.median(times["base"])
    print(f"  {'candidate':<30} {'ms/step':>8} {'ratio':>7}  weights after {1 + args.rounds * args.steps} steps")
    for name in names:
        med = statistics.median(times[name])
        with torch.no_grad():
            diff = max(float((a - b).abs().max()) for a, b in zip(params[name], params["base"], strict=True))
        same = "bit-identical" if diff == 0 else f"max |Δ| {diff:.1e}"
        extra = f"  (first call {warm_s[name]:.1f} s)" if "compile" in name else ""
        print(f"  {name:<30} {1000 * med:8.2f} {med / base:7.3f}  {same}{extra}")


if __name__ == "__main__":
    main()
