"""Agreement of GlyphWorld's pixel oracles with the renderer's ground truth, per task and rater profile.

For each task/profile, renders ``--n`` fresh scenes with ``render.render_for_prompt`` (cycling through the
task's train + eval + enhanced prompts, ``--sets``), judges the pixels with ``oracles.judge_image`` and compares with
``render.truth_success`` (metadata). Also prints p(success | prompt) under the world (the designed band) and
the oracle's unreadable rate. ``--blur``/``--noise`` degrade the images first (a rough robustness check).

    OMP_NUM_THREADS=1 python benchmarks/oracle_agreement.py --n 2000
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from herobench.glyphworld import oracles as O
from herobench.glyphworld import render as R


def degrade(img: np.ndarray, blur: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    if blur > 0:
        r = int(np.ceil(3 * blur))
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / blur) ** 2)
        k /= k.sum()
        x = np.pad(x, ((r, r), (r, r), (0, 0)), mode="edge")
        x = np.apply_along_axis(lambda v: np.convolve(v, k, "valid"), 0, x)
        x = np.apply_along_axis(lambda v: np.convolve(v, k, "valid"), 1, x)
    if noise > 0:
        x = x + rng.normal(0, noise, x.shape)
    return np.clip(x, 0, 255).round().astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="scenes per task/profile")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blur", type=float, default=0.0, help="Gaussian blur sigma (pixels) before judging")
    ap.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std (0-255 scale) before judging")
    ap.add_argument("--tasks", nargs="*", default=list(R.TASK_PROMPTS))
    ap.add_argument("--sets", nargs="*", default=["train", "eval", "enhanced"], help="prompt sets to cycle through")
    ap.add_argument("--per-prompt", action="store_true", help="also print p(success | prompt) per prompt")
    args = ap.parse_args()

    print(f"n={args.n} seed={args.seed} blur={args.blur} noise={args.noise}")
    print(f"{'task':10s} {'profile':8s} {'agree':>6s} {'unread':>7s} {'p_truth':>8s} {'p_oracle':>8s} {'ms/img':>7s}"
          "  disagreements (truth, oracle reason)")
    worst = 1.0
    for task in args.tasks:
        spec = R.TASK_PROMPTS[task]
        prompts = list(dict.fromkeys(p for which in args.sets for p in spec[which]))
        for prof in spec["profiles"]:
            rng = np.random.default_rng(args.seed)
            agree = unread = n_true = n_pred = 0
            bad: Counter = Counter()
            per_prompt: dict[str, list[int]] = {p: [0, 0] for p in prompts}
            t0 = time.perf_counter()
            for i in range(args.n):
                p = prompts[i % len(prompts)]
                img, truth = R.render_for_prompt(p, rng)
                if args.blur > 0 or args.noise > 0:
                    img = degrade(img, args.blur, args.noise, rng)
                v = O.judge_image(task, img, p, prof)
                ts = R.truth_success(task, truth, p, prof)
                agree += v.success == ts
                unread += not v.readable
                n_true += ts
                per_prompt[p][0] += ts
                per_prompt[p][1] += 1
                n_pred += v.success
                if v.success != ts:
                    bad[(ts, v.reason)] += 1
            ms = 1000 * (time.perf_counter() - t0) / args.n
            a = agree / args.n
            worst = min(worst, a)
            print(f"{task:10s} {prof:8s} {a:6.3f} {unread / args.n:7.3f} {n_true / args.n:8.3f} "
                  f"{n_pred / args.n:8.3f} {ms:7.1f}  {dict(bad.most_common(3))}")
            if args.per_prompt:
                for p, (k, m) in per_prompt.items():
                    print(f"{'':20s} p(success | {p!r}) = {k / max(m, 1):.3f}  (n={m})")
    print(f"worst agreement: {worst:.4f}")


if __name__ == "__main__":
    main()
