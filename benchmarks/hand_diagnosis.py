"""Why does the GlyphWorld model draw a normal hand for `1 hand` about half the time, when its training
scenes for that caption show one 17 % of the time? (Issue 3's remaining calibration miss.)

Three measurements, each printed as the oracle's finger-count mix:

1. **training scenes**: ``--n`` renders of ``render_for_prompt("1 hand")``, i.e. what the model was taught
   for that caption;
2. **VAE round trip**: ``--n-vae`` renders of each hand kind (normal, 3/4/6/7 fingers, detached, fused),
   encoded and decoded by the shipped VAE, judged before and after -- can the latent space hold an anomaly?
3. **caption control**: ``--n`` samples for each hand caption of the training vocabulary, all from the same
   seeds at the model card's sampler (and ``--cfg`` values for ``1 hand``) -- does the text decide the
   finger count?

    python benchmarks/hand_diagnosis.py                    # about 3 minutes on 2 cores
    python benchmarks/hand_diagnosis.py --model DIR --n 256
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np
import torch

from herobench.core.images import from_uint8
from herobench.glyphworld import render
from herobench.glyphworld.calibrate import load_generator, sample_task
from herobench.oracles.glyphworld_exact import GlyphOracle
from herobench.paths import glyphworld_model_dir

CAPTIONS = ["1 hand", "a hand", "a normal hand", "a hand with three fingers", "a hand with four fingers",
            "a hand with five fingers", "a hand with six fingers", "a hand with seven fingers",
            "a hand with a detached finger", "a hand with fused fingers"]
KINDS = ["normal", "n3", "n4", "n6", "n7", "detached", "fused"]


def mix(oracle: GlyphOracle, images) -> str:
    """``normal 0.47 | fingers 4:20 5:36 6:8 | detached 6 fused 3`` for a batch of images."""
    verdicts = oracle.judge(images, ["1 hand"] * len(images))
    read = [v for v in verdicts if v.readable]
    counts = collections.Counter(v.attrs["n_fingers"] for v in read)
    fingers = " ".join(f"{k}:{counts[k]}" for k in sorted(counts))
    det = sum(1 for v in read if v.attrs["detached"])
    fus = sum(1 for v in read if v.attrs["fused"])
    normal = sum(v.success for v in verdicts) / len(verdicts)
    return (f"normal {normal:.2f} | fingers {fingers} | detached {det} fused {fus}"
            f" | unreadable {len(verdicts) - len(read)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None,
                    help="GlyphWorld model folder (default: the shipped one)")
    ap.add_argument("--n", type=int, default=128, help="samples per caption / training scenes")
    ap.add_argument("--n-vae", type=int, default=100, help="renders per hand kind for the VAE round trip")
    ap.add_argument("--cfg", type=float, nargs="*", default=[1.0, 2.0], help="extra CFG scales for `1 hand`")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    model = args.model or Path(glyphworld_model_dir())
    gen = load_generator(model, device=args.device)
    oracle = GlyphOracle("hand")
    rng = np.random.default_rng(args.seed)

    scenes = [render.render_for_prompt("1 hand", rng)[0] for _ in range(args.n)]
    print(f"1. training scenes for `1 hand` (n={args.n}): {mix(oracle, from_uint8(np.stack(scenes)))}")

    print(f"2. VAE round trip ({args.n_vae} renders per kind): before -> after")
    vae = gen.components.vae
    for kind in KINDS:
        imgs = from_uint8(np.stack(
            [render.hand.draw(render.hand.params(rng, {kind: 1.0}), rng) for _ in range(args.n_vae)]))
        with torch.no_grad():
            x = (imgs * 2 - 1).to(args.device, vae.dtype)
            rec = vae.decode(vae.encode(x).latent_dist.mean).sample.float().cpu()
        print(f"   {kind:9s} {mix(oracle, imgs)}")
        print(f"   {'':9s} {mix(oracle, ((rec + 1) / 2).clamp(0, 1))}")

    s = gen.sampler
    print(f"3. model samples, same seeds for every caption (DDIM {s.steps}, eta {s.eta}, "
          f"CFG {s.guidance_scale}; n={args.n} each)")
    for caption in CAPTIONS:
        print(f"   {caption:30s} {mix(oracle, sample_task(gen, [caption], args.n, args.seed))}")
    for cfg in args.cfg:
        g = load_generator(model, guidance_scale=cfg, device=args.device)
        label = f"1 hand @ CFG {cfg}"
        print(f"   {label:30s} {mix(oracle, sample_task(g, ['1 hand'], args.n, args.seed))}")


if __name__ == "__main__":
    main()
