"""A person in the loop, scripted over HTTP, on a tiny random-weight model marked as GlyphWorld: labels reach
the ledger before learning, a run killed while waiting resumes at the same batch, and a run replayed
from its own recorded labels (the recorded-labels oracle) ends with the same labels, curve and weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from human_client import PageClient, tiny_world_dir
from safetensors.torch import load_file

from herobench.cli import main
from herobench.config import RunSettings, from_dict
from herobench.harness.human import HumanRater
from herobench.harness.runlog import read_jsonl
from herobench.harness.runner import execute, prepare, run

TINY = {"batch_size": 4, "sampler": {"steps": 3, "guidance_scale": 2.0},
        "eval": {"n_images": 4, "every_labels": 8, "batch_size": 4}, "method_options": {"encoder_epochs": 3}}
# (good, best) per iteration: a first best, the previous best kept, a new best
SCRIPT = [([True, False, True, False], 2), ([False, True, True, False], None), ([True, True, False, True], 3)]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    return tiny_world_dir(tmp_path_factory)


def settings(model: Path, **kw) -> RunSettings:
    return from_dict(RunSettings, {"task": "hand", "method": "hero", "budget_labels": 12, "model": str(model),
                                   **TINY, **kw})


def _committed(run_dir: Path) -> list[dict]:
    p = run_dir / "labels.jsonl"
    return [r for r in read_jsonl(p) if r["kind"] == "iteration"] if p.exists() else []


def _labels(run_dir: Path) -> list[tuple]:
    return [(r["iteration"], r["prompt"], r["image_sha256"], r["good"])
            for r in read_jsonl(run_dir / "labels.jsonl") if r["kind"] == "label"]


def _bests(run_dir: Path) -> list:
    return [r["best"] for r in _committed(run_dir)]


def _lora(run_dir: Path) -> dict[str, torch.Tensor]:
    files = sorted((run_dir / "checkpoints" / "latest" / "lora").glob("*.safetensors"))
    assert files
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(f).items()}


class Person(threading.Thread):
    """Labels the batches of ``script`` starting at ``first``; on any failure closes the page so that the
    run's blocking ``rate`` raises instead of hanging the test."""

    def __init__(self, rater: HumanRater, run_dir: Path, script, first: int = 1, check=None):
        super().__init__(daemon=True)
        self.rater, self.run_dir, self.script, self.first, self.check = rater, run_dir, script, first, check
        self.client = PageClient(rater.url)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for it, (good, best) in enumerate(self.script, start=self.first):
                batch = self.client.wait_batch(it)
                if self.check:
                    self.check(self, it, batch)
                status, out = self.client.submit(batch["id"], good, best)
                assert status == 200, out
        except BaseException as e:  # noqa: BLE001 - re-raised by the test
            self.error = e
            self.rater.close()


def test_human_labels_reach_the_ledger_and_replay_exactly(tiny_world, tmp_path):
    r = prepare(settings(tiny_world, rater={"kind": "human"}), out=tmp_path / "human", progress=False)
    assert isinstance(r.rater, HumanRater) and r.rater.url.startswith("http://127.0.0.1:")

    def check(person: Person, it: int, batch: dict) -> None:
        c = person.client
        assert batch["labels_spent"] == 4 * (it - 1) and batch["budget_labels"] == 12 and batch["n"] == 4
        assert len(_committed(person.run_dir)) == it - 1  # every earlier batch is on disk before this one
        if it == 1:  # a malformed submission is refused and nothing is recorded
            status, out = c.submit(batch["id"], [True, False, True], None)
            assert status == 400 and "3 labels" in out["error"]
            status, out = c.submit(batch["id"], [True, False, True, False], 1)
            assert status == 400 and "good images" in out["error"]
            assert not (person.run_dir / "labels.jsonl").exists()
        else:  # the current best (iteration 1's star; iteration 2 kept it) is shown beside the batch
            sha = [x for x in read_jsonl(person.run_dir / "labels.jsonl")
                   if x["kind"] == "label" and x["iteration"] == 1][SCRIPT[0][1]]["image_sha256"]
            stored = person.run_dir / "human" / "images" / f"{sha}.png"
            assert batch["has_prev_best"] and c.image(batch["id"], "best") == stored.read_bytes()

    person = Person(r.rater, r.dir.path, SCRIPT, check=check)
    person.start()
    try:
        summary = execute(r)
    except Exception:
        person.join(10)
        assert person.error is None, person.error  # the person's failure is the cause
        raise
    finally:
        r.close()
        person.join(10)
    human = r.dir.path
    assert summary["labels"] == 12 and summary["best_picks"] == 2
    assert [[g for (it, _, _, g) in _labels(human) if it == k] for k in (1, 2, 3)] == [s[0] for s in SCRIPT]
    assert _bests(human) == [s[1] for s in SCRIPT]
    assert len(list((human / "human" / "images").glob("*.png"))) == 12
    # the person is the only judge: no oracle opinion is asked for or stored beside their labels
    assert r.feedback_oracle is None and r.rater.best_score is None
    entries = [x for x in read_jsonl(human / "labels.jsonl") if x["kind"] == "label"]
    assert all(x["rater"] == "human" and "score" not in x and "reason" not in x for x in entries)
    assert json.loads((human / "config.json").read_text())["oracle"]["feedback"]["name"] == "human"

    replay, _ = run(settings(tiny_world, oracle="recorded-labels",
                             oracle_options={"labels": str(human / "labels.jsonl")}),
                    out=tmp_path / "replay", progress=False)
    assert _labels(replay) == _labels(human) and _bests(replay) == _bests(human)
    assert all(x["reason"].startswith("recorded label") for x in read_jsonl(replay / "labels.jsonl")
               if x["kind"] == "label")
    assert read_jsonl(replay / "evals.jsonl") == read_jsonl(human / "evals.jsonl")
    a, b = _lora(human), _lora(replay)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cfg = json.loads((replay / "config.json").read_text())
    assert cfg["oracle"]["feedback"]["name"] == "recorded-labels"


