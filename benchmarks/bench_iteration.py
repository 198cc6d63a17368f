"""Time one HERO iteration through the harness: where the wall time goes, how much of it is UNet, peak memory.

One iteration = sample a batch, rate it (oracle + simulated rater + ledger), learn (HERO: encoder
training and rewards, then the PPO update), checkpoint; plus one held-out evaluation, timed apart
(the runner evaluates every ``eval.every_labels`` labels, not every iteration).

    python benchmarks/bench_iteration.py                        # GlyphWorld model if present, else a tiny random SD
    python benchmarks/bench_iteration.py --model path/to/sd --batch 64 --budget 64 --device cuda
    python benchmarks/bench_iteration.py --precision bf16 --no-flops     # the opt-in fast path

The numbers come from ``Run.timings`` (sampling, rating, learning, io, evaluation), the
``seconds_representation`` / ``seconds_policy_update`` statistics HERO's ``learn`` returns, and
``Generator.unet_seconds`` (wall time inside UNet *forward* calls), plus the wall time of the policy
update's ``backward`` calls (timed here by wrapping ``core.policy_gradient.backward``: the loss is a
function of the UNet's output only, so its backward is the UNet's backward). Peak memory is the process'
maximum resident set size (``getrusage``), plus CUDA's peak allocation on a GPU.

Beside the iterations, the same batch (``--batch`` images, the card's sampler and prompt, the same initial
noise) is sampled by herobench's sampler and by plain diffusers ``StableDiffusionPipeline`` built on the same
components (``SDComponents.to_pipeline``), alternating (ABBA), in ``--pipeline-rounds`` rounds: the ratio says
what recording every step's latent and log-prob costs over the sampler a user would pick
(``--no-pipeline`` skips it).

After the timed iterations, one more iteration runs untimed under ``torch.utils.flop_counter`` and the
FLOPs (forward and backward) are printed by top-level module (UNet, HERO's encoder and head, VAE decoder,
text encoder), with the FLOP rate of the UNet calls and of the encoder training: where the arithmetic goes
bounds the UNet's share of the time whatever the overheads (``--no-flops`` skips it).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from herobench import openmp

openmp.choose_wait_policy()  # as herobench's CLI: how idle OpenMP threads wait (set before torch)
import torch  # noqa: E402

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
    # (the encoder's conv backward passes through ChannelsLastMaxPool's autograd function, after which the
    # counter sees its convolutions as top-level "Conv2d": no other model has a top-level convolution)
    encoder = sum(per_module.get(k, 0) for k in ("HeroEncoder", "ProjectionHead", "Conv2d"))
    print("\narithmetic of one iteration (FLOPs counted by torch.utils.flop_counter, forward + backward):")
    for name, n in sorted(per_module.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<34} {n / 1e12:8.3f} TFLOP  {100 * n / max(total, 1):5.1f} %")
    print(f"  {'total':<34} {total / 1e12:8.3f} TFLOP  (encoder trained: {stats.get('repr_trained', 0):.0f}, "
          f"{stats.get('repr_positives', 0):.0f} positives, {stats.get('repr_negatives', 0):.0f} negatives)")
    if unet and encoder and unet_s and repr_s:
        print(f"  rate: UNet calls {unet / 1e9 / (unet_s / iters):.0f} GFLOP/s, HERO encoder training "
              f"{encoder / 1e9 / (repr_s / iters):.0f} GFLOP/s")


def unet_timer(unet, cuda: bool) -> tuple[list[float], Callable[[], None]]:
    """Time every forward of ``unet`` (whoever calls it) into the returned one-element list; the callable
    removes the timer again."""
    seconds = [0.0]
    plain_forward = unet.forward

    def timed_forward(*args, **kwargs):
        t0 = time.perf_counter()
        out = plain_forward(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        seconds[0] += time.perf_counter() - t0
        return out

    unet.forward = timed_forward  # an instance attribute: nn.Module.__call__ finds it before the class's
    return seconds, lambda: delattr(unet, "forward")


def compare_with_diffusers(gen, prompt: str, n: int, rounds: int) -> None:
    """Sample ``n`` images with herobench's sampler and with plain diffusers' pipeline on the same components,
    noise and sampler, in ABBA rounds; print each round's time, the time outside UNet calls, and the ratio."""
    pipe = gen.components.to_pipeline()
    pipe.set_progress_bar_config(disable=True)
    s = gen.sampler
    noise = torch.randn((n, *gen.latent_shape), generator=torch.Generator().manual_seed(0))

    def ours():
        return gen.sample([prompt] * n, init_noise=noise, generator=torch.Generator().manual_seed(1)).images

    def plain():
        return pipe([prompt] * n, num_inference_steps=s.steps, guidance_scale=s.guidance_scale, eta=s.eta,
                    negative_prompt=[s.negative_prompt] * n if s.guidance_scale > 1 else None, latents=noise,
                    generator=torch.Generator().manual_seed(1), output_type="pt").images

    times: dict[str, list[float]] = {"herobench": [], "diffusers": []}
    outside: dict[str, list[float]] = {"herobench": [], "diffusers": []}
    images, order = {}, [("herobench", ours), ("diffusers", plain)]
    unet_s, remove_timer = unet_timer(gen.components.unet, gen.device.type == "cuda")
    for r in range(rounds):
        for name, fn in order if r % 2 == 0 else order[::-1]:  # ABBA: neither always runs first
            unet_s[0], t0 = 0.0, time.perf_counter()
            with torch.no_grad():
                images[name] = fn()
            if gen.device.type == "cuda":
                torch.cuda.synchronize(gen.device)
            times[name].append(time.perf_counter() - t0)
            outside[name].append(times[name][-1] - unet_s[0])
    remove_timer()
    ratios = [a / b for a, b in zip(times["herobench"], times["diffusers"])]
    diff = float((images["herobench"].cpu() - images["diffusers"].float().cpu()).abs().max())
    print(f"\nsampling {n} images, {s.steps} steps, CFG {s.guidance_scale}, {rounds} rounds (ABBA): herobench "
          f"(every step's latent and log-prob kept) {', '.join(f'{t:.2f}' for t in times['herobench'])} s; "
          f"diffusers StableDiffusionPipeline {', '.join(f'{t:.2f}' for t in times['diffusers'])} s")
    print(f"  herobench / diffusers: {statistics.median(ratios):.3f} (median of the rounds' ratios; best times "
          f"{min(times['herobench']) / min(times['diffusers']):.3f}); images differ by at most {diff:.1e}")
    print(f"  outside UNet calls (median): herobench {statistics.median(outside['herobench']):.2f} s, diffusers "
          f"{statistics.median(outside['diffusers']):.2f} s (the UNet calls are the same calls)")


