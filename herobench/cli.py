"""The ``herobench`` command line. Thin: every command parses its options and calls the Python API."""

from __future__ import annotations

import sys
from pathlib import Path

# How idle OpenMP threads wait (sleep at once on a busy machine, spin briefly on an idle one): read once when
# torch's OpenMP runtime starts, so it is chosen here, before anything imports torch (herobench/openmp.py).
from herobench.openmp import choose_wait_policy

choose_wait_policy()

import click  # noqa: E402

from herobench import __version__  # noqa: E402
from herobench.errors import HerobenchError, os_error_message  # noqa: E402

EXAMPLES = """
\b
Examples:
  herobench ls tasks
  herobench run --task hand --method hero --budget 512 --seed 0
  herobench run --task blue-rose --method pretrained --budget 0
  herobench run --task hand --method d3po --budget 256 --set sampler.steps=10
  herobench run --resume runs/hand-hero-s0
  herobench report runs/hand-hero-s0 runs/hand-hero-s1 --out report/
  herobench bench benchmarks/grids/glyphworld.toml --out runs/glyphworld --jobs 2
  herobench compare --task hand --methods hero,ddpo,pretrained --seeds 3 --budget 512 --dry-run
  herobench glyphworld grid --task hand
"""


class _Group(click.Group):
    """Turn every HerobenchError, every file-system error (``OSError``: the path and the cause, e.g.
    ``error: runs/x/train.jsonl: no space left on device``) and click's own usage errors into one line on
    stderr and exit status 2. The one place an ``OSError`` becomes a message; whoever raised it removed
    what it had half-written."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HerobenchError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except OSError as e:
            click.echo(f"error: {os_error_message(e)}", err=True)
            sys.exit(2)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as e:  # click prints usage, a hint and the error on three lines
            if isinstance(e, getattr(click.exceptions, "NoArgsIsHelpError", ())):  # a bare group: its help
                e.show()
                sys.exit(e.exit_code)
            where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"error: {e.format_message()}{where}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        # commands return None; --help/--version and ctx.exit(n) return their exit code
        sys.exit(code if isinstance(code, int) else 0)


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
@click.option("--rater", "rater_kind", default=None, metavar="simulated|human|replay:LABELS.jsonl",
              help="who labels: the simulated rater (default), a person on a local web page (the URL is "
                   "printed), or a recorded label log replayed through the recorded-labels oracle")
@click.option("--host", default=None, help="--rater human: interface to serve the page on [default: 127.0.0.1]")
@click.option("--port", type=int, default=None, help="--rater human: port [default: any free port]")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None, help="TOML run config")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a config key (repeatable)")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="folder that receives the run folder")
@click.option("--resume", type=click.Path(path_type=Path), default=None, help="continue a killed run folder")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads [default: every core; on --resume the run's recorded count]. Idle "
                   "OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE; a short GOMP_SPINCOUNT when the machine is "
                   "idle at start; unless either is set), so other work on the cores costs little; use 1 on "
                   "cores heavily shared (docs/PERFORMANCE.md). Recorded in config.json: image bytes depend on it")
@click.option("--quiet/--progress", "quiet", default=None,
              help="no progress lines or bar / show them on a non-terminal too [default: shown on a terminal]")
@click.option("--log-with", "log_with", multiple=True, metavar="tensorboard|wandb|mlflow",
              help="also mirror train.jsonl / evals.jsonl to this tracker (repeatable; the JSONL files stay the record)")
def run_cmd(task, method, budget, seed, model, oracle, rater_kind, host, port, config_path, overrides, device, out,
            resume, threads, quiet, log_with):
    """Run one method on one task under a label budget, then print a summary.

    Progress goes to stderr (a line per phase and a bar over labels); the summary, which says whether the
    run moved from its own start (paired, image by image), goes to stdout.

    --config takes a TOML file of run settings: the keys of `--set` at the top level or in tables, e.g.
    `task = "hand"`, `method = "hero"`, `budget_labels = 256`, `batch_size = 64`, `[sampler]` steps /
    guidance_scale / eta, `[eval]` n_images / every_labels / batch_size, `[rater]` profile / flip_rate,
    `[method_options]` (the method's own options). Unknown keys are refused by name; flags and --set
    override the file. A run's config.json "settings" holds the same keys.

    --resume RUN continues a run folder; with --budget N above its recorded budget it continues to N.

    \b
    Examples:
      herobench run --task hand --method hero --budget 512
      herobench run --task hand --method pretrained --budget 0
      herobench run --task mountain --method hero --set rater.profile=snowy
      herobench run --task hand --method hero --set precision=bf16   # faster; its own determinism class
      herobench run --resume runs/hand-hero-s0
      herobench run --task hand --method hero --budget 128 --rater human --port 8765
      herobench run --task hand --method hero --budget 128 --rater replay:runs/hand-hero-s0/labels.jsonl
    """
    from herobench.harness.progress import Progress, closing_summary

    show = sys.stderr.isatty() if quiet is None else not quiet
    Progress(show).line("starting: importing torch and diffusers")
    from herobench.harness.runner import execute, prepare
    from herobench.harness.tracking import check_trackers

    settings = _run_settings(task, method, budget, seed, model, oracle, rater_kind, host, port, config_path,
                             overrides, device, resume)
    log_with = check_trackers(_split_names(log_with))
    _set_threads(threads, resume)
    if settings is not None:
        _warn_small_budget(settings)
    r = prepare(settings, out=out, resume=resume, progress=show, log_with=log_with,
                budget=budget if resume else None)
    if r.extended_from is not None:
        click.echo(f"resuming {r.dir.path}: budget extended from {r.extended_from} to {r.budget} labels", err=True)
    try:
        url = getattr(r.rater, "url", None)
        if url:  # one line, flushed: scripts and people read it while the run waits for labels
            click.echo(f"label the batches at: {url}")
            sys.stdout.flush()
        summary = execute(r)
    finally:
        r.close()
    if r.main:  # several processes (accelerate launch): the main one alone reports
        click.echo(format_summary(r.dir.path, summary))
        click.echo(closing_summary(r.dir.path, summary))


def _run_settings(task, method, budget, seed, model, oracle, rater_kind, host, port, config_path, overrides,
                  device, resume):
    """The run's settings from the flags (None on --resume: they come from the run folder)."""
    from herobench.harness.settings import settings_from_cli

    if resume is None and not task and config_path is None:
        raise click.UsageError("give --task (or --config, or --resume RUN_DIR)")
    if resume is not None:
        if rater_kind or host or port is not None:
            raise click.UsageError("--rater/--host/--port come from the run folder on --resume "
                                   "(a resumed human run serves on its recorded host and port)")
        return None
    rater_sets = _rater_overrides(rater_kind, host, port, oracle)
    return settings_from_cli(task=task, method=method, budget=budget, seed=seed, model=model, oracle=oracle,
                             device=device, config_path=config_path, overrides=rater_sets + list(overrides))


def _set_threads(threads: int | None, resume: Path | None) -> None:
    """``--threads``, else a resumed run's recorded count (its replayed batches were sampled with it),
    else torch's default (every core)."""
    import json

    if threads is None and resume is not None:
        try:
            threads = json.loads((Path(resume) / "config.json").read_text())["environment"].get("threads")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            threads = None  # prepare() reports an unreadable run folder
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def _warn_small_budget(settings) -> None:
    """One line when the budget is below one batch: the run learns once, from what the budget allows."""
    if 0 < settings.budget_labels < settings.batch_size:
        click.echo(f"warning: --budget {settings.budget_labels} is below one batch of {settings.batch_size} "
                   f"images: the run has one iteration of {settings.budget_labels} (lower --set "
                   f"batch_size=... to learn more than once)", err=True)


@main.command("compare")
@click.option("--task", required=True, help="task name (see `herobench ls tasks`) or path to a task.toml")
@click.option("--methods", required=True, metavar="A,B,...", help="methods to compare, comma-separated")
@click.option("--seeds", type=int, default=3, show_default=True, help="seeds 0..N-1 per method")
@click.option("--budget", type=int, default=None, help="label budget of every cell (default: the task's)")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="cells run in parallel (one thread each)")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="folder of the cell run folders [default: runs/compare-<task>]")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a shared setting, or method_options.<method>.<key>=VALUE (repeatable)")
@click.option("--dry-run", is_flag=True, help="print the plan and its estimated time; run nothing")
def compare_cmd(task, methods, seeds, budget, jobs, out, overrides, dry_run):
    """Compare methods on one task over seeds: plan with an estimated time, run (resumable), report.

    Runs the grid TASK x METHODS x seeds as `herobench bench` does (rerun the command to resume a killed
    comparison), then writes OUT/report/ and prints its tables (paired, image by image, against the
    untrained start and against HERO) and the curve PNG.

    \b
    Examples:
      herobench compare --task hand --methods hero,ddpo,d3po,pretrained --seeds 3 --budget 512 --dry-run
      herobench compare --task hand --methods hero,ddpo,pretrained --seeds 3 --budget 512 --jobs 2
      herobench compare --task hand --methods hero,ddpo --set sampler.steps=10 \\
          --set method_options.hero.encoder_epochs=50
    """
    from herobench.harness.bench import plan, plan_line, run_planned
    from herobench.harness.compare import compare_grid, estimate, estimate_lines
    from herobench.tasks import load_task

    spec = compare_grid(task, methods.split(","), seeds, budget, list(overrides))
    out = out if out is not None else Path("runs") / f"compare-{load_task(task).name}"
    rows = plan(spec, out)
    click.echo(plan_line(f"compare {task}", spec, rows, out, seeds))
    for cell, status, labels in rows:
        click.echo(f"  {cell.name:<34} {status:<8} labels {labels}")
    for line in estimate_lines(estimate(rows, out, roots=[Path("runs")]), jobs):
        click.echo(line)
    if dry_run:
        return
    source = {"compare": {"task": task, "methods": spec.grid.methods, "seeds": seeds, "budget": budget},
              "overrides": list(overrides)}
    results, written = run_planned(spec, rows, out, source, jobs=jobs, echo=click.echo)
    tables = written.get("tables.md")
    if tables is not None:
        click.echo(f"\n{tables}:\n{tables.read_text().rstrip()}\n")
    for path in sorted(p for p in written.values() if p.suffix == ".png"):
        click.echo(f"curve: {path}")
    if any(r.status == "failed" for r in results):
        sys.exit(1)


