"""How blurred and how noisy a GlyphWorld model's samples are, as the (blur sigma, noise sigma) of
``benchmarks/oracle_agreement.py --blur/--noise`` that degrades clean renders into images with the same
statistics.

GlyphWorld's renders are flat palette regions with hard edges, so two statistics separate the two degradations:

* **noise**: in *flat* regions (pixels whose 5×5 neighbourhood has a small range in the image smoothed by a
  3×3 median filter, i.e. far from any edge) the residual ``image - median3x3(image)`` is nearly pure noise.
  Its robust std (1.4826 × MAD), per channel, averaged, is a monotone function of the noise sigma (the 3×3
  median removes part of the noise's variance and uint8 rounding adds 1/12): we calibrate that function on
  renders instead of deriving it.
* **blur**: on *edges* (the pixels with the largest gradient magnitude), the ratio of the mean gradient
  magnitude to the step height across the edge falls as the edge widens.  We use the sharpness ratio
  ``S = mean(|∇I| at edge pixels) / mean(range of I in the edge pixel's 5×5 window)``; for a hard step
  S is large, for a Gaussian-blurred step of sigma b it falls as ~1/b.  Noise raises S a little, so the
  two are fitted jointly.

The estimator (``estimate``) measures (S, N) on a set of images, then picks the (blur, noise) on a grid
whose *degraded renders* give the nearest (S, N) (renders drawn for the same task prompts, so that the edge
population matches).  ``tests/test_sample_degradation.py`` checks that it recovers known degradations of
renders.  Sampling a model:

    OMP_NUM_THREADS=1 python benchmarks/sample_degradation.py --model scratch/v3b-cfg3 --n 64
    OMP_NUM_THREADS=1 python benchmarks/sample_degradation.py --model herobench/glyphworld/model --n 64

Measured (issue 25, 64 samples per task, seed 1234, all tasks pooled): GlyphWorld v3 (ε-prediction,
DDIM 50, η 1, CFG 3; measured as the candidate before it shipped) blur 0.88 px, noise 0.43; v2 (DDIM 20) blur 0.88 px,
noise 0.42. Per task the blur spans 0.71-0.95 (blue-rose and narcissus sharpest, mountain and nsfw blurriest), the noise
0.38-0.55: the samples carry almost no white noise (< 1 grey level). ``oracle_agreement.py --noise`` is on the same
0-255 scale, so the issue's "--noise 0.03" was practically no noise.  Validation (72 renders, different draws for
target and calibration): (0.9, 0.3) -> (0.90, 0.23), (0.9, 0.5) -> (0.90, 0.52), (0.7, 0.5) -> (0.70, 0.52),
(1.2, 3) -> (1.21, 3.0), (1.5, 8) -> (1.53, 7.99); ``tests/test_sample_degradation.py`` repeats this on coarse
grids.

``--save FILE.npz`` keeps the samples (uint8, with their prompts) and ``--samples FILE.npz`` measures saved
ones instead of sampling.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

BLUR_GRID = np.round(np.arange(0.0, 2.01, 0.1), 2)  # Gaussian sigma, pixels
# Gaussian std, 0-255 scale (oracle_agreement's --noise); finer below 2, where the models' samples are
NOISE_GRID = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0])
EDGE_RANGE = 60  # an edge pixel's 7×7 neighbourhood spans >= this (max channel): a real palette edge


def _win(x: np.ndarray, r: int, fn) -> np.ndarray:
    """``fn`` (np.maximum / np.minimum) over the (2r+1)² window of a batch N×H×W(×C), separably, edge-padded."""
    h, w = x.shape[1:3]
    p = np.pad(x, [(0, 0), (r, r), (0, 0)] + [(0, 0)] * (x.ndim - 3), mode="edge")
    acc = p[:, 0:h]
    for j in range(1, 2 * r + 1):
        acc = fn(acc, p[:, j:j + h])
    p = np.pad(acc, [(0, 0), (0, 0), (r, r)] + [(0, 0)] * (x.ndim - 3), mode="edge")
    out = p[:, :, 0:w]
    for j in range(1, 2 * r + 1):
        out = fn(out, p[:, :, j:j + w])
    return out


def degrade_batch(x: np.ndarray, blur: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``oracle_agreement.degrade`` on a batch N×H×W×3 uint8 at once (the same kernel, edge padding, clipping and
    rounding; the noise is drawn in one call, so not the same draws)."""
    y = x.astype(np.float64)
    if blur > 0:
        r = int(np.ceil(3 * blur))
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / blur) ** 2)
        k /= k.sum()
        h, w = y.shape[1:3]
        p = np.pad(y, ((0, 0), (r, r), (0, 0), (0, 0)), mode="edge")
        y = sum(k[j] * p[:, j:j + h] for j in range(2 * r + 1))
        p = np.pad(y, ((0, 0), (0, 0), (r, r), (0, 0)), mode="edge")
        y = sum(k[j] * p[:, :, j:j + w] for j in range(2 * r + 1))
    if noise > 0:
        y = y + rng.normal(0, noise, y.shape)
    return np.clip(y, 0, 255).round().astype(np.uint8)


