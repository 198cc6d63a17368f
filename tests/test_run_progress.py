"""``herobench run`` as a person sees it: phase lines and a bar on stderr with no third-party warning, a
closing summary in words, ``--resume RUN --budget N`` extending a run (same labels as a run given N at
once, timings summed), ``--threads`` recorded, and the small-budget cases."""

# ruff: noqa: F811 - the tests take test_runner's tiny_world fixture as an argument
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_runner import TINY, tiny_world  # noqa: F401 - fixture (the same tiny GlyphWorld-marked model)

from herobench.cli import main
from herobench.config import RunSettings, from_dict
from herobench.errors import HerobenchError
from herobench.harness.progress import Progress
from herobench.harness.runlog import read_jsonl
from herobench.harness.runner import run

REPO = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--set", "batch_size=4", "--set", "sampler.steps=3", "--set", "sampler.guidance_scale=2.0",
              "--set", "eval.n_images=8", "--set", "eval.every_labels=4", "--set", "eval.batch_size=8"]
PHASE = re.compile(r"^\[\s*\d+\.\d s\] ")


def settings(model: Path, **kw) -> RunSettings:
    return from_dict(RunSettings, {"task": "hand", "method": "ddpo", "budget_labels": 8, "model": str(model),
                                   **TINY, **kw})


def _hashes(path: Path) -> list[str]:
    return [r["image_sha256"] for r in read_jsonl(path / "labels.jsonl") if "image_sha256" in r]