def _split_names(values: tuple[str, ...]) -> list[str]:
    """``--log-with a,b --log-with c`` -> ``["a", "b", "c"]``."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _rater_overrides(rater: str | None, host: str | None, port: int | None, oracle: str | None) -> list[str]:
    """``--rater``/``--host``/``--port`` as ``--set`` overrides (one validation path for every setting)."""
    import json

    rater = rater or "simulated"
    if (host is not None or port is not None) and rater != "human":
        raise click.UsageError("--host/--port only apply to --rater human")
    if rater == "simulated":
        return []
    if rater == "human":
        sets = ['rater.kind="human"']
        sets += [f"rater.host={json.dumps(host)}"] if host is not None else []
        sets += [f"rater.port={port}"] if port is not None else []
        return sets
    if rater.startswith("replay:") and rater[len("replay:"):]:
        if oracle:
            raise click.UsageError("--rater replay:LABELS replays through the recorded-labels oracle; drop --oracle")
        labels = Path(rater[len("replay:"):]).expanduser().resolve()
        if not labels.is_file():
            raise HerobenchError(f"--rater {rater}: no such label log")
        return ['oracle="recorded-labels"', f"oracle_options.labels={json.dumps(str(labels))}"]
    raise click.UsageError(f"--rater must be simulated, human or replay:LABELS.jsonl (got '{rater}')")


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
    from herobench.oracles import ORACLES
    from herobench.tasks import load_task

    spec = load_task(task)
    for backend, name in spec.oracles.items():
        if name not in ORACLES:
            raise HerobenchError(f"task '{spec.name}': {backend} oracle '{name}' is not registered")
    click.echo(f"ok: task '{spec.name}' v{spec.version}: {len(spec.train_prompts)} train / "
               f"{len(spec.eval_prompts)} eval prompts, oracles {spec.oracles}, "
               f"default budget {spec.default_budget_labels}")


@main.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="report folder [default: <the folder holding the runs>/report, e.g. runs/report]")
@click.option("--target", "targets", type=float, multiple=True,
              help="success rate for labels_to_target.csv (repeatable; the first is drawn on the plots): the "
                   "labels at which each curve first crosses it from below, mean over seeds with a bootstrap "
                   "interval (none from one seed)")
@click.option("--keep-records", is_flag=True,
              help="also copy what the report reads of each run (config.json, evals.jsonl, summary.json; no "
                   "checkpoints, labels or images) to OUT/records/, so the report can be made again, and "
                   "extended with new runs, where the run folders are gone: report OUT/records/* runs/new-*")
def report_cmd(run_dirs, out, targets, keep_records):
    """Merge run folders into a tidy table (CSV), tables.md and success-vs-labels plots (PNG).

    One run per seed: folders holding the same task, method and seed (a re-run makes hand-hero-s0-2) are
    duplicates; the one that got furthest (complete, then most labels, then newest) is used and the others
    are named as left out; duplicates whose settings differ in more than the budget are refused. A file, a
    folder without config.json or evaluations, or an unreadable one is skipped with a line saying why;
    those lines are also at the end of tables.md. tables.md has one table per label budget the runs
    recorded; † marks a seed that stopped before its own budget.
    """
    from herobench.harness.report import write_report

    written = write_report(list(run_dirs), out, targets=tuple(targets), echo=lambda m: click.echo(m, err=True),
                           keep=keep_records)
    for p in written.values():
        click.echo(f"wrote {p}")


@main.command("bench")
@click.argument("grid", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="folder of the cell run folders [default: runs/<grid file name>]")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="cells run in parallel (one thread each)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a [settings] key (repeatable)")
@click.option("--dry-run", is_flag=True, help="list the cells and their state; run nothing")
@click.option("--no-report", is_flag=True, help="skip the merged report at the end")
@click.option("--gpus", default="", metavar="0,1,...",
              help="local workers: pin worker i to GPU i (mod the list); use with --set device=cuda")
@click.option("--executor", default="local", show_default=True, metavar="local|ray|submitit",
              help="where cells run: local worker processes, Ray tasks, or SLURM jobs through submitit")
@click.option("--ray-address", default=None, help="ray: the cluster to join [default: start a local Ray]")
@click.option("--cpus-per-cell", type=float, default=1.0, show_default=True, help="ray/submitit: CPUs a cell requests")
@click.option("--gpus-per-cell", type=float, default=0.0, show_default=True,
              help="ray/submitit: GPUs a cell requests (use with --set device=cuda)")
@click.option("--slurm-partition", default=None, help="submitit: the SLURM partition")
@click.option("--slurm-time", "slurm_time", type=click.IntRange(min=1), default=720, show_default=True,
              help="submitit: a cell's time limit in minutes (a cell cut off resumes on the next bench)")
@click.option("--submitit-cluster", default="auto", show_default=True, metavar="auto|slurm|local|debug",
              help="submitit: auto = SLURM where srun exists, else local subprocesses")
@click.option("--submitit-folder", type=click.Path(path_type=Path), default=None,
              help="submitit: job scripts and logs [default: OUT/.submitit]")
@click.option("--shard", default=None, metavar="i/N", help="run only shard i of N (a deterministic split of the cells)")
@click.option("--only", "only_cells", multiple=True, metavar="GLOB",
              help="run only the cells whose folder name matches (repeatable), e.g. 'narcissus-hero-s*'")
@click.option("--records", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="copy each finished cell's record (config, evaluations, summary) to RECORDS/<cell>/ at once")
@click.option("--log-with", "log_with", multiple=True, metavar="tensorboard|wandb|mlflow",
              help="mirror each cell's train/eval logs to this tracker (repeatable)")
def bench_cmd(grid, out, jobs, overrides, dry_run, no_report, gpus, executor, ray_address, cpus_per_cell,
              gpus_per_cell, slurm_partition, slurm_time, submitit_cluster, submitit_folder, shard, only_cells,
              records, log_with):
    """Run a grid of tasks x methods x seeds (a TOML grid file), one run folder per cell.

    Finished cells are skipped and killed ones resumed, so rerunning the command completes a grid.
    At the end `herobench report` merges every finished cell into OUT/report/.

    \b
    Examples:
      herobench bench benchmarks/grids/glyphworld.toml --dry-run
      herobench bench benchmarks/grids/glyphworld.toml --out runs/glyphworld --jobs 2
      herobench bench benchmarks/grids/regression.toml --set model=path/to/model --out runs/reg
      herobench bench benchmarks/grids/glyphworld.toml --set device=cuda --jobs 4 --gpus 0,1,2,3
      herobench bench benchmarks/grids/glyphworld.toml --executor ray --ray-address auto --out /shared/runs
      herobench bench benchmarks/grids/glyphworld.toml --executor submitit --slurm-partition gpu \\
          --gpus-per-cell 1 --set device=cuda --out /shared/runs
      herobench bench benchmarks/grids/glyphworld.toml --shard 2/4 --out /shared/runs   # machine 2 of 4
      herobench bench benchmarks/grids/table2_v3.toml --only 'narcissus-*' --records results/x/records
    """
    from herobench.harness.bench import bench, parse_shard
    from herobench.harness.executors import ExecutorOptions

    out = out if out is not None else Path("runs") / grid.stem
    gpu_list = [g.strip() for g in gpus.split(",") if g.strip()]
    for g in gpu_list:  # what CUDA_VISIBLE_DEVICES accepts: an index or a GPU/MIG UUID
        if not (g.isdigit() or g.startswith(("GPU-", "MIG-"))):
            raise click.BadParameter(f"{g!r} is not a GPU index or UUID", param_hint="--gpus")
    options = ExecutorOptions(kind=executor, jobs=jobs, cpus_per_cell=cpus_per_cell, gpus_per_cell=gpus_per_cell,
                              ray_address=ray_address, slurm_partition=slurm_partition, slurm_time_min=slurm_time,
                              submitit_cluster=submitit_cluster,
                              submitit_folder=str(submitit_folder) if submitit_folder else None)
    from herobench.harness.tracking import check_trackers

    log_names = check_trackers(_split_names(log_with))  # (before the grid is planned: one error, up front)
    if gpu_list and options.kind != "local":
        raise click.UsageError("--gpus pins local workers; with --executor ray/submitit use --gpus-per-cell")
    results = bench(grid, out, jobs=jobs, overrides=list(overrides), dry_run=dry_run, report=not no_report,
                    gpus=gpu_list, echo=click.echo, executor=options,
                    shard=parse_shard(shard) if shard is not None else None, log_with=log_names,
                    only_cells=only_cells, records=records)
    if any(r.status == "failed" for r in results):
        sys.exit(1)


@main.group("glyphworld")
def glyphworld_cmd() -> None:
    """The embedded GlyphWorld: train its model, look at samples, calibrate."""


@glyphworld_cmd.command("train")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="folder for the diffusers model")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--unet-steps", type=int, default=None, help="override the number of UNet training steps")
@click.option("--vae-steps", type=int, default=None)
@click.option("--n-images", type=int, default=None)
@click.option("--threads", type=int, default=None,
              help="torch threads (default 2; use 1 when the machine is busy with other work)")
@click.option("--device", default="cpu", show_default=True,
              help="torch device for the VAE, UNet and text encoder (cuda: same random draws; an H200 ran 13-20 UNet "
                   "steps/s with three trainings sharing it)")
@click.option("--init-from", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="continue from a trained model folder (its tokenizer, text encoder, VAE and UNet; the VAE is "
                   "kept): how v3 was made from v2")
@click.option("--prediction-type", type=click.Choice(["epsilon", "v_prediction"]), default=None,
              help="the UNet's parametrization (default epsilon, SD-1.5's and v3's; v1/v2 were v_prediction, "
                   "trained with the card sampler DDIM 20 / CFG 3)")
@click.option("--unet-lr", type=float, default=None, help="override the UNet / text-encoder learning rate")
@click.option("--warmup-steps", type=int, default=None)
def glyphworld_train(out: Path, seed: int, unet_steps: int | None, vae_steps: int | None, n_images: int | None,
                     threads: int | None, device: str, init_from: Path | None, prediction_type: str | None,
                     unet_lr: float | None, warmup_steps: int | None):
    """Train the GlyphWorld model from a seed (about 80 minutes on 2 idle CPU cores)."""
    import dataclasses

    from herobench.glyphworld.train import TrainConfig, train_glyphworld

    cfg = TrainConfig(seed=seed)
    changes = {k: v for k, v in (("unet_steps", unet_steps), ("vae_steps", vae_steps), ("n_images", n_images),
                                 ("threads", threads), ("unet_lr", unet_lr), ("warmup_steps", warmup_steps),
                                 ("init_from", str(init_from) if init_from else None),
                                 ("prediction_type", prediction_type)) if v}
    cfg = dataclasses.replace(cfg, **changes)
    path = train_glyphworld(out, cfg, device=device)
    click.echo(f"wrote {path}")


@glyphworld_cmd.command("grid")
@click.option("--task", required=True, help="task name")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="PNG to write [default: runs/grids/<task>.png, <task>-truth.png with --truth]")
@click.option("--n", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--profile", default="default", show_default=True, help="rater profile (mountain: green|snowy)")
@click.option("--truth", is_flag=True, help="freshly rendered ground truth instead of model samples")
@click.option("--model", default="glyphworld", show_default=True)
@click.option("--lora", type=click.Path(path_type=Path), default=None, help="a run's checkpoints/latest/lora")
def glyphworld_grid(task, out, n, seed, profile, truth, model, lora):
    """Write a PNG grid of samples for a task with each verdict drawn on its tile."""
    from herobench.glyphworld import calibrate
    from herobench.registry import unknown_name_message
    from herobench.tasks import glyphworld_tasks, load_task, resolve_profile

    if task not in glyphworld_tasks():
        raise HerobenchError(unknown_name_message("GlyphWorld task", task, sorted(glyphworld_tasks())))
    profile = resolve_profile(load_task(task), profile)
    out = out if out is not None else Path("runs") / "grids" / f"{task}{'-truth' if truth else ''}.png"
    if truth:
        calibrate.ground_truth_grid(task, out, n=n, seed=seed, profile=profile)
    else:
        calibrate.model_grid(task, out, model=model, n=n, seed=seed, profile=profile, lora=lora)
    click.echo(f"wrote {out}")


@glyphworld_cmd.command("calibrate")
@click.option("--model", default="glyphworld", show_default=True)
@click.option("--n", type=click.IntRange(min=1), default=256, show_default=True, help="samples per task prompt set")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write calibration.json + grids here")
@click.option("--guidance-scale", type=float, default=None,
              help="measure at this CFG scale instead of the model card's (a sampler sweep)")
@click.option("--write-card", is_flag=True,
              help="write calibration.json and the model card (README.md) into the model folder")
@click.option("--device", default="cpu", show_default=True, help="torch device to sample on")
def glyphworld_calibrate(model, n, out, guidance_scale, write_card, device):
    """Pretrained success rate and unreadable rate per task prompt (the model card's table)."""
    import json as _json

    from herobench.glyphworld import calibrate
    from herobench.modelcard import resolve_model

    if write_card and guidance_scale is not None:
        raise click.UsageError("--write-card records the card's own sampler; drop --guidance-scale")
    model_dir = resolve_model(model)
    rows = calibrate.calibrate(model_dir, n=n, grid_dir=(out / "grids") if out else None,
                               guidance_scale=guidance_scale, device=device)
    click.echo(calibrate.markdown_table(rows))
    for miss in calibrate.band_misses(rows):
        click.echo(f"miss: {miss}")
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "calibration.json").write_text(_json.dumps(rows, indent=2))
    if write_card:
        from herobench.glyphworld.card import write_card as _write_card

        (model_dir / "calibration.json").write_text(_json.dumps(rows, indent=2))
        click.echo(f"wrote {_write_card(model_dir, rows)}")


@glyphworld_cmd.command("train-judges")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="folder for the judges [default: herobench/glyphworld/judges in the package]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--only", type=click.Choice(["clip", "yolo"]), default=None, help="train one of the two")
@click.option("--clip-steps", type=int, default=None, help="override glyphworld-clip's training steps")
@click.option("--yolo-epochs", type=int, default=None, help="override glyphworld-yolo's epochs")
def glyphworld_train_judges(out, seed, only, clip_steps, yolo_epochs):
    """Train the learned judges (glyphworld-clip, glyphworld-yolo) on renders (one CPU thread, ~30 min)."""
    import json as _json

    from herobench.glyphworld import train_judges

    which = (only,) if only else ("clip", "yolo")
    record = train_judges.train_judges(out or train_judges.JUDGES_DIR, seed, which, clip_steps, yolo_epochs,
                                       log=click.echo)
    click.echo(_json.dumps(record, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