# Immerkær's noise mask (the difference of two Laplacians): zero on constant and linear patches, so a blurred
# ramp hardly answers; on white noise of std s its output has std 6 s
_NOISE_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)


def _grouped_median(v: np.ndarray) -> float:
    """The interpolated median of non-negative integers (each value k spread evenly over [k - 0.5, k + 0.5],
    0 over [0, 0.5]): unlike the plain median it moves continuously, which matters at the < 1 grey level
    noise of the model's samples, where the mask's responses are a few small integers."""
    counts = np.bincount(v.ravel())
    cum = np.cumsum(counts)
    half = v.size / 2.0
    k = int(np.searchsorted(cum, half))
    below = float(cum[k - 1]) if k > 0 else 0.0
    lo = max(k - 0.5, 0.0)
    width = (k + 0.5) - lo
    return lo + width * (half - below) / counts[k]


def statistics(images: np.ndarray) -> dict:
    """The two statistics of a batch N×64×64×3 uint8.

    ``noise``: the interpolated median |noise mask response| / (6 × 0.6745) over every interior pixel and channel (the median
    ignores the minority of edge pixels; 0.6745 = a Gaussian's median |z|), on the 0-255 scale.
    ``sharpness``: median over edge pixels of (largest one-pixel step, any channel, right or down) / (the 7×7
    range): 1 for a hard palette edge, about 2Φ(0.5/b) - 1 for a Gaussian blur b, lower still with noise.
    Edge pixels: the 7×7 range (max channel) >= ``EDGE_RANGE``, the step a 3×3 local maximum and >= 0.1 ×
    the range (not a flat pixel next to a hard edge)."""
    x = images.astype(np.float64)
    h, w = x.shape[1:3]
    resp = sum(_NOISE_MASK[dy, dx] * x[:, dy:h - 2 + dy, dx:w - 2 + dx] for dy in range(3) for dx in range(3))
    noise = float(_grouped_median(np.abs(resp).round().astype(np.int64)) / (6 * 0.6745))
    dx = np.zeros_like(x)
    dy = np.zeros_like(x)
    dx[:, :, :-1] = np.abs(x[:, :, 1:] - x[:, :, :-1])
    dy[:, :-1] = np.abs(x[:, 1:] - x[:, :-1])
    g = np.maximum(dx, dy).max(-1)
    rng7 = (_win(x, 3, np.maximum) - _win(x, 3, np.minimum)).max(-1)
    edge = (g >= _win(g, 1, np.maximum)) & (rng7 >= EDGE_RANGE) & (g >= 0.1 * rng7)
    ratio = g[edge] / rng7[edge]
    return {"noise": noise, "sharpness": float(np.median(ratio)) if ratio.size else float("nan"),
            "edge_px": int(edge.sum())}


def reference_renders(prompts: list[str], seed: int) -> np.ndarray:
    """Fresh clean renders for ``prompts`` (uint8 N×64×64×3)."""
    from herobench.glyphworld import render as R

    rng = np.random.default_rng(seed)
    return np.stack([R.render_for_prompt(p, rng)[0] for p in prompts])


def _invert(curve: np.ndarray, grid: np.ndarray, value: float, increasing: bool) -> float:
    """The grid value where a (noisy, roughly monotone) measured curve crosses ``value``, linearly interpolated;
    clipped to the grid's ends."""
    c = np.maximum.accumulate(curve) if increasing else np.minimum.accumulate(curve)
    if not increasing:  # search a rising curve
        c, value = -c, -value
    if value <= c[0]:
        return float(grid[0])
    if value >= c[-1]:
        return float(grid[-1])
    i = int(np.searchsorted(c, value))
    lo, hi = c[i - 1], c[i]
    t = 0.0 if hi == lo else (value - lo) / (hi - lo)
    return float(grid[i - 1] + t * (grid[i] - grid[i - 1]))


