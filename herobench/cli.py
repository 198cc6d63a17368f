"""The ``herobench`` command line. Thin: every command parses its options and calls the Python API."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from herobench import __version__
from herobench.errors import HerobenchError

EXAMPLES = """
\b
Examples:
  herobench ls tasks
  herobench run --task hand --method hero --budget 512 --seed 0
  herobench run --task blue-rose --method pretrained --budget 0
  herobench run --task hand --method d3po --budget 256 --set sampler.steps=10
  herobench run --resume runs/hand-hero-s0
  herobench report runs/hand-hero-s0 runs/hand-hero-s1 --out report/
  herobench glyphworld grid --task hand --out hand.png
"""


class _Group(click.Group):
    """Turn every HerobenchError into one line on stderr and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HerobenchError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Group, help="herobench: HERO and its baselines under one feedback budget.\n" + EXAMPLES)
@click.version_option(__version__, prog_name="herobench")
def main() -> None:
    pass


@main.command("ls")
@click.argument("what", type=click.Choice(["tasks", "methods", "oracles", "all"]), default="all")
def ls_cmd(what: str) -> None:
    """List the registered tasks, methods and oracles."""
    from herobench import catalog

    for kind, names in catalog.listing(what).items():
        click.echo(f"{kind}:")
        for name, desc in names:
            click.echo(f"  {name:<22} {desc}")


@main.command("run")
@click.option("--task", help="task name (see `herobench ls tasks`) or path to a task.toml")
@click.option("--method", default="hero", show_default=True, help="method name (see `herobench ls methods`)")
@click.option("--budget", "budget", type=int, default=None, help="label budget (default: the task's)")
@click.option("--seed", type=int, default=None, help="run seed [default: 0]")
@click.option("--model", default=None, help="'glyphworld' (default) or a local Stable Diffusion folder")
@click.option("--oracle", default=None, help="oracle giving the feedback (default: the task's)")
@click.option("--rater", "rater_kind", type=click.Choice(["simulated"]), default="simulated", show_default=True)
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None, help="TOML run config")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a config key (repeatable)")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="folder that receives the run folder")
@click.option("--resume", type=click.Path(path_type=Path), default=None, help="continue a killed run folder")
@click.option("--quiet", is_flag=True, help="no progress bar")
def run_cmd(task, method, budget, seed, model, oracle, rater_kind, config_path, overrides, device, out, resume, quiet):
    """Run one method on one task under a label budget, then print a summary.

    \b
    Examples:
      herobench run --task hand --method hero --budget 512
      herobench run --task hand --method pretrained --budget 0
      herobench run --task mountain --method hero --set rater.profile=snowy
      herobench run --resume runs/hand-hero-s0
    """
    from herobench.harness.runner import run as run_api
    from herobench.harness.settings import settings_from_cli

    if resume is None and not task and config_path is None:
        raise click.UsageError("give --task (or --config, or --resume RUN_DIR)")
    settings = None
    if resume is None:
        settings = settings_from_cli(task=task, method=method, budget=budget, seed=seed, model=model,
                                     oracle=oracle, device=device, config_path=config_path,
                                     overrides=list(overrides))
    path, summary = run_api(settings, out=out, resume=resume, progress=not quiet)
    click.echo(format_summary(path, summary))


def format_summary(path: Path, summary: dict) -> str:
    lines = [f"run folder: {path}",
             f"task {summary['task']} | method {summary['method']} | seed {summary['seed']} | "
             f"labels {summary['labels']} | best picks {summary['best_picks']} | pairs {summary['pairs']} | "
             f"iterations {summary['iterations']}"]
    for k, end in summary["success_end"].items():
        start = summary["success_start"].get(k, float("nan"))
        lo, hi = summary["interval_end"][k]
        lines.append(f"  success ({k} prompts): {start:.3f} -> {end:.3f}  (95% CI {lo:.3f}-{hi:.3f})")
    t = summary.get("timings", {})
    lines.append(f"  wall {summary['seconds']:.1f} s | " + " | ".join(f"{k} {v:.1f} s" for k, v in t.items()))
    return "\n".join(lines)


@main.command("validate")
@click.option("--task", required=True, help="task name or path to a task.toml")
def validate_cmd(task: str) -> None:
    """Check a task spec (and that its prompts and oracle resolve)."""
    from herobench.harness.tasks import load_task
    from herobench.oracles import ORACLES

    spec = load_task(task)
    for backend, name in spec.oracles.items():
        if backend == "glyphworld" and name not in ORACLES:
            raise HerobenchError(f"task '{spec.name}': oracle '{name}' is not registered")
    click.echo(f"ok: task '{spec.name}' v{spec.version}: {len(spec.train_prompts)} train / "
               f"{len(spec.eval_prompts)} eval prompts, oracles {spec.oracles}, "
               f"default budget {spec.default_budget_labels}")


@main.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("report"), show_default=True)
@click.option("--target", "targets", type=float, multiple=True, help="success rate for 'labels to reach' (repeatable)")
def report_cmd(run_dirs, out, targets):
    """Merge run folders into a tidy table (CSV) and success-vs-labels plots (PNG)."""
    from herobench.harness.report import write_report

    written = write_report(list(run_dirs), out, targets=tuple(targets))
    for p in written.values():
        click.echo(f"wrote {p}")


@main.group("glyphworld")
def glyphworld_cmd() -> None:
    """The embedded GlyphWorld: train its model, look at samples, calibrate."""


@glyphworld_cmd.command("train")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="folder for the diffusers model")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--unet-steps", type=int, default=None, help="override the number of UNet training steps")
@click.option("--vae-steps", type=int, default=None)
@click.option("--n-images", type=int, default=None)
def glyphworld_train(out: Path, seed: int, unet_steps: int | None, vae_steps: int | None, n_images: int | None):
    """Train the GlyphWorld model from a seed (about an hour on 2 CPU cores)."""
    import dataclasses

    from herobench.glyphworld.train import TrainConfig, train_glyphworld

    cfg = TrainConfig(seed=seed)
    changes = {k: v for k, v in (("unet_steps", unet_steps), ("vae_steps", vae_steps), ("n_images", n_images)) if v}
    cfg = dataclasses.replace(cfg, **changes)
    path = train_glyphworld(out, cfg)
    click.echo(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
