"""Kills at random moments: a run killed (SIGKILL) at any of its file-system moments and resumed ends with
the ledger, curve, training log and LoRA of an uninterrupted run -- on a task with two prompt sets.

A *moment* is one file-system effect of the run (a file opened for writing, a write -- or half of one,
a torn line --, an fsync, a rename, a mkdir, an unlink, ...): between two of them the files on disk do
not change, so killing at each moment reaches every state a kill at any time can leave. The run goes in a
forked child (no import cost; the same torch threads as its reference) that SIGKILLs itself at the
chosen moment, so no ``finally`` and no exception handler runs, exactly as under ``kill -9``.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import random
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from human_client import tiny_world_dir

from herobench.config import RunSettings, from_dict
from herobench.harness.ledger import FeedbackLedger
from herobench.harness.runlog import read_jsonl
from herobench.harness.runner import prepare, run

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_OS_EFFECTS = ("fsync", "replace", "rename", "mkdir", "rmdir", "unlink", "ftruncate", "truncate", "symlink")


def small(model: Path, **kw) -> RunSettings:
    """nsfw: train and eval prompts differ (two prompt sets); HERO learns on it within three batches."""
    data = {"task": "nsfw", "method": "hero", "budget_labels": 12, "model": str(model), "batch_size": 4,
            "sampler": {"steps": 2, "guidance_scale": 2.0},
            "eval": {"n_images": 2, "every_labels": 4, "batch_size": 2},
            "method_options": {"encoder_epochs": 2}, **kw}
    return from_dict(RunSettings, data)


class Moments:
    """Counts the file-system moments of this process and SIGKILLs it at the chosen one."""

    def __init__(self, kill: Callable[[int, str, str], bool]):
        self.n = 0
        self.kill = kill  # (moment number, kind, path) -> kill now?

    def tick(self, kind: str, path: object = "") -> None:
        self.n += 1
        if self.kill(self.n, kind, str(path)):
            os.kill(os.getpid(), signal.SIGKILL)

    def install(self) -> None:
        """Wrap the os and open functions (in this, the forked child, process only)."""
        for name in _OS_EFFECTS:
            real = getattr(os, name)

            def wrapped(*a, _real=real, _name=name, **kw):
                self.tick(_name, a[0] if a else "")
                return _real(*a, **kw)

            setattr(os, name, wrapped)
        real_open, real_write, real_io_open = os.open, os.write, io.open

        def os_open(path, flags, *a, **kw):
            if flags & _WRITE_FLAGS:
                self.tick("open", path)
            return real_open(path, flags, *a, **kw)

        def os_write(fd, data):
            self.tick("write", fd)
            if self.kill(self.n + 1, "half-write", str(fd)):  # a torn write: half the bytes, then the kill
                real_write(fd, bytes(data)[: max(1, len(data) // 2)])
                self.tick("half-write", fd)
            return real_write(fd, data)

        def any_open(file, mode="r", *a, **kw):
            if any(c in mode for c in "wax+"):
                self.tick("open", file)
            return real_io_open(file, mode, *a, **kw)

        os.open, os.write = os_open, os_write
        io.open = builtins.open = any_open


def in_child(job: Callable[[], None], kill: Callable[[int, str, str], bool] = lambda *_: False) -> tuple[str, int]:
    """Run ``job`` in a forked child that dies by SIGKILL when ``kill`` says so.

    Returns ("killed" | "done", moments the child passed through)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        code, moments, real_write = 0, Moments(kill), os.write
        try:
            import torch

            torch.set_num_threads(1)  # the same float reductions in every child (image hashes are checked)
            moments.install()
            job()
        except BaseException:  # noqa: BLE001 - reported to the parent through the exit status
            traceback.print_exc()
            code = 3
        real_write(w, str(moments.n).encode() if code == 0 else b"-1")
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        reported = fh.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed", -1
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"the child failed (status {status})"
    return "done", int(reported)


def fresh(settings: RunSettings, out: Path) -> Callable[[], None]:
    return lambda: run(settings, out=out, progress=False)