def time_iterations(run, budget: int, backward_seconds: list[float]) -> dict:
    """Run iterations (each checkpointed, as the runner does) until ``budget`` labels; their timings."""
    gen = run.gen
    u0, t0, b0 = gen.unet_seconds, time.perf_counter(), backward_seconds[0]
    run.timings.clear()
    rows = []
    while run.labels_done < budget:
        rows.append(run.step())
        t_io = time.perf_counter()
        run.save_checkpoint()
        run._time("io", t_io)
    return {"rows": rows, "seconds": time.perf_counter() - t0, "unet": gen.unet_seconds - u0,
            "backward": backward_seconds[0] - b0, "timings": dict(run.timings)}


def print_breakdown(timed: dict) -> None:
    """Per iteration: each part's seconds and share, and the share inside UNet calls."""
    rows, iter_s, t = timed["rows"], timed["seconds"], timed["timings"]
    iters = len(rows)
    repr_s = sum(r.get("seconds_representation", 0.0) for r in rows)
    pg_s = sum(r.get("seconds_policy_update", 0.0) for r in rows)
    parts = [
        ("sampling", t.get("sampling", 0.0)),
        ("rating (oracle + rater + ledger)", t.get("rating", 0.0)),
        ("encoder training + rewards", repr_s),
        ("policy update (PPO)", pg_s),
        ("other learning (pool, stats)", t.get("learning", 0.0) - repr_s - pg_s),
        ("I/O (checkpoint)", t.get("io", 0.0)),
    ]
    print(f"per iteration (mean of {iters}):")
    for name, v in [*parts, ("unaccounted", iter_s - sum(v for _, v in parts))]:
        print(f"  {name:<34} {v / iters:8.3f} s  {100 * v / iter_s:5.1f} %")
    print(f"  {'total':<34} {iter_s / iters:8.3f} s")
    unet, back = timed["unet"], timed["backward"]
    print(f"  inside UNet forward calls          {unet / iters:8.3f} s  {100 * unet / iter_s:5.1f} %"
          f"  (sampling + log-prob recomputation)")
    print(f"  inside UNet calls, with backward    {(unet + back) / iters:8.3f} s  {100 * (unet + back) / iter_s:5.1f} %"
          f"  (+ the policy update's backward, {back / iters:.3f} s)")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="local diffusers SD folder")
    ap.add_argument("--batch", type=int, default=64, help="images per iteration (labels)")
    ap.add_argument("--budget", type=int, default=64, help="labels of the timed run (one iteration = --batch)")
    ap.add_argument("--eval-images", type=int, default=128, help="held-out images per evaluation")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model card's)")
    ap.add_argument("--encoder-epochs", type=int, default=None, help="HERO encoder epochs (default: HERO's 500)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="the run's precision setting")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--projection-labels", type=int, default=512, help="project a run of this many labels")
    ap.add_argument("--pipeline-rounds", type=int, default=2, help="rounds of the herobench/diffusers comparison")
    ap.add_argument("--no-pipeline", action="store_true", help="skip the comparison with diffusers' pipeline")
    ap.add_argument("--pipeline-only", action="store_true", help="only the comparison with diffusers' pipeline")
    ap.add_argument("--no-flops", action="store_true", help="skip the extra, untimed iteration that counts FLOPs")
    return ap.parse_args()


def run_settings(args, model: Path, tiny: bool):
    from herobench.config import RunSettings, from_dict

    data = {
        "task": "hand", "method": "hero", "batch_size": args.batch, "precision": args.precision,
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
    return from_dict(RunSettings, data)


def timed_backward_counter() -> list[float]:
    """Wrap ``core.policy_gradient.backward`` (a module global, looked up at call time by the updates) so
    that its wall time adds up in the returned one-element list."""
    from herobench.core import policy_gradient

    seconds = [0.0]
    plain_backward = policy_gradient.backward

    def timed_backward(loss, accelerator=None):
        t = time.perf_counter()
        plain_backward(loss, accelerator)
        if torch.cuda.is_available() and loss.is_cuda:
            torch.cuda.synchronize(loss.device)
        seconds[0] += time.perf_counter() - t

    policy_gradient.backward = timed_backward
    return seconds


def main() -> None:
    args = parse_args()
    from herobench.harness.runlog import read_jsonl
    from herobench.harness.runner import prepare

    backward_seconds = timed_backward_counter()
    tmp = tempfile.mkdtemp(prefix="bench-iteration-")
    model, what, tiny = (args.model, f"{args.model}", False) if args.model is not None else default_model(tmp)
    t_setup = time.perf_counter()
    run = prepare(run_settings(args, model, tiny), out=Path(tmp) / "runs", progress=False)
    setup_s = time.perf_counter() - t_setup
    gen = run.gen
    if args.pipeline_only:
        print(f"model: {what} | torch threads {torch.get_num_threads()} | precision {args.precision}")
        return compare_with_diffusers(gen, run.method.train_prompts(run.task, 1)[0], args.batch, args.pipeline_rounds)

    u0, t0 = gen.unet_seconds, time.perf_counter()  # one held-out evaluation (timed apart)
    run.evaluate()
    eval_s, eval_unet = time.perf_counter() - t0, gen.unet_seconds - u0
    timed = time_iterations(run, args.budget, backward_seconds)
    iters, iter_s = len(timed["rows"]), timed["seconds"]

    print(f"model:        {what}")
    print(f"device:       {args.device} | torch threads {torch.get_num_threads()} ({openmp.describe()}) | sampler "
          f"{gen.sampler.steps} steps, eta {gen.sampler.eta}, CFG {gen.sampler.guidance_scale} | precision "
          f"{args.precision}")
    print(f"run:          hand/hero, batch {args.batch}, {iters} iteration(s), {run.labels_done} labels, "
          f"encoder epochs {run.method.options.encoder_epochs}" + (", rater.flip_rate 0.5 (tiny model)" if tiny else ""))
    print(f"setup:        {setup_s:.2f} s (load model, LoRA, run folder)\n")
    print_breakdown(timed)
    print(f"\nevaluation ({args.eval_images} images, once): {eval_s:.3f} s, "
          f"{100 * eval_unet / eval_s:.1f} % in UNet forward calls")
    n_iter = -(-args.projection_labels // args.batch)
    n_eval = -(-args.projection_labels // 64) + 1  # the runner's default: every 64 labels, and at 0
    projected = n_iter * iter_s / iters + n_eval * eval_s + setup_s
    print(f"projected {args.projection_labels}-label HERO run ({n_iter} iterations, {n_eval} evaluations of "
          f"{args.eval_images} images, setup): {projected:.0f} s = {projected / 60:.1f} min")
    if not args.no_pipeline:
        compare_with_diffusers(gen, run.method.train_prompts(run.task, 1)[0], args.batch, args.pipeline_rounds)
    if not args.no_flops:
        repr_s = sum(r.get("seconds_representation", 0.0) for r in timed["rows"])
        report_flops(run, iters, timed["unet"] + timed["backward"], repr_s)
    print(f"\npeak memory:  {peak_rss_mib():.0f} MiB resident (maxrss)" + (
        f", CUDA peak allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if args.device == "cuda" else ""))
    evals = read_jsonl(run.dir.evals)
    print(f"(sanity: success at 0 labels {evals[0]['success_rate']:.3f}; run folder {run.dir.path})")


if __name__ == "__main__":
    main()