def test_the_terminal_shows_phases_and_a_bar_and_no_third_party_warning(tiny_world, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OMP_WAIT_POLICY", None)
    res = subprocess.run([sys.executable, "-m", "herobench.cli", "run", "--task", "hand", "--method", "hero",
                          "--budget", "8", "--model", str(tiny_world), "--out", str(tmp_path), "--progress",
                          "--set", "method_options.encoder_epochs=3", *TINY_FLAGS],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [x.strip() for x in re.split(r"[\r\n]", res.stderr) if x.strip()]
    strays = [x for x in lines if not PHASE.match(x) and not x.startswith("hand/hero ")]
    assert not strays, strays  # every stderr line is ours: no "[transformers] ... requires torchvision"
    text = "\n".join(lines)
    for phase in ("starting: importing torch", "loading the model", "evaluating at 0 labels",
                  "iteration 1: sampling 4 images", "iteration 1: rating", "iteration 2: learning (hero",
                  "evaluating at 8 labels"):
        assert phase in text, text
    assert re.search(r"8/8 labels \[.*ETA 0:00 incl\. 0 evaluations\]", text), text
    assert re.search(r"eval prompts: (did not move detectably|moved: (better|worse)) .*McNemar exact p = ",
                     res.stdout), res.stdout
    curve = re.search(r"^curve: (\S+\.png)$", res.stdout, re.M)
    assert curve and Path(curve.group(1)).is_file(), res.stdout


def test_the_eta_counts_the_evaluations_still_to_come():
    p = Progress(enabled=True)
    p.start_bar(budget=8, done=0, points=[0, 4, 8], desc="t")
    assert p.eta() == "ETA after the first iteration; 2 evaluations to come"
    p.evaluated(10.0)  # the evaluation at 0 labels took 10 s
    p.iterated(4, 2.0)  # 4 labels in 2 s
    assert p.eta() == "ETA 0:12 incl. 1 evaluation"  # 4 labels x 0.5 s + one evaluation x 10 s
    p.close()
    p.start_bar(budget=0, done=0, points=[0], desc="t")
    assert p.bar is None and p.eta() == ""  # a budget of 0 has no bar


def test_resume_with_a_larger_budget_continues_as_a_run_given_it_at_once(tiny_world, tmp_path):
    path, first = run(settings(tiny_world), out=tmp_path / "a", progress=False)
    again, same = run(None, resume=path, progress=False)  # a finished run resumed: its times are kept
    assert same["timings"] == first["timings"] and same["seconds"] >= first["seconds"] > 0
    _, summary = run(None, resume=path, progress=False, budget=12)
    assert summary["labels"] == 12 and summary["iterations"] == 3
    assert all(summary["timings"][k] >= v for k, v in first["timings"].items())
    assert summary["seconds"] > first["seconds"]
    config = json.loads((path / "config.json").read_text())
    assert config["settings"]["budget_labels"] == 12 and config["budget_extensions"] == [{"from": 8, "to": 12}]
    straight, _ = run(settings(tiny_world, budget_labels=12), out=tmp_path / "b", progress=False)
    assert _hashes(path) == _hashes(straight) and len(_hashes(path)) == 12
    assert read_jsonl(path / "evals.jsonl") == read_jsonl(straight / "evals.jsonl")


def test_resume_with_a_smaller_budget_is_one_line_and_changes_nothing(tiny_world, tmp_path):
    path, _ = run(settings(tiny_world), out=tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    with pytest.raises(HerobenchError, match="--budget 4 is below the budget of 8 labels recorded in"):
        run(None, resume=path, progress=False, budget=4)
    res = CliRunner().invoke(main, ["run", "--resume", str(path), "--budget", "4"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "can only be extended" in res.output
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()} == before


def test_threads_are_recorded_and_documented(tiny_world, tmp_path):
    threads = torch.get_num_threads()
    try:
        res = CliRunner().invoke(main, ["run", "--task", "hand", "--method", "pretrained", "--budget", "0",
                                        "--model", str(tiny_world), "--out", str(tmp_path), "--threads", "1",
                                        *TINY_FLAGS])
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "hand-pretrained-s0" / "config.json").read_text())["environment"]["threads"] == 1
    assert "no labels spent" in res.output
    help_text = CliRunner().invoke(main, ["run", "--help"]).output
    assert "--threads" in help_text and "OMP_WAIT_POLICY=PASSIVE" in help_text and "--config takes a TOML" in help_text


def test_a_budget_below_one_batch_warns_and_budget_zero_shows_no_bar(tiny_world, tmp_path):
    res = CliRunner().invoke(main, ["run", "--task", "hand", "--method", "ddpo", "--budget", "2",
                                    "--model", str(tiny_world), "--out", str(tmp_path / "a"), *TINY_FLAGS])
    assert res.exit_code == 0, res.output
    assert "warning: --budget 2 is below one batch of 4 images" in res.output
    res = CliRunner().invoke(main, ["run", "--task", "hand", "--method", "pretrained", "--budget", "0", "--progress",
                                    "--model", str(tiny_world), "--out", str(tmp_path / "b"), *TINY_FLAGS])
    assert res.exit_code == 0 and "evaluating at 0 labels" in res.output, res.output
    assert "label" not in res.output.replace("labels", "") and "0/0" not in res.output, res.output


@pytest.mark.parametrize("start, end, verdict", [
    ("0" * 20, "1" * 20,
     "moved: better than its start (20 images bad->good, 0 good->bad of 20, McNemar exact p = 1.91e-06)"),
    ("1" * 12 + "0" * 8, "0" * 12 + "1" * 8,
     "did not move detectably from its start (8 images bad->good, 12 good->bad"),
    ("1" * 20, "0" * 20, "moved: worse than its start"),
])
def test_the_closing_summary_says_in_words_whether_the_run_moved(tmp_path, start, end, verdict):
    from herobench.harness.progress import closing_summary

    rows = [{"labels": 0, "prompt_set": "eval", "successes": start},
            {"labels": 8, "prompt_set": "eval", "successes": end}]
    (tmp_path / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = closing_summary(tmp_path, {"labels": 8})
    assert f"eval prompts: {verdict}" in text, text
    assert "curve: not drawn (" in text and f"herobench run --resume {tmp_path} --budget N" in text


def test_glyphworld_grid_writes_under_runs_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["glyphworld", "grid", "--task", "hand", "--truth", "--n", "2"])
    assert res.exit_code == 0 and (tmp_path / "runs" / "grids" / "hand-truth.png").is_file(), res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing in the folder it was run from