@pytest.mark.slow
def test_run_killed_while_waiting_for_labels_resumes_at_the_same_batch(tiny_world, tmp_path):
    args = ["run", "--task", "hand", "--method", "hero", "--budget", "8", "--model", str(tiny_world), "--quiet",
            "--rater", "human", "--out", str(tmp_path), "--set", "batch_size=4", "--set", "sampler.steps=3",
            "--set", "sampler.guidance_scale=2.0", "--set", "eval.n_images=4", "--set", "eval.every_labels=8",
            "--set", "eval.batch_size=4", "--set", "method_options.encoder_epochs=3"]
    # the resumed part runs in this process: the killed one must use as many threads, or the float noise
    # of a different reduction split may change a pixel of the very same batch
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "herobench.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # the URL is printed on one line before the run waits
        assert line.startswith("label the batches at: http://127.0.0.1:"), (line, proc.stderr.read())
        client = PageClient(line.split(": ", 1)[1].strip())
        b1 = client.wait_batch(1)
        assert client.submit(b1["id"], [True, False, False, True], 0)[0] == 200
        b2 = client.wait_batch(2)
        shown = [client.image(b2["id"], i) for i in range(4)]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert [c["iteration"] for c in _committed(run_dir)] == [1]  # batch 1 was recorded, batch 2 never was

    r = prepare(None, resume=run_dir, progress=False)
    assert isinstance(r.rater, HumanRater) and r.iteration == 1

    def same_batch(person: Person, it: int, batch: dict) -> None:
        assert it == 2 and batch["labels_spent"] == 4
        assert [person.client.image(batch["id"], i) for i in range(4)] == shown  # the very same images
        assert batch["has_prev_best"] and batch["prev_best_picture"]

    person = Person(r.rater, run_dir, [([False, True, True, False], None)], first=2, check=same_batch)
    person.start()
    try:
        execute(r)
    except Exception:
        person.join(10)
        assert person.error is None, person.error
        raise
    finally:
        r.close()
        person.join(10)
    assert [[g for (it, _, _, g) in _labels(run_dir) if it == k] for k in (1, 2)] == \
        [[True, False, False, True], [False, True, True, False]]
    assert _bests(run_dir) == [0, None]


@pytest.mark.parametrize("args, needle", [
    (["--rater", "robot"], "--rater must be simulated, human or replay:LABELS.jsonl"),
    (["--port", "8765"], "--host/--port only apply to --rater human"),
    (["--rater", "replay:/does/not/exist.jsonl"], "no such label log"),
    (["--rater", "replay:{log}", "--oracle", "glyphworld-exact"], "drop --oracle"),
    (["--rater", "human", "--port", "70000"], "port must be in [0, 65535]"),
])
def test_rater_flags_give_one_line_errors(args, needle, tmp_path):
    log = tmp_path / "labels.jsonl"
    log.write_text("")
    args = [a.format(log=log) for a in args]
    res = CliRunner().invoke(main, ["run", "--task", "hand", "--out", str(tmp_path / "runs"), *args])
    assert res.exit_code == 2 and needle in res.output, res.output
    assert not (tmp_path / "runs").exists()


def test_resume_takes_the_rater_from_the_run_folder(tmp_path):
    res = CliRunner().invoke(main, ["run", "--resume", str(tmp_path), "--port", "9000"])
    assert res.exit_code == 2 and "come from the run folder" in res.output


def test_rater_flags_become_settings(tmp_path):
    from herobench.cli import _rater_overrides
    from herobench.harness.settings import settings_from_cli

    log = tmp_path / "labels.jsonl"
    log.write_text("")
    s = settings_from_cli(task="hand", method="hero", overrides=_rater_overrides(f"replay:{log}", None, None, None))
    assert (s.oracle, s.oracle_options, s.rater.kind) == ("recorded-labels", {"labels": str(log.resolve())}, "simulated")
    s = settings_from_cli(task="hand", method="hero", overrides=_rater_overrides("human", "127.0.0.1", 8765, None))
    assert (s.rater.kind, s.rater.host, s.rater.port) == ("human", "127.0.0.1", 8765)
    assert settings_from_cli(task="hand", method="hero", overrides=_rater_overrides(None, None, None, None)).rater.kind == "simulated"
