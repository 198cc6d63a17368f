"""``herobench bench``: grid files, cell expansion, skip / resume / refuse of existing cells, parallel
workers giving the same runs as one process, and the merged report."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from tinysd import build_tiny_sd

from herobench.cli import main
from herobench.errors import ConfigError, HerobenchError, UnknownNameError
from herobench.harness.bench import bench, cell_status, cells, load_grid, run_cells
from herobench.harness.runlog import read_jsonl

REPO = Path(__file__).resolve().parents[1]
GRIDS = REPO / "benchmarks" / "grids"


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    path = build_tiny_sd(tmp_path_factory.mktemp("tinyworld"), prediction_type="v_prediction", seed=3)
    (path / "herobench.json").write_text(json.dumps({"backend": "glyphworld", "sampler": {"steps": 3}}))
    return path


def write_grid(tmp_path: Path, model: Path, methods=("hero", "pretrained"), seeds=(0,), extra: str = "") -> Path:
    grid = tmp_path / "grid.toml"
    grid.write_text(f"""
[grid]
tasks = ["hand"]
methods = {json.dumps(list(methods))}
seeds = {json.dumps(list(seeds))}
[settings]
budget_labels = 8
batch_size = 4
model = "{model}"
[settings.sampler]
steps = 3
guidance_scale = 2.0
[settings.eval]
n_images = 8
every_labels = 4
batch_size = 8
{"[method_options.hero]" + chr(10) + "encoder_epochs = 3" if "hero" in methods else ""}
[report]
targets = [0.5]
{extra}
""")
    return grid


# -------------------------------------------------------------------------------------- grid files


def test_shipped_reference_grid_expands_to_every_cell_with_its_budget():
    spec = load_grid(GRIDS / "glyphworld.toml")
    all_cells = cells(spec)
    assert len(all_cells) == 7 * 8 * 3
    names = {c.name for c in all_cells}
    assert len(names) == len(all_cells) and "hand-hero-no-fgg-s2" in names and "nsfw-dreambooth-s0" in names
    budgets = {c.settings.task: c.settings.budget_labels for c in all_cells}
    assert budgets["hand"] == 1152 and {b for t, b in budgets.items() if t != "hand"} == {512}
    reg = cells(load_grid(GRIDS / "regression.toml"))
    assert [c.name for c in reg] == ["hand-hero-s0", "hand-ddpo-s0", "hand-pretrained-s0"]
    assert {c.settings.budget_labels for c in reg} == {64} and reg[0].settings.eval.n_images == 64


@pytest.mark.parametrize(
    "extra, needle",
    [
        ("[budgets]\nhnad = 3", "budgets.hnad: not in the grid; did you mean 'hand'?"),
        ("[method_options.ddpo]\nlr = 1.0", "method_options.ddpo: not in the grid"),
        ("[reprot]\ntargets = [1]", "unknown key 'reprot'; did you mean 'report'?"),
    ],
)
def test_bad_grid_files_are_refused_with_the_key(tmp_path, extra, needle):
    with pytest.raises(ConfigError, match=needle.replace("?", r"\?").replace("(", r"\(")):
        load_grid(write_grid(tmp_path, Path("/m"), extra=extra))


def test_grid_axes_cannot_be_set_as_shared_settings(tmp_path):
    grid = write_grid(tmp_path, Path("/m"))
    with pytest.raises(ConfigError, match="the grid sets 'seed'"):
        load_grid(grid, ["seed=3"])
    grid.write_text(grid.read_text().replace("batch_size = 4", "batch_size = 4\nmethod = 'ddpo'", 1))
    with pytest.raises(ConfigError, match="settings.method: set by"):
        load_grid(grid)
    with pytest.raises(ConfigError, match="unknown key 'sampler.stepz'"):
        load_grid(write_grid(tmp_path, Path("/m")), ["sampler.stepz=3"])
    with pytest.raises(ConfigError, match="a grid runs simulated raters"):
        cells(load_grid(write_grid(tmp_path, Path("/m")), ["rater.kind=human"]))


def test_unknown_task_or_method_fails_before_anything_runs(tmp_path):
    grid = write_grid(tmp_path, Path("/m"), methods=("hero", "herro"))
    with pytest.raises(UnknownNameError, match="did you mean 'hero'"):
        bench(grid, tmp_path / "out", echo=lambda s: None)
    assert not (tmp_path / "out").exists()


def test_a_missing_model_is_one_error_before_anything_runs(tmp_path):
    with pytest.raises(HerobenchError, match="does not exist"):
        bench(write_grid(tmp_path, Path("/does/not/exist")), tmp_path / "out", echo=lambda s: None)
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_cells_from_the_cli():
    res = CliRunner().invoke(main, ["bench", str(GRIDS / "glyphworld.toml"), "--dry-run", "--out", "/nonexistent/x"])
    assert res.exit_code == 0, res.output
    assert "168 cells" in res.output and "hand-hero-s0" in res.output and "labels 1152" in res.output
    assert "hand-pretrained-s0                 new      labels 0" in res.output  # no labels for a baseline
    assert not Path("/nonexistent/x").exists()


# -------------------------------------------------------------------------------------- running


def test_grid_runs_skips_resumes_and_refuses_other_settings(tiny_world, tmp_path):
    grid = write_grid(tmp_path, tiny_world)
    out = tmp_path / "out"
    lines: list[str] = []
    results = bench(grid, out, echo=lines.append)
    assert [(r.name, r.status) for r in results] == [("hand-hero-s0", "done"), ("hand-pretrained-s0", "done")]
    assert (out / "report" / "curves.csv").exists() and (out / "report" / "labels_to_target.csv").exists()
    assert json.loads((out / "hand-hero-s0" / "summary.json").read_text())["labels"] == 8
    labels_before = read_jsonl(out / "hand-hero-s0" / "labels.jsonl")

    # a second invocation skips every finished cell (no label is asked for again)
    again = bench(grid, out, echo=lines.append, report=False)
    assert [r.status for r in again] == ["skipped", "skipped"]
    assert read_jsonl(out / "hand-hero-s0" / "labels.jsonl") == labels_before

    # a killed cell (no summary yet) is resumed through the runner; one killed before its config is rerun
    (out / "hand-hero-s0" / "summary.json").unlink()
    shutil.rmtree(out / "hand-pretrained-s0")
    (out / "hand-pretrained-s0").mkdir()
    spec = load_grid(grid)
    assert [cell_status(c, out) for c in cells(spec)] == ["partial", "new"]
    third = bench(grid, out, echo=lines.append, report=False)
    assert [(r.status, r.resumed) for r in third] == [("done", True), ("done", False)]
    assert read_jsonl(out / "hand-hero-s0" / "labels.jsonl") == labels_before
    assert (out / "hand-pretrained-s0" / "summary.json").exists()

    # the same --out with other settings is refused before anything runs
    with pytest.raises(HerobenchError, match=r"budget_labels: grid 12, folder 8"):
        bench(grid, out, overrides=["budget_labels=12"], echo=lines.append)


def test_only_runs_the_matching_cells_and_records_each_as_it_finishes(tiny_world, tmp_path):
    grid = write_grid(tmp_path, tiny_world, methods=("hero", "pretrained"), seeds=(0, 1))
    out, records = tmp_path / "out", tmp_path / "results" / "records"
    lines: list[str] = []
    results = bench(grid, out, echo=lines.append, report=False, only_cells=["hand-pretrained-*", "hand-hero-s1"],
                    records=records)
    assert [(r.name, r.status) for r in results] == [("hand-hero-s1", "done"), ("hand-pretrained-s0", "done"),
                                                   ("hand-pretrained-s1", "done")]
    assert "= 3 of 4 cells" in lines[0]
    assert not (out / "hand-hero-s0").exists()  # the rest of the grid is not touched
    assert sorted(p.name for p in records.iterdir()) == ["hand-hero-s1", "hand-pretrained-s0", "hand-pretrained-s1"]
    for name in ("hand-hero-s1", "hand-pretrained-s0"):  # what a report reads, byte for byte; no labels or images
        assert sorted(p.name for p in (records / name).iterdir()) == ["config.json", "evals.jsonl", "summary.json"]
        for file in ("config.json", "evals.jsonl", "summary.json"):
            assert (records / name / file).read_bytes() == (out / name / file).read_bytes()
    # the records alone report, where the run folders are gone
    shutil.rmtree(out)
    res = CliRunner().invoke(main, ["report", *map(str, sorted(records.iterdir())), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    runs_csv = (tmp_path / "rep" / "runs.csv").read_text()
    assert "hand-hero-s1" in runs_csv and "hand-pretrained-s1" in runs_csv


def test_only_with_a_pattern_matching_no_cell_is_one_error(tmp_path):
    res = CliRunner().invoke(main, ["bench", str(GRIDS / "table2_v3.toml"), "--dry-run", "--out", str(tmp_path / "o"),
                                    "--only", "narcissus-hero-s*", "--only", "narcisus-*"])
    assert res.exit_code != 0
    assert "--only 'narcisus-*' matches none of the grid's 192 cells" in res.output


def test_save_record_refuses_an_unfinished_run_and_names_an_unwritable_folder(tmp_path):
    from herobench.harness.grid_select import save_record

    run = tmp_path / "hand-hero-s0"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(HerobenchError, match="not finished"):
        save_record(run, tmp_path / "records")
    assert not (tmp_path / "records").exists()
    (run / "summary.json").write_text("{}")
    (tmp_path / "file").write_text("x")  # a file where the records folder should be
    with pytest.raises(HerobenchError, match="--records: cannot write"):
        save_record(run, tmp_path / "file")
    assert save_record(run, tmp_path / "records") == tmp_path / "records" / "hand-hero-s0"
    assert (tmp_path / "records" / "hand-hero-s0" / "summary.json").read_text() == "{}"


def test_a_failing_cell_does_not_stop_the_grid(tiny_world, tmp_path):
    # well-typed options that only the method's setup refuses: the cell fails when it runs
    grid = write_grid(tmp_path, tiny_world, methods=("ddpo", "pretrained"),
                      extra="[method_options.ddpo]\nlora_targets = []")
    res = CliRunner().invoke(main, ["bench", str(grid), "--out", str(tmp_path / "out"), "--no-report"])
    assert res.exit_code == 1, res.output
    assert "hand-ddpo-s0" in res.output and "FAILED" in res.output and "lora_targets" in res.output
    assert (tmp_path / "out" / "hand-pretrained-s0" / "summary.json").exists()
    assert "lora_targets" in (tmp_path / "out" / "failed" / "hand-ddpo-s0.txt").read_text()


def test_options_a_method_refuses_stop_the_grid_before_anything_runs(tmp_path):
    grid = write_grid(tmp_path, Path("/m"), methods=("hero", "pretrained"),
                      extra="[method_options.pretrained]\nbogus = 1")
    res = CliRunner().invoke(main, ["bench", str(grid), "--out", str(tmp_path / "out"), "--dry-run"])
    assert res.exit_code == 2 and "cell hand-pretrained-s0:" in res.output and "bogus" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.slow  # two spawned workers import torch + diffusers: ~10 s idle, ~30 s on a loaded 2-core machine
def test_parallel_workers_give_the_same_runs_as_one_process(tiny_world, tmp_path):
    grid = write_grid(tmp_path, tiny_world, methods=("ddpo",), seeds=(0, 1))
    spec = load_grid(grid)
    serial = run_cells(cells(spec), tmp_path / "serial", jobs=1)
    parallel = run_cells(cells(spec), tmp_path / "parallel", jobs=2)
    assert [r.status for r in serial + parallel] == ["done"] * 4
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time", "t")} for r in rows]  # noqa: E731
    for a, b in zip(serial, parallel):
        assert strip(read_jsonl(Path(a.path) / "labels.jsonl")) == strip(read_jsonl(Path(b.path) / "labels.jsonl"))
        assert read_jsonl(Path(a.path) / "evals.jsonl") == read_jsonl(Path(b.path) / "evals.jsonl")


def test_gpu_workers_each_see_one_gpu(monkeypatch):
    import queue

    import torch

    from herobench.harness.bench import _init_worker

    for var in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    q: queue.Queue = queue.Queue()
    for gpu in ("1", "0"):
        q.put(gpu)
    threads = torch.get_num_threads()
    try:
        _init_worker(q)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1" and torch.get_num_threads() == 1
        _init_worker(q)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_workers_die_with_a_killed_grid(tmp_path):
    """A grid process stopped with SIGTERM (``kill``, a scheduler) takes its spawned workers with it."""
    script = tmp_path / "grid.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, os, time
        from herobench.harness.bench import die_with_parent

        def worker(q):
            die_with_parent()
            q.put(os.getpid())
            time.sleep(120)

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("spawn")
            q = ctx.Queue()
            ctx.Process(target=worker, args=(q,)).start()
            print(q.get(timeout=60), flush=True)
            time.sleep(120)
    """))
    grid = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(grid.stdout.readline())
        assert _alive(worker)
        grid.send_signal(signal.SIGTERM)
        grid.wait(timeout=30)
        deadline = time.time() + 10
        while _alive(worker) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(worker)
    finally:
        grid.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("grid", sorted(p.name for p in GRIDS.glob("*.toml")))
def test_every_shipped_grid_expands(grid):
    """Each grid in benchmarks/grids loads, names known tasks and methods, and gives cells with settings."""
    expanded = cells(load_grid(GRIDS / grid))
    assert expanded and all(c.settings.task and c.settings.method for c in expanded)
    assert len({c.name for c in expanded}) == len(expanded)
