"""``herobench bench --executor ray|submitit``, per-cell claims and ``--shard`` (issue 29): a cell's
results are the same under every executor; two bench processes on one ``--out`` run every cell once; a
dead claimant's cell is taken over, a live one's never."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_bench import write_grid
from tinysd import build_tiny_sd

from herobench.cli import main
from herobench.errors import HerobenchError
from herobench.harness.bench import cells, load_grid, parse_shard, run_cell, run_cells, shard_of
from herobench.harness.claims import claim
from herobench.harness.executors import ExecutorOptions
from herobench.harness.runlog import read_jsonl

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    path = build_tiny_sd(tmp_path_factory.mktemp("tinyworld"), prediction_type="v_prediction", seed=3)
    (path / "herobench.json").write_text(json.dumps({"backend": "glyphworld", "sampler": {"steps": 3}}))
    return path


@pytest.fixture(scope="module")
def grid_cells(tiny_world, tmp_path_factory):
    """Two cells (HERO and DDPO) of the in-test grid, and their results under ``--executor local --jobs 2``."""
    folder = tmp_path_factory.mktemp("grid")
    spec = load_grid(write_grid(folder, tiny_world, methods=("hero", "ddpo")))
    expanded = cells(spec)
    reference = run_cells(expanded, folder / "local", jobs=2)
    assert [r.status for r in reference] == ["done", "done"], [r.error for r in reference]
    return expanded, reference


def cell_record(path: str | Path) -> tuple:
    """What a cell's results are: its labels (without wall times), evaluations, train statistics without
    times, and LoRA weights."""
    from safetensors.torch import load_file

    path = Path(path)
    timeless = lambda rows: [{k: v for k, v in r.items() if k not in ("time", "t") and "second" not in k}  # noqa: E731
                             for r in rows]
    lora = load_file(path / "checkpoints" / "latest" / "lora" / "pytorch_lora_weights.safetensors")
    return (timeless(read_jsonl(path / "labels.jsonl")), read_jsonl(path / "evals.jsonl"),
            timeless(read_jsonl(path / "train.jsonl")), {k: v.tolist() for k, v in sorted(lora.items())})


def assert_same_results(reference, results) -> None:
    assert [(r.name, r.status) for r in results] == [(r.name, "done") for r in reference], \
        [r.error for r in results]
    for a, b in zip(reference, results):
        assert cell_record(a.path) == cell_record(b.path), a.name


# -------------------------------------------------------------------------------------- executors


@pytest.mark.slow  # a local Ray on 2 CPUs and two fresh workers importing torch: ~1 min on 2 loaded cores
def test_ray_executor_gives_the_local_results(grid_cells, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    expanded, reference = grid_cells
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    try:
        results = run_cells(expanded, tmp_path / "ray", executor=ExecutorOptions(kind="ray", jobs=2))
    finally:
        ray.shutdown()
    assert_same_results(reference, results)


@pytest.mark.slow  # two submitit subprocesses importing torch: ~30 s on 2 loaded cores
def test_submitit_local_executor_gives_the_local_results(grid_cells, tmp_path):
    pytest.importorskip("submitit")
    expanded, reference = grid_cells
    opts = ExecutorOptions(kind="submitit", jobs=2, submitit_cluster="local", slurm_time_min=10)
    results = run_cells(expanded, tmp_path / "sub", executor=opts)
    assert_same_results(reference, results)
    assert list((tmp_path / "sub" / ".submitit").iterdir()), "the job folders (scripts, logs) are kept"


def test_a_missing_executor_package_is_one_error(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # (None in sys.modules: `import ray` raises ImportError)
    spec = load_grid(write_grid(tmp_path, tiny_world, methods=("pretrained",)))
    with pytest.raises(HerobenchError, match=r"pip install 'herobench\[ray\]'"):
        run_cells(cells(spec), tmp_path / "out", executor=ExecutorOptions(kind="ray"))


@pytest.mark.parametrize("args, needle", [
    (["--executor", "dask"], "--executor must be one of local, ray, submitit (got 'dask')"),
    (["--shard", "0/4"], "--shard must be i/N with 1 <= i <= N"),
    (["--shard", "2"], "--shard must be i/N"),
    (["--executor", "ray", "--gpus", "0"], "--gpus pins local workers"),
    (["--log-with", "neptune"], "--log-with must be one of tensorboard, wandb, mlflow"),
])
def test_bad_executor_options_are_one_line_errors(tmp_path, args, needle):
    grid = write_grid(tmp_path, Path("/m"))
    res = CliRunner().invoke(main, ["bench", str(grid), "--out", str(tmp_path / "out"), *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output and len(res.output.strip().splitlines()) == 1, res.output


# -------------------------------------------------------------------------------------- shards


def test_shards_split_the_grid_deterministically_and_completely():
    every = cells(load_grid(REPO / "benchmarks" / "grids" / "glyphworld.toml"))
    names = [c.name for c in every]
    shards = [[c.name for c in shard_of(every, (i, 5))] for i in range(1, 6)]
    assert sorted(sum(shards, [])) == sorted(names)  # every cell in exactly one shard
    assert [len(s) for s in shards] == [34, 34, 34, 33, 33]
    assert shards[1] == names[1::5]  # round robin over the grid order, the same on every machine
    assert {c.split("-")[0] for c in shards[4]} == {c.split("-")[0] for c in names}  # each shard: every task
    assert parse_shard("3/5") == (3, 5)
    for bad in ("6/5", "1/0", "a/b", "1/2/3", ""):
        with pytest.raises(HerobenchError, match="--shard"):
            parse_shard(bad)


def test_a_shard_runs_only_its_cells(tiny_world, tmp_path):
    grid = write_grid(tmp_path, tiny_world, methods=("pretrained", "enhanced"), seeds=(0, 1))
    res = CliRunner().invoke(main, ["bench", str(grid), "--out", str(tmp_path / "out"), "--shard", "2/2"])
    assert res.exit_code == 0, res.output
    assert "shard 2/2: 2 of 4 cells" in res.output
    ran = sorted(p.name for p in (tmp_path / "out").iterdir() if (p / "summary.json").exists())
    assert ran == ["hand-enhanced-s1", "hand-pretrained-s1"]  # grid order: pretrained s0, s1, enhanced s0, s1


# -------------------------------------------------------------------------------------- claims


CLAIMANT = textwrap.dedent("""
    import sys, time
    from herobench.harness.claims import claim
    with claim(sys.argv[1], sys.argv[2]) as held:
        print("held" if held.held else "busy", flush=True)
        time.sleep(120)
