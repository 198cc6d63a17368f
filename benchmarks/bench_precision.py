"""The opt-in fast path ``precision = "bf16"`` against fp32, as ratios measured in one process.

Two HERO runs of GlyphWorld ``hand`` with the same settings but ``precision`` are built side by side; their
held-out evaluations and their iterations alternate (fp32, bf16, fp32, bf16, ...), so a machine shared with
other work slows both alike. Printed: each part's seconds and the bf16/fp32 ratio (evaluation, sampling,
HERO's encoder training, the PPO update, a whole iteration), the projected 512-label run of each, and how
far bf16 moves the results: the images whose verdict differs at 0 labels on the same evaluation noise
(paired, McNemar's exact p) -- the reason bf16 runs are a determinism class of their own.

    python benchmarks/bench_precision.py --model path/to/model            # the card's sampler, batch 64
    python benchmarks/bench_precision.py --model M --iterations 1 --eval-images 64
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from herobench.openmp import choose_wait_policy

choose_wait_policy()  # as herobench's CLI: how idle OpenMP threads wait (set before torch)
import torch  # noqa: E402

PARTS = ("sampling", "encoder training + rewards", "PPO update", "iteration")


def build(model: str, precision: str, args, tmp: str):
    from herobench.config import RunSettings, from_dict
    from herobench.harness.runner import prepare

    data = {"task": "hand", "method": "hero", "batch_size": args.batch, "model": model, "precision": precision,
            "budget_labels": args.batch * args.iterations,
            "eval": {"n_images": args.eval_images, "every_labels": 10**6, "batch_size": min(64, args.eval_images)}}
    return prepare(from_dict(RunSettings, data), out=Path(tmp) / precision, progress=False)


def timed_iteration(run) -> dict[str, float]:
    before = dict(run.timings)
    t0 = time.perf_counter()
    stats = run.step()
    total = time.perf_counter() - t0
    return {"sampling": run.timings["sampling"] - before.get("sampling", 0.0),
            "encoder training + rewards": stats.get("seconds_representation", 0.0),
            "PPO update": stats.get("seconds_policy_update", 0.0), "iteration": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="glyphworld", help="model folder (default: the shipped GlyphWorld model)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=2, help="timed iterations per precision")
    ap.add_argument("--eval-images", type=int, default=128)
    ap.add_argument("--projection-labels", type=int, default=512)
    args = ap.parse_args()
    from herobench.harness.evaluate import successes_of
    from herobench.stats import paired

    tmp = tempfile.mkdtemp(prefix="bench-precision-")
    runs = {p: build(args.model, p, args, tmp) for p in ("fp32", "bf16")}
    evals, eval_s = {}, {}
    for p, run in runs.items():  # (alternating: fp32 then bf16)
        t0 = time.perf_counter()
        evals[p] = next(r for r in run.evaluate() if r.get("prompt_set", "eval") == "eval")
        eval_s[p] = time.perf_counter() - t0
    parts = {p: {k: [] for k in PARTS} for p in runs}
    for _ in range(args.iterations):
        for p, run in runs.items():
            for k, v in timed_iteration(run).items():
                parts[p][k].append(v)

    gen = runs["fp32"].gen
    print(f"model {runs['fp32'].model_dir} | sampler {gen.sampler.steps} steps, eta {gen.sampler.eta}, CFG "
          f"{gen.sampler.guidance_scale} | batch {args.batch}, {args.iterations} iteration(s) each, alternating | "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"  {'part':<30} {'fp32 s':>8} {'bf16 s':>8} {'bf16/fp32':>10}")
    rows = [(f"evaluation ({args.eval_images} images)", eval_s["fp32"], eval_s["bf16"])]
    rows += [(k, statistics.median(parts["fp32"][k]), statistics.median(parts["bf16"][k])) for k in PARTS]
    for name, a, b in rows:
        print(f"  {name:<30} {a:8.2f} {b:8.2f} {b / a:10.3f}")
    n_iter, n_eval = -(-args.projection_labels // args.batch), -(-args.projection_labels // 64) + 1
    proj = {p: n_iter * statistics.median(parts[p]["iteration"]) + n_eval * eval_s[p] * 128 / args.eval_images
            for p in runs}
    print(f"  projected {args.projection_labels}-label run (eval of 128 images every 64 labels): fp32 "
          f"{proj['fp32'] / 60:.1f} min, bf16 {proj['bf16'] / 60:.1f} min ({proj['bf16'] / proj['fp32']:.3f})")
    r = paired(successes_of(evals["fp32"]), successes_of(evals["bf16"]))
    print(f"results at 0 labels on the same noise: success fp32 {r.success_a:.3f}, bf16 {r.success_b:.3f}; "
          f"verdicts differ on {r.gained + r.lost} of {r.n} images (+{r.gained}/-{r.lost}, McNemar p={r.p:.2g})")


if __name__ == "__main__":
    main()
