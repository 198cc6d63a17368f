"""The harness loop end to end on a tiny random-weight model marked as a GlyphWorld model: run folders,
the ledger's budget, determinism, resume after a real kill, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fixtures_sd import tiny_sd_v_fixture  # noqa: F401 - fixture
from tinysd import build_tiny_sd

from herobench.cli import main
from herobench.config import RunSettings, from_dict
from herobench.harness.runlog import read_jsonl
from herobench.harness.runner import run

TINY = {"batch_size": 4, "sampler": {"steps": 3, "guidance_scale": 2.0},
        "eval": {"n_images": 8, "every_labels": 4, "batch_size": 8}}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    path = build_tiny_sd(tmp_path_factory.mktemp("tinyworld"), prediction_type="v_prediction", seed=3)
    (path / "herobench.json").write_text(json.dumps({"backend": "glyphworld", "sampler": {"steps": 3}}))
    return path


def settings(model: Path, **kw) -> RunSettings:
    data = {"task": "hand", "method": "hero", "budget_labels": 8, "model": str(model), **TINY, **kw}
    data.setdefault("method_options", {"encoder_epochs": 3} if data["method"].startswith("hero") else {})
    return from_dict(RunSettings, data)


def test_pretrained_budget_zero_writes_complete_run_folder(tiny_world, tmp_path):
    path, summary = run(settings(tiny_world, method="pretrained", budget_labels=0), out=tmp_path, progress=False)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["settings"]["method"] == "pretrained" and cfg["task"]["name"] == "hand"
    assert cfg["sampler"]["steps"] == 3 and cfg["oracle"]["evaluation"]["name"] == "glyphworld-exact"
    assert "torch" in json.dumps(cfg["environment"])
    evals = read_jsonl(path / "evals.jsonl")
    assert [e["labels"] for e in evals] == [0] and evals[0]["n"] == 8
    assert summary["labels"] == 0 and (path / "summary.json").exists()
    from herobench.harness import runlog  # its docstring is the layout's documentation: every entry named

    assert {p.name for p in path.iterdir()} <= set(runlog.__doc__.replace("/", " ").split())


def test_evaluation_records_successes_per_prompt(tiny_world, tmp_path):
    path, _ = run(settings(tiny_world, task="counting", method="pretrained", budget_labels=0), out=tmp_path,
                  progress=False)
    for e in read_jsonl(path / "evals.jsonl"):
        counts = e["per_prompt"]
        # the 8 images cycle through the set's 3 prompts in order: 3, 3, 2
        assert [c["n"] for c in counts.values()] == [3, 3, 2]
        assert sum(c["successes"] for c in counts.values()) == round(e["success_rate"] * e["n"])
        assert sum(c["unreadable"] for c in counts.values()) == round(e["unreadable_rate"] * e["n"])
    assert {e["prompt_set"]: list(e["per_prompt"]) for e in read_jsonl(path / "evals.jsonl")} == {
        "eval": ["a photo of three cups", "a photo of two balls", "a photo of four apples"],
        "train": ["a photo of two cups", "a photo of three apples", "a photo of four balls"],
    }


def test_per_prompt_counts_follow_each_verdict():
    from herobench.harness.eval_loop import _per_prompt_counts
    from herobench.types import Verdict

    verdicts = [Verdict(True, 1.0, "ok"), Verdict(False, 0.0, "no", readable=False), Verdict(True, 1.0, "ok"),
                Verdict(False, 0.2, "2 cups")]  # fmt: skip
    assert _per_prompt_counts(["b", "a", "b", "a"], verdicts) == {
        "b": {"n": 2, "successes": 2, "unreadable": 0}, "a": {"n": 2, "successes": 0, "unreadable": 1}}


def test_hero_spends_exactly_the_budget_and_logs_every_label(tiny_world, tmp_path):
    path, summary = run(settings(tiny_world, budget_labels=10), out=tmp_path, progress=False)
    labels = [r for r in read_jsonl(path / "labels.jsonl") if "good" in r]
    assert len(labels) == 10 == summary["labels"]  # 4 + 4 + 2: the last batch shrinks to the budget
    assert summary["iterations"] == 3
    assert sorted({e["labels"] for e in read_jsonl(path / "evals.jsonl")}) == [0, 4, 8, 10]
    assert (path / "checkpoints" / "latest" / "lora").exists()


def test_same_seed_same_curve(tiny_world, tmp_path):
    a, _ = run(settings(tiny_world, method="ddpo"), out=tmp_path / "a", progress=False)
    b, _ = run(settings(tiny_world, method="ddpo"), out=tmp_path / "b", progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time", "t")} for r in rows]  # noqa: E731
    assert strip(read_jsonl(a / "labels.jsonl")) == strip(read_jsonl(b / "labels.jsonl"))
    assert read_jsonl(a / "evals.jsonl") == read_jsonl(b / "evals.jsonl")


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, (res.output or "") + (str(res.exception) if res.exception and res.exit_code != 2 else "")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", "--task", "hnad"], "did you mean 'hand'"),
        (["run", "--task", "hand", "--method", "herro"], "did you mean 'hero'"),
        (["run", "--task", "hand", "--oracle", "nope"], "unknown oracle 'nope'"),
        (["run", "--task", "hand", "--budget", "-1"], "budget_labels must be >= 0"),
        (["run", "--task", "hand", "--set", "sampler.stepz=3"], "unknown key 'sampler.stepz'"),
        (["run", "--task", "hand", "--model", "/does/not/exist"], "does not exist"),
        (["validate", "--task", "nope"], "unknown task 'nope'"),
        (["run", "--task", "hand", "--set", "device=tpu"], "device 'tpu' is not a torch device"),
        (["run", "--task", "hand", "--rater", "bob"], "--rater must be simulated, human or replay"),
        (["run", "--task", "hand", "--budget", "ten"], "'ten' is not a valid integer"),  # click's own
    ],
)
def test_bad_input_gives_one_line_error(args, needle, tmp_path):
    code, out = _cli(*args, *(["--out", str(tmp_path)] if args[0] == "run" else []))
    assert code == 2 and needle in out, out
    assert len(out.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # a refused run leaves no folder behind


@pytest.mark.parametrize("args, needle", [
    (["glyphworld", "grid", "--task", "hnd", "--out", "{tmp}/a.png"], "unknown GlyphWorld task 'hnd'"),
    (["glyphworld", "grid", "--task", "hand", "--out", "{tmp}/a.png", "--n", "0"], "0 is not in the range"),
    (["glyphworld", "grid", "--task", "mountain", "--out", "{tmp}/a.png", "--profile", "purple"],
     "rater profile 'purple' is not one of task 'mountain'"),
    (["bench", "{tmp}/g.toml", "--gpus", "a,b", "--dry-run"], "'a' is not a GPU index"),
    (["report", "{run}", "{run}/", "--out", "{tmp}/r"], "run folder given twice"),
    (["report", "{run}", "--out", "{tmp}/r", "--target", "nan"], "target success rate must be in (0, 1]"),
    (["report", "{run}", "--out", "{tmp}/g.toml"], "exists and is not a folder"),
    (["run", "--task", "hand", "--model", "{tmp}", "--out", "{tmp}/runs"], "not a diffusers model folder"),
])
def test_bad_arguments_of_every_command_give_one_line_errors(finished_run, tmp_path, args, needle):
    (tmp_path / "g.toml").write_text('[grid]\ntasks = ["hand"]\nmethods = ["pretrained"]\nseeds = [0]\n')
    code, out = _cli(*[a.format(tmp=tmp_path, run=finished_run) for a in args])
    assert code == 2 and needle in out and len(out.strip().splitlines()) == 1, out
    assert not (tmp_path / "r").exists() and not (tmp_path / "a.png").exists()


def test_foreign_or_corrupt_folders_are_refused(tiny_world, tmp_path):
    code, out = _cli("run", "--resume", str(tmp_path))
    assert code == 2 and "not a herobench run folder" in out
    bad = tmp_path / "bad.toml"
    bad.write_text("task = [unclosed")
    code, out = _cli("run", "--config", str(bad))
    assert code == 2 and "bad.toml" in out


@pytest.fixture(scope="module")
def finished_run(tiny_world, tmp_path_factory) -> Path:
    path, _ = run(settings(tiny_world, budget_labels=8), out=tmp_path_factory.mktemp("finished"), progress=False)
    return path  # 2 iterations of 4 labels, checkpointed after the second


def _cut_last_bytes(path: Path, n: int) -> None:
    path.write_bytes(path.read_bytes()[:-n])


@pytest.mark.parametrize("corrupt, needle", [
    # a torn tail *and* a corrupt checkpoint: the resume fails, and must not have cut the tail yet
    (lambda d: (d / "labels.jsonl").open("a").write('{"schema": 1, "kind": "label", "itera'),
     None),
    (lambda d: (d / "checkpoints/latest/harness.json").write_text('{"iteration": "two", "labels": 8}'),
     "is corrupt (ValueError"),
    (lambda d: (d / "checkpoints/latest/harness.json").write_text("{}"), "is corrupt (KeyError"),
    # the commit marker of a learned iteration torn away: the ledger no longer holds what was learned
    (lambda d: _cut_last_bytes(d / "labels.jsonl", 40), "commits iterations 1-1 (4 labels up to iteration 2)"),
    (lambda d: (d / "labels.jsonl").write_text(""), "commits iterations none (0 labels"),
], ids=["torn-tail-and-bad-method-state", "harness-not-int", "harness-empty", "torn-marker", "ledger-emptied"])
def test_a_failed_resume_changes_no_recorded_label(finished_run, tmp_path, corrupt, needle):
    d = tmp_path / "run"
    shutil.copytree(finished_run, d)
    corrupt(d)
    if needle is None:  # the first case: also break the checkpoint
        (d / "checkpoints/latest/method.pt").write_bytes(b"not a torch file")
        needle = "is corrupt"
    before = (d / "labels.jsonl").read_bytes()
    code, out = _cli("run", "--resume", str(d), "--quiet")
    assert code == 2 and needle in out and len(out.strip().splitlines()) == 1, out
    assert (d / "labels.jsonl").read_bytes() == before and not (d / "labels.jsonl.torn").exists()


def _labels(path: Path) -> list[dict]:
    return [{k: r[k] for k in ("iteration", "prompt", "image_sha256", "good")}
            for r in read_jsonl(path / "labels.jsonl") if "good" in r]


@pytest.mark.slow
def test_killed_run_resumes_without_asking_twice(tiny_world, tmp_path):
    """Kill a real subprocess mid-run, resume it, and end with the labels of an uninterrupted run."""
    base = ["--task", "hand", "--method", "hero", "--budget", "16", "--model", str(tiny_world), "--quiet",
            "--set", "batch_size=4", "--set", "sampler.steps=3", "--set", "sampler.guidance_scale=2.0", "--set", "eval.n_images=4",
            "--set", "eval.every_labels=8", "--set", "method_options.encoder_epochs=3"]
    ref, _ = run(settings(tiny_world, budget_labels=16, eval={"n_images": 4, "every_labels": 8, "batch_size": 8}),
                 out=tmp_path / "ref", progress=False)
    # the same thread count as the in-process reference: float reductions (and so image bits) depend on it
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "herobench.cli", "run", *base, "--out", str(tmp_path / "k")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    run_dir = None
    while time.time() < deadline:
        found = list((tmp_path / "k").glob("*/labels.jsonl")) if (tmp_path / "k").exists() else []
        if found and len(_labels(found[0].parent)) >= 8:
            run_dir = found[0].parent
            break
        time.sleep(0.05)
    assert run_dir is not None, "the run never recorded labels"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(_labels(run_dir))
    assert killed_at < 16
    code, out = _cli("run", "--resume", str(run_dir), "--quiet")
    assert code == 0, out
    assert _labels(run_dir) == _labels(ref)  # nothing lost, nothing asked twice
    assert [e["labels"] for e in read_jsonl(run_dir / "evals.jsonl")] == \
        [e["labels"] for e in read_jsonl(ref / "evals.jsonl")]