def resume(path: Path) -> Callable[[], None]:
    return lambda: run(None, resume=path, progress=False)


def _ledger(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in read_jsonl(path / "labels.jsonl")]


def _train_log(path: Path) -> list[dict]:
    # (timing statistics differ between any two runs)
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in read_jsonl(path / "train.jsonl")]


def _lora(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(next((path / "checkpoints" / "latest" / "lora").glob("*.safetensors")))


def assert_same_run(path: Path, ref: Path) -> None:
    """Everything a run leaves that depends on its labels: equal to the uninterrupted run's."""
    assert _ledger(path) == _ledger(ref), "ledger"
    assert read_jsonl(path / "evals.jsonl") == read_jsonl(ref / "evals.jsonl"), "curve"
    assert _train_log(path) == _train_log(ref), "training log"
    a, b = _lora(path), _lora(ref)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), "LoRA"
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (path, ref))
    for key in ("labels", "iterations", "best_picks", "success_start", "success_end", "interval_end"):
        assert sa[key] == sb[key], key
    leftovers = [p.name for p in (path / "checkpoints").iterdir() if p.name != "latest"]
    assert not leftovers and not list(path.glob(".*.tmp")), leftovers


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    path = tiny_world_dir(tmp_path_factory)
    # one run in this process first: the children fork with every lazy import done (seconds each otherwise)
    run(small(path, budget_labels=0), out=tmp_path_factory.mktemp("warm"), progress=False)
    return path


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory) -> tuple[Path, int]:
    """The uninterrupted run (in a child too: the same threads as the killed ones) and its moment count."""
    out = tmp_path_factory.mktemp("reference")
    state, moments = in_child(fresh(small(world), out))
    assert state == "done"
    (path,) = out.iterdir()
    assert {e["prompt_set"] for e in read_jsonl(path / "evals.jsonl")} == {"eval", "train"}
    lora = _lora(path)  # (the up projection starts at zero: a non-zero one has learned)
    assert any(v.abs().max() > 0 for k, v in lora.items() if ".up." in k or "lora_B" in k), "the reference run must learn"
    return path, moments


def _run_dir(out: Path) -> Path | None:
    found = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
    return found[0] if found else None


