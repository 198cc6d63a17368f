"""The harness loop end to end on a tiny random-weight model marked as a GlyphWorld model: run folders,
the ledger's budget, determinism, resume after a real kill, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
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
    from herobench.harness.runner import _per_prompt_counts
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
    ],
)
def test_bad_input_gives_one_line_error(args, needle, tmp_path):
    code, out = _cli(*args, *(["--out", str(tmp_path)] if args[0] == "run" else []))
    assert code == 2 and needle in out, out
    assert len(out.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # a refused run leaves no folder behind


def test_foreign_or_corrupt_folders_are_refused(tiny_world, tmp_path):
    code, out = _cli("run", "--resume", str(tmp_path))
    assert code == 2 and "not a herobench run folder" in out
    bad = tmp_path / "bad.toml"
    bad.write_text("task = [unclosed")
    code, out = _cli("run", "--config", str(bad))
    assert code == 2 and "bad.toml" in out


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
