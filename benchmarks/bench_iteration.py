"""Time one HERO iteration through the harness: where the wall time goes, how much of it is UNet, peak memory.

One iteration = sample a batch, rate it (oracle + simulated rater + ledger), learn (HERO: encoder
training and rewards, then the PPO update), checkpoint; plus one held-out evaluation, timed apart
(the runner evaluates every ``eval.every_labels`` labels, not every iteration).

    python benchmarks/bench_iteration.py                        # GlyphWorld model if present, else a tiny random SD
    python benchmarks/bench_iteration.py --model path/to/sd --batch 64 --budget 64 --device cuda

The numbers come from ``Run.timings`` (sampling, rating, learning, io, evaluation), the
``seconds_representation`` / ``seconds_policy_update`` statistics HERO's ``learn`` returns, and
``Generator.unet_seconds`` (wall time inside UNet *forward* calls), plus the wall time of the policy
update's ``backward`` calls (timed here by wrapping ``core.policy_gradient.backward``: the loss is a
function of the UNet's output only, so its backward is the UNet's backward). Peak memory is the process'
maximum resident set size (``getrusage``), plus CUDA's peak allocation on a GPU.

After the timed iterations, one more iteration runs untimed under ``torch.utils.flop_counter`` and the
FLOPs (forward and backward) are printed by top-level module (UNet, HERO's encoder and head, VAE decoder,
text encoder), with the FLOP rate of the UNet calls and of the encoder training: where the arithmetic goes
bounds the UNet's share of the time whatever the overheads (``--no-flops`` skips it).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def default_model(tmp: str) -> tuple[Path, str, bool]:
    """(model folder, description, is_tiny): the GlyphWorld model when it exists, else a tiny random SD
    marked as a GlyphWorld model (so the task's exact oracle runs on it)."""
    from herobench.errors import HerobenchError

    try:
        from herobench.paths import glyphworld_model_dir

        path = Path(glyphworld_model_dir(must_exist=False))
        if (path / "model_index.json").is_file():
            return path, "GlyphWorld model (shipped)", False
        why = f"no GlyphWorld model at {path}"
    except (ImportError, HerobenchError) as e:
        why = str(e)
    sys.path.insert(0, str(REPO / "tests"))
    from tinysd import build_tiny_sd

    path = build_tiny_sd(tmp, prediction_type="v_prediction", seed=3)
    (path / "herobench.json").write_text(json.dumps({"backend": "glyphworld", "sampler": {"steps": 20}}))
    return path, f"TINY RANDOM SD (fallback: {why})", True


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def report_flops(run, iters: int, unet_s: float, repr_s: float) -> None:
    """Count the arithmetic of one more (untimed) iteration by the module that does it, and set it beside
    the measured seconds: where the FLOPs go bounds the UNet's share of the time whatever the overheads."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        stats = run.step()
    # top-level keys are the outermost modules called (fully qualified names carry a dot), plus "Global"
    per_module = {k: sum(v.values()) for k, v in counter.get_flop_counts().items() if "." not in k}
    total = per_module.pop("Global", 0)
    unet = per_module.get("UNet2DConditionModel", 0)
    encoder = per_module.get("HeroEncoder", 0) + per_module.get("ProjectionHead", 0)
    print("\narithmetic of one iteration (FLOPs counted by torch.utils.flop_counter, forward + backward):")
    for name, n in sorted(per_module.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<34} {n / 1e12:8.3f} TFLOP  {100 * n / max(total, 1):5.1f} %")
    print(f"  {'total':<34} {total / 1e12:8.3f} TFLOP  (encoder trained: {stats.get('repr_trained', 0):.0f}, "
          f"{stats.get('repr_positives', 0):.0f} positives, {stats.get('repr_negatives', 0):.0f} negatives)")
    if unet and encoder and unet_s and repr_s:
        print(f"  rate: UNet calls {unet / 1e9 / (unet_s / iters):.0f} GFLOP/s, HERO encoder training "
              f"{encoder / 1e9 / (repr_s / iters):.0f} GFLOP/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="local diffusers SD folder")
    ap.add_argument("--batch", type=int, default=64, help="images per iteration (labels)")
    ap.add_argument("--budget", type=int, default=64, help="labels of the timed run (one iteration = --batch)")
    ap.add_argument("--eval-images", type=int, default=128, help="held-out images per evaluation")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model card's)")
    ap.add_argument("--encoder-epochs", type=int, default=None, help="HERO encoder epochs (default: HERO's 500)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--projection-labels", type=int, default=512, help="project a run of this many labels")
    ap.add_argument("--no-flops", action="store_true", help="skip the extra, untimed iteration that counts FLOPs")
    args = ap.parse_args()

    from herobench.config import RunSettings, from_dict
    from herobench.core import policy_gradient
    from herobench.harness.runlog import read_jsonl
    from herobench.harness.runner import prepare

    backward_seconds = [0.0]
    plain_backward = policy_gradient.backward

    def timed_backward(loss, accelerator=None):
        t = time.perf_counter()
        plain_backward(loss, accelerator)
        if torch.cuda.is_available() and loss.is_cuda:
            torch.cuda.synchronize(loss.device)
        backward_seconds[0] += time.perf_counter() - t

    policy_gradient.backward = timed_backward  # module global, looked up at call time by the updates

    tmp = tempfile.mkdtemp(prefix="bench-iteration-")
    if args.model is not None:
        model, what, tiny = args.model, f"{args.model}", False
    else:
        model, what, tiny = default_model(tmp)
    data = {
        "task": "hand", "method": "hero", "batch_size": args.batch,
        # one more batch for the FLOP-counting iteration, run after the timed ones
        "budget_labels": args.budget + (0 if args.no_flops else args.batch),
        "model": str(model), "device": args.device,
        "eval": {"n_images": args.eval_images, "every_labels": max(args.budget, 1),
                 "batch_size": min(64, args.eval_images)},
    }
    if args.steps is not None:
        data["sampler"] = {"steps": args.steps}
    if args.encoder_epochs is not None:
        data["method_options"] = {"encoder_epochs": args.encoder_epochs}
    if tiny:
        # the tiny model draws no hands: every label would be "bad", HERO would have no best image and skip
        # its update. Coin-flip labels make every part of the iteration run.
        data["rater"] = {"flip_rate": 0.5}
    settings = from_dict(RunSettings, data)

    t_setup = time.perf_counter()
    run = prepare(settings, out=Path(tmp) / "runs", progress=False)
    setup_s = time.perf_counter() - t_setup
    gen = run.gen

    # one held-out evaluation (timed apart)
    u0, t0 = gen.unet_seconds, time.perf_counter()
    run.evaluate()
    eval_s, eval_unet = time.perf_counter() - t0, gen.unet_seconds - u0

    # the iterations of the budget
    u0, t0, b0 = gen.unet_seconds, time.perf_counter(), backward_seconds[0]
    run.timings.clear()
    train_rows = []
    while run.labels_done < args.budget:
        stats = run.step()
        train_rows.append(stats)
        t_io = time.perf_counter()
        run.save_checkpoint()
        run._time("io", t_io)
    iters = len(train_rows)
    iter_s, iter_unet = time.perf_counter() - t0, gen.unet_seconds - u0
    iter_back = backward_seconds[0] - b0
    t = dict(run.timings)
    repr_s = sum(r.get("seconds_representation", 0.0) for r in train_rows)
    pg_s = sum(r.get("seconds_policy_update", 0.0) for r in train_rows)
    parts = [
        ("sampling", t.get("sampling", 0.0)),
        ("rating (oracle + rater + ledger)", t.get("rating", 0.0)),
        ("encoder training + rewards", repr_s),
        ("policy update (PPO)", pg_s),
        ("other learning (pool, stats)", t.get("learning", 0.0) - repr_s - pg_s),
        ("I/O (checkpoint)", t.get("io", 0.0)),
    ]
    other = iter_s - sum(v for _, v in parts)

    print(f"model:        {what}")
    print(f"device:       {args.device} | torch threads {torch.get_num_threads()} | "
          f"sampler {gen.sampler.steps} steps, CFG {gen.sampler.guidance_scale}")
    print(f"run:          hand/hero, batch {args.batch}, {iters} iteration(s), {run.labels_done} labels, "
          f"encoder epochs {run.method.options.encoder_epochs}" + (", rater.flip_rate 0.5 (tiny model)" if tiny else ""))
    print(f"setup:        {setup_s:.2f} s (load model, LoRA, run folder)\n")
    print(f"per iteration (mean of {iters}):")
    for name, v in [*parts, ("unaccounted", other)]:
        print(f"  {name:<34} {v / iters:8.3f} s  {100 * v / iter_s:5.1f} %")
    print(f"  {'total':<34} {iter_s / iters:8.3f} s")
    print(f"  inside UNet forward calls          {iter_unet / iters:8.3f} s  {100 * iter_unet / iter_s:5.1f} %"
          f"  (sampling + log-prob recomputation)")
    both = iter_unet + iter_back
    print(f"  inside UNet calls, with backward    {both / iters:8.3f} s  {100 * both / iter_s:5.1f} %"
          f"  (+ the policy update's backward, {iter_back / iters:.3f} s)")
    print(f"\nevaluation ({args.eval_images} images, once): {eval_s:.3f} s, "
          f"{100 * eval_unet / eval_s:.1f} % in UNet forward calls")
    n_iter = -(-args.projection_labels // args.batch)
    n_eval = -(-args.projection_labels // 64) + 1  # the runner's default: every 64 labels, and at 0
    projected = n_iter * iter_s / iters + n_eval * eval_s + setup_s
    print(f"projected {args.projection_labels}-label HERO run (eval every 64 labels, {args.eval_images} images): "
          f"{projected:.0f} s = {projected / 60:.1f} min")
    if not args.no_flops:
        report_flops(run, iters, iter_unet + iter_back, repr_s)
    print(f"\npeak memory:  {peak_rss_mib():.0f} MiB resident (maxrss)" + (
        f", CUDA peak allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if args.device == "cuda" else ""))
    evals = read_jsonl(run.dir.evals)
    print(f"(sanity: success at 0 labels {evals[0]['success_rate']:.3f}; run folder {run.dir.path})")


if __name__ == "__main__":
    main()