""")


def test_a_live_claim_is_respected_and_a_dead_claimants_cell_is_taken_over(tiny_world, tmp_path):
    out = tmp_path / "out"
    [cell] = cells(load_grid(write_grid(tmp_path, tiny_world, methods=("pretrained",))))
    other = subprocess.Popen([sys.executable, "-c", CLAIMANT, str(out), cell.name], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert other.stdout.readline().strip() == "held"
        with claim(out, cell.name) as held:
            assert not held.held and f"pid {other.pid}" in held.owner
        busy = run_cell(cell, out)
        assert busy.status == "claimed" and f"pid {other.pid}" in busy.error
        assert not (out / cell.name).exists()  # a claimed cell is not touched
        other.send_signal(signal.SIGKILL)  # a crash: no finally, no release but the kernel's
        other.wait(timeout=30)
        taken = run_cell(cell, out)
        assert taken.status == "done", taken.error
    finally:
        other.kill()
        other.wait(timeout=30)


@pytest.mark.slow  # two bench processes importing torch at once: ~40 s on 2 loaded cores
def test_two_bench_processes_on_one_out_run_every_cell_once(tiny_world, tmp_path):
    grid = write_grid(tmp_path, tiny_world, methods=("hero", "ddpo", "pretrained", "enhanced"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "herobench.cli", "bench", str(grid), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    names = [c.name for c in cells(load_grid(grid))]
    for name in names:
        ran = sum(line.split()[1] == name and line.split()[2] == "done"
                  for text in outputs for line in text.splitlines() if line.startswith("["))
        assert ran == 1, (name, outputs)
        assert json.loads((out / name / "summary.json").read_text())["labels"] in (0, 8)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        names + ["bench.json", "report"])  # no second folder (hand-hero-s0-2) for a cell run twice
    labels = [r for r in read_jsonl(out / "hand-hero-s0" / "labels.jsonl") if r["kind"] == "label"]
    assert len(labels) == 8 and len({(r["iteration"], r["index"]) for r in labels}) == 8  # each asked once
    assert (out / "report" / "curves.csv").is_file()
    print(*outputs, sep="\n")  # (-s shows how the two processes shared the cells)


# -------------------------------------------------------------------------------------- accelerate configs


@pytest.mark.parametrize("name, kind, machines", [("single_gpu", "NO", 1), ("multi_gpu", "MULTI_GPU", 1),
                                                  ("multi_node", "MULTI_GPU", 2)])
def test_example_accelerate_configs_load(name, kind, machines):
    """examples/accelerate/*.yaml are what `accelerate launch --config_file` reads (accelerate's own loader)."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "examples" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.value == kind and config.num_machines == machines
    assert config.num_processes % machines == 0 and (machines == 1 or config.main_process_ip)
    assert "-m herobench.cli run" in (REPO / "examples" / "accelerate" / f"{name}.yaml").read_text()
