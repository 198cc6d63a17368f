"""Agreement of GlyphWorld's pixel oracles with the renderer's ground truth, per task and rater profile.

For each task/profile, renders ``--n`` fresh scenes with ``render.render_for_prompt`` (cycling through the
task's train + eval + enhanced prompts, ``--sets``), judges the pixels with ``oracles.judge_image`` and compares with
``render.truth_success`` (metadata). Also prints p(success | prompt) under the world (the designed band) and
the oracle's unreadable rate. ``--blur``/``--noise`` degrade the images first (a rough robustness check).

    OMP_NUM_THREADS=1 python benchmarks/oracle_agreement.py --n 2000

``--learned`` measures the GlyphWorld-trained judges instead (``glyphworld-clip``, ``glyphworld-yolo``): on
``--n`` images per task sampled from the shipped GlyphWorld model (the model card's sampler; the task's train
and eval prompts in turn) each learned oracle's verdict is compared with the exact oracle's on the same
pixels, and on ``--n`` fresh renders with the renderer's truth. It prints accuracy, false-positive rate
(learned says success where the reference says failure, over the reference's failures) and false-negative
rate, with n, and writes the rows as JSON with ``--json``:

    OMP_NUM_THREADS=1 python benchmarks/oracle_agreement.py --learned --n 256 --json scratch/agreement.json
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from herobench.glyphworld import render as R
from herobench.glyphworld.calibrate import calibrated_tasks
from herobench.oracles import glyphworld_exact as O

TASKS = calibrated_tasks()  # the task files' GlyphWorld prompt sets, in the exact oracle's task order


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


LEARNED = {"glyphworld-clip": [("black-cat", "default"), ("blue-rose", "default"), ("narcissus", "default"),
                               ("mountain", "green"), ("mountain", "snowy")],
           "glyphworld-yolo": [("counting", "default")]}


def rates(pred: list[bool], ref: list[bool]) -> dict:
    """Accuracy, false-positive rate (pred True where ref False, over ref False), false-negative rate."""
    n = len(ref)
    neg = sum(not r for r in ref)
    pos = n - neg
    fp = sum(p and not r for p, r in zip(pred, ref))
    fn = sum(r and not p for p, r in zip(pred, ref))
    return {"n": n, "n_pos": pos, "accuracy": (n - fp - fn) / max(n, 1), "fpr": fp / neg if neg else None,
            "fnr": fn / pos if pos else None, "p_ref": pos / max(n, 1), "p_pred": sum(pred) / max(n, 1)}


def learned_agreement(n: int, seed: int, oracles: list[str]) -> list[dict]:
    """Rows (oracle, task, profile, images = generated|renders) of agreement with the exact reference."""
    import torch

    from herobench.glyphworld.calibrate import load_generator, sample_task
    from herobench.oracles import make_oracle
    from herobench.paths import glyphworld_model_dir
    from herobench.tasks import load_task

    gen = load_generator(glyphworld_model_dir())
    rows = []
    cache: dict[str, tuple[torch.Tensor, float]] = {}  # task -> its samples (both mountain raters judge one set)
    for name in oracles:
        for task, prof in LEARNED[name]:
            spec = TASKS[task]
            prompts = list(dict.fromkeys([*spec.train_prompts, *spec.eval_prompts]))
            ps = [prompts[i % len(prompts)] for i in range(n)]
            if task not in cache:
                t0 = time.perf_counter()
                cache[task] = (sample_task(gen, prompts, n, seed), time.perf_counter() - t0)
            images, t_gen = cache[task]
            rng = np.random.default_rng(seed)
            renders, truth = [], []
            for p in ps:
                img, tr = R.render_for_prompt(p, rng)
                renders.append(img)
                truth.append(R.truth_success(task, tr, p, prof))
            renders_t = torch.from_numpy(np.stack(renders)).permute(0, 3, 1, 2).float() / 255.0
            learned = make_oracle(name, load_task(task), prof)
            exact = O.GlyphOracle(task, profile=prof)
            t0 = time.perf_counter()
            v_learned = learned.judge(images, ps)
            ms = 1000 * (time.perf_counter() - t0) / n
            v_exact = exact.judge(images, ps)
            rows.append({"oracle": name, "task": task, "profile": prof, "images": "generated",
                         "reference": "glyphworld-exact", "ms_per_image": round(ms, 2), "gen_s": round(t_gen, 1),
                         **rates([v.success for v in v_learned], [v.success for v in v_exact])})
            rows.append({"oracle": name, "task": task, "profile": prof, "images": "renders", "reference": "truth",
                         **rates([v.success for v in learned.judge(renders_t, ps)], truth)})
            print(markdown_rows(rows[-2:]), flush=True)
    return rows


def _f(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def markdown_rows(rows: list[dict]) -> str:
    return "\n".join(f"| {r['oracle']} | {r['task']} | {r['profile']} | {r['images']} | {r['reference']} | {r['n']} | "
                     f"{r['p_ref']:.3f} | {r['p_pred']:.3f} | {_f(r['accuracy'])} | {_f(r['fpr'])} | {_f(r['fnr'])} |"
                     for r in rows)


TABLE_HEAD = ("| oracle | task | rater | images | reference | n | p(success) reference | p(success) learned | "
              "accuracy | false-positive rate | false-negative rate |\n|---|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="scenes per task/profile")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blur", type=float, default=0.0, help="Gaussian blur sigma (pixels) before judging")
    ap.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std (0-255 scale) before judging")
    ap.add_argument("--tasks", nargs="*", default=list(TASKS))
    ap.add_argument("--sets", nargs="*", default=["train", "eval", "enhanced"], help="prompt sets to cycle through")
    ap.add_argument("--per-prompt", action="store_true", help="also print p(success | prompt) per prompt")
    ap.add_argument("--learned", action="store_true", help="measure the GlyphWorld-trained judges (see above)")
    ap.add_argument("--oracles", nargs="*", default=list(LEARNED), help="--learned: which learned oracles")
    ap.add_argument("--json", default=None, help="--learned: write the rows here")
    args = ap.parse_args()
    if args.learned:
        import json
        from pathlib import Path

        t0 = time.perf_counter()
        rows = learned_agreement(args.n, args.seed, args.oracles)
        print(f"n={args.n} seed={args.seed} ({time.perf_counter() - t0:.0f}s)\n{TABLE_HEAD}\n{markdown_rows(rows)}")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"n": args.n, "seed": args.seed, "rows": rows}, indent=2) + "\n")
        return

    print(f"n={args.n} seed={args.seed} blur={args.blur} noise={args.noise}")
    print(f"{'task':10s} {'profile':8s} {'agree':>6s} {'unread':>7s} {'p_truth':>8s} {'p_oracle':>8s} {'ms/img':>7s}"
          "  disagreements (truth, oracle reason)")
    worst = 1.0
    for task in args.tasks:
        spec = TASKS[task]
        prompts = list(dict.fromkeys(p for which in args.sets for p in getattr(spec, f"{which}_prompts")))
        for prof in spec.rater_profiles:
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
