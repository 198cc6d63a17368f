"""How much of a finished HERO run's success comes from its noise pool, and how much from its weights?

The harness evaluates every method on the same held-out N(0, I) noise (fair: the pool is information the
baselines do not have). ``method_options.eval_from_pool`` generates HERO's evaluation images from its noise
pool instead (HERO's pi_HERO, documented in herobench as the paper's generation). For each HERO run folder
this evaluates the final checkpoint three ways on the run's own held-out evaluation (same prompts, same
perturbation noise, same sampler):

- ``N(0, I)``: the run's last recorded evaluation (what the harness reports);
- ``pool``: the trained weights, initial noises from the run's final pool;
- ``pool, untrained``: the same pool with the LoRA adapter off (``core.lora.reference_policy``): the
  pretrained model.

If ``pool`` ≈ ``pool, untrained`` the gain is noise selection, not finetuning. Run folders are copied to a
temporary folder first, so nothing in them changes.

    python benchmarks/pool_evaluation.py runs/blue-rose-comparison/blue-rose-hero-s*
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

from herobench.core.lora import reference_policy
from herobench.harness.runner import prepare


def pool_eval(run_dir: Path, untrained: bool) -> list[dict]:
    """Evaluate a copy of ``run_dir``'s last checkpoint with ``eval_from_pool`` on (without its LoRA if
    ``untrained``); returns the evaluation rows."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run_dir.name
        shutil.copytree(run_dir, copy)
        run = prepare(None, resume=copy, progress=False)
        if not hasattr(run.method.options, "eval_from_pool"):
            raise SystemExit(f"error: {run_dir} is not a HERO run (method {run.settings.method!r})")
        run.method.options = dataclasses.replace(run.method.options, eval_from_pool=True)
        unet = run.gen.components.unet
        with reference_policy(unet) if untrained else contextlib.nullcontext():
            return run.evaluate()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished HERO run folders")
    args = ap.parse_args()
    print(f"{'run':<28} {'labels':>6} {'set':<6} {'N(0, I)':>8} {'pool':>8} {'pool, untrained':>16}")
    for run_dir in args.runs:
        last = {}
        for line in (run_dir / "evals.jsonl").read_text().splitlines():
            row = json.loads(line)
            last[row["prompt_set"]] = row
        trained = pool_eval(run_dir, untrained=False)
        base = pool_eval(run_dir, untrained=True)
        for t, b in zip(trained, base):
            plain = last[t["prompt_set"]]
            print(f"{run_dir.name:<28} {t['labels']:>6} {t['prompt_set']:<6} {plain['success_rate']:>8.3f} "
                  f"{t['success_rate']:>8.3f} {b['success_rate']:>16.3f}", flush=True)


if __name__ == "__main__":
    main()