def estimate(images: np.ndarray, renders: np.ndarray, seed: int = 0, iters: int = 2,
             blur_grid: np.ndarray = BLUR_GRID, noise_grid: np.ndarray = NOISE_GRID) -> dict:
    """Fit (blur, noise) so that ``renders`` degraded by them match ``images``' statistics.

    The noise statistic hardly depends on the blur (flat pixels are far from edges, and the noise is added after
    the blur), the sharpness depends on both: alternate two 1-D inversions, noise at the current blur, then blur
    at the current noise, each on a curve measured on the degraded renders (so the estimator's bias, e.g. the
    median filter's share of the noise, is calibrated away)."""
    target = statistics(images)
    blur, noise = 0.0, 0.0
    for _ in range(iters):
        curve = [statistics(degrade_batch(renders, blur, s, np.random.default_rng(seed)))["noise"]
                 for s in noise_grid]
        noise = _invert(np.array(curve), noise_grid, target["noise"], increasing=True)
        curve = [statistics(degrade_batch(renders, b, noise, np.random.default_rng(seed)))["sharpness"]
                 for b in blur_grid]
        blur = _invert(np.array(curve), blur_grid, target["sharpness"], increasing=False)
    return {"blur": round(blur, 2), "noise": round(noise, 2), "noise_stat": round(target["noise"], 3),
            "sharpness": round(target["sharpness"], 4), "edge_px": target["edge_px"]}


def sample_model(model_dir: Path, tasks: list[str], n: int, seed: int, steps: int | None = None) -> dict:
    """``n`` samples per task (its train prompts in turn) at the model card's sampler: task -> (uint8 N×64×64×3,
    prompts)."""
    import dataclasses

    from herobench.core.generator import SamplerConfig
    from herobench.glyphworld.calibrate import calibrated_tasks, load_generator, sample_task
    from herobench.modelcard import model_card

    sampler = SamplerConfig(**model_card(Path(model_dir))["sampler"])
    if steps is not None:
        sampler = dataclasses.replace(sampler, steps=steps)
    gen = load_generator(Path(model_dir), sampler=sampler)
    specs = calibrated_tasks()
    out = {}
    for task in tasks:
        prompts = list(specs[task].train_prompts)
        t0 = time.perf_counter()
        imgs = sample_task(gen, prompts, n, seed)
        arr = (imgs.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)
        out[task] = (arr, [prompts[i % len(prompts)] for i in range(n)])
        print(f"sampled {task}: {n} in {time.perf_counter() - t0:.0f}s", flush=True)
    return out


def save_samples(path: Path, samples: dict, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"img_{t}": a for t, (a, _) in samples.items()}
    prompts = {t: p for t, (_, p) in samples.items()}
    np.savez_compressed(path, meta=json.dumps({**meta, "prompts": prompts}), **arrays)


def load_samples(path: Path) -> tuple[dict, dict]:
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    return {t: (z[f"img_{t}"], p) for t, p in meta.pop("prompts").items()}, meta


def report(samples: dict, meta: dict, seed: int) -> None:
    """Per task and pooled: the samples' statistics and the fitted (blur, noise), against renders of the same
    prompts."""
    rows = []
    all_img, all_ref = [], []
    for task, (imgs, prompts) in samples.items():
        ref = reference_renders(prompts, seed)
        all_img.append(imgs)
        all_ref.append(ref)
        rows.append({"task": task, "n": len(imgs), **estimate(imgs, ref, seed)})
        print(json.dumps(rows[-1]), flush=True)
    rows.append({"task": "all", "n": sum(len(a) for a in all_img),
                 **estimate(np.concatenate(all_img), np.concatenate(all_ref), seed)})
    clean = statistics(np.concatenate(all_ref))
    print(f"{meta.get('model')}: n={rows[-1]['n']}; clean renders: noise stat {clean['noise']:.2f}, "
          f"sharpness {clean['sharpness']:.3f}")
    print("| task | n | noise stat | sharpness | blur σ (px) | noise σ (0-255) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['n']} | {r['noise_stat']:.2f} | {r['sharpness']:.3f} | {r['blur']:.2f} | "
              f"{r['noise']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a GlyphWorld diffusers folder with a herobench.json sampler")
    ap.add_argument("--samples", default=None, help="measure saved samples (an npz from --save) instead")
    ap.add_argument("--save", default=None, help="keep the samples here (npz)")
    ap.add_argument("--n", type=int, default=64, help="samples per task")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--tasks", nargs="*", default=None)
    ap.add_argument("--sample-only", action="store_true")
    args = ap.parse_args()
    from herobench.glyphworld.calibrate import calibrated_tasks

    tasks = args.tasks or list(calibrated_tasks())
    if args.samples:
        samples, meta = load_samples(Path(args.samples))
    else:
        t0 = time.perf_counter()
        samples = sample_model(Path(args.model), tasks, args.n, args.seed)
        meta = {"model": str(args.model), "n": args.n, "seed": args.seed, "sample_s": round(time.perf_counter() - t0)}
        if args.save:
            save_samples(Path(args.save), samples, meta)
    if args.sample_only:
        return
    report(samples, meta, args.seed)


if __name__ == "__main__":
    main()
