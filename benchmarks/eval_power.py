"""What difference can an evaluation detect? Power of the paired test herobench reports (exact McNemar on the
same held-out images, ``herobench report``'s ``paired.csv``, seeds pooled) to detect a success difference
``--delta`` at p < ``--alpha``, for a range of evaluation sizes and churns (the share of images a finetuned model
turns good -> bad while it gains ``delta + churn``; measured churns are in results/*/paired.csv as ``lost/n``).

    python benchmarks/eval_power.py                 # delta 0.1, 3 seeds, churn 0 / 0.05 / 0.10 / 0.15
    python benchmarks/eval_power.py --delta 0.05 --seeds 1

Issue 25, item 4. Exact computation (``herobench/stats.py: mcnemar_power``), no sampling.
"""

from __future__ import annotations

import argparse

from herobench.stats import mcnemar_power


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delta", type=float, default=0.1, help="success difference to detect [0.1]")
    ap.add_argument("--seeds", type=int, default=3, help="seeds pooled in the paired test [3]")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--images", type=int, nargs="+", default=[64, 128, 256, 512], help="images per seed")
    ap.add_argument("--churn", type=float, nargs="+", default=[0.0, 0.05, 0.10, 0.15])
    args = ap.parse_args()
    print(f"power to detect +{args.delta} success at p < {args.alpha} (exact McNemar, {args.seeds} seeds pooled)")
    print(f"{'images/seed':>11}  " + "  ".join(f"churn {c:.2f}" for c in args.churn))
    for n in args.images:
        row = [mcnemar_power(n * args.seeds, args.delta + c, c, args.alpha) for c in args.churn]
        print(f"{n:>11}  " + "  ".join(f"{p:>10.3f}" for p in row))


if __name__ == "__main__":
    main()