def test_killed_at_20_random_moments_every_resume_ends_as_the_uninterrupted_run(world, reference, tmp_path):
    """20 moments drawn with a fixed seed over the whole run. Each kills the run in the current folder
    (a fresh run, or a resume: kills during a resume are moments too); when a resume completes instead
    the folder is checked and the next moment starts a new run."""
    ref, total = reference
    rng = random.Random(27)  # (as fractions of the run: a first import writing a .pyc is a moment too)
    moments = [1 + int(rng.random() * total) for _ in range(20)]
    t0 = time.perf_counter()
    folders, current, k = [], None, 0
    for moment in moments:
        kill = lambda n, kind, path, m=moment: n == m  # noqa: E731
        if current is not None and not (current / "config.json").exists():
            # killed before its config.json: no run yet (nothing was recorded); start again, as bench does
            shutil.rmtree(current)
            current = None
        if current is None:
            k += 1
            out = tmp_path / f"chain{k}"
            state, _ = in_child(fresh(small(world), out), kill)
            current = _run_dir(out)
        else:
            state, _ = in_child(resume(current), kill)
        if state == "done":
            folders.append(current)
            current = None
    if current is not None and not (current / "config.json").exists():
        shutil.rmtree(current)
        current = None
    if current is not None:
        assert in_child(resume(current))[0] == "done"
        folders.append(current)
    for path in folders:
        assert_same_run(path, ref)
    print(f"\n{len(moments)} kills at moments {sorted(moments)} of {total}; {len(folders)} folders checked "
          f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def _kill_at_nth(kind: str, name: str, nth: int) -> Callable[[int, str, str], bool]:
    seen = []

    def kill(_n: int, k: str, path: str) -> bool:
        if k == kind and path.endswith(name):
            seen.append(path)
            return len(seen) == nth
        return False

    return kill


def test_a_kill_between_the_eval_and_train_rows_of_a_point_loses_no_row(world, reference, tmp_path):
    # the second opening of evals.jsonl for writing is the train row of labels 0, after the eval row
    state, _ = in_child(fresh(small(world), tmp_path), _kill_at_nth("open", "evals.jsonl", 2))
    assert state == "killed"
    path = _run_dir(tmp_path)
    assert [(e["labels"], e["prompt_set"]) for e in read_jsonl(path / "evals.jsonl")] == [(0, "eval")]
    assert in_child(resume(path))[0] == "done"
    assert_same_run(path, reference[0])
    assert set(json.loads((path / "summary.json").read_text())["success_start"]) == {"eval", "train"}


def test_a_kill_between_a_train_row_and_its_checkpoint_logs_the_iteration_once(world, reference, tmp_path):
    # the first checkpoint folder is made after iteration 1's train.jsonl row
    state, _ = in_child(fresh(small(world), tmp_path), _kill_at_nth("mkdir", "latest.tmp", 1))
    assert state == "killed"
    path = _run_dir(tmp_path)
    assert [r["iteration"] for r in read_jsonl(path / "train.jsonl")] == [1]
    assert in_child(resume(path))[0] == "done"
    assert [r["iteration"] for r in read_jsonl(path / "train.jsonl")] == [1, 2, 3]
    assert_same_run(path, reference[0])


def test_summary_times_add_up_over_processes_and_survive_resuming_a_finished_run(world, tmp_path):
    # killed as the last point's evaluation is written (opening evals.jsonl for its 7th row): the last
    # checkpoint is written, the evaluation and the summary are left to the resume
    state, _ = in_child(fresh(small(world), tmp_path), _kill_at_nth("open", "evals.jsonl", 7))
    assert state == "killed"
    path = _run_dir(tmp_path)
    first = json.loads((path / "checkpoints" / "latest" / "harness.json").read_text())
    assert first["iteration"] == 3 and first["seconds"] > 0 and first["timings"]["sampling"] > 0
    _, summary = run(None, resume=path, progress=False)
    assert summary["seconds"] > first["seconds"]  # the killed process' time is in it
    assert summary["timings"]["sampling"] == first["timings"]["sampling"]  # (all of it in the first process)
    assert summary["timings"]["evaluation"] > first["timings"]["evaluation"]  # the last point: the resume
    assert summary["unet_seconds"] > first["unet_seconds"] > 0
    _, again = run(None, resume=path, progress=False)  # finished: nothing to do, the times are kept
    assert again["seconds"] >= summary["seconds"] and again["timings"] == summary["timings"]
    assert json.loads((path / "summary.json").read_text())["seconds"] == again["seconds"]


def test_a_replay_log_that_does_not_match_leaves_no_run_folder(world, tmp_path):
    log = tmp_path / "other" / "labels.jsonl"
    log.parent.mkdir()
    FeedbackLedger(log, 4).record(1, [{"prompt": "sexy woman", "image_sha256": f"{i:064x}", "good": i == 0}
                                      for i in range(4)])
    settings = small(world, oracle="recorded-labels", oracle_options={"labels": str(log)})
    out = tmp_path / "runs"
    with pytest.raises(Exception, match="recorded-labels: image .* is not in"):
        run(settings, out=out, progress=False)
    assert not list(out.rglob("config.json")) and not list(out.rglob("evals.jsonl"))
    assert not any(out.iterdir())


def test_a_resumed_run_that_fails_keeps_its_folder(world, tmp_path):
    # only a new run without a label removes its folder; a resume never deletes what the user pointed at
    r = prepare(small(world, budget_labels=0, method="pretrained", method_options={}), out=tmp_path, progress=False)
    path = r.dir.path
    r.close()
    (path / "evals.jsonl").mkdir()  # reading the evaluations fails
    with pytest.raises(Exception):  # noqa: B017 - whatever the OS says
        run(None, resume=path, progress=False)
    assert (path / "config.json").exists()
