"""Run folders and the file system: names from the task's name (never its path), no folder left by a run
that cannot start, and every file-system failure one line naming the path and the cause, with what was
half-written removed and no recorded label lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from human_client import tiny_world_dir

from herobench.cli import main
from herobench.config import RunSettings, from_dict
from herobench.errors import FileSystemError, os_error_message
from herobench.harness import checkpoint, runner
from herobench.harness.bench import Cell
from herobench.harness.runlog import append_jsonl, read_jsonl, run_dir_name, write_text_atomic
from herobench.harness.runner import execute, prepare, run
from herobench.paths import data_dir

TINY = {"batch_size": 4, "sampler": {"steps": 2, "guidance_scale": 2.0},
        "eval": {"n_images": 2, "every_labels": 4, "batch_size": 2}}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return tiny_world_dir(tmp_path_factory)


def settings(model: Path, **kw) -> RunSettings:
    data = {"task": "hand", "method": "ddpo", "budget_labels": 8, "model": str(model), **TINY, **kw}
    return from_dict(RunSettings, data)


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def _one_line_error(code: int, out: str, *needles: str) -> None:
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), out
    assert "Traceback" not in out and all(n in lines[0] for n in needles), out


@pytest.fixture
def spec_elsewhere(tmp_path) -> Path:
    """A copy of the hand task's spec in a folder of its own, far from --out."""
    spec = tmp_path / "specs" / "hand" / "task.toml"  # (the GlyphWorld oracle knows a task by name)
    spec.parent.mkdir(parents=True)
    shutil.copy(data_dir("tasks") / "hand" / "task.toml", spec)
    return spec


# ---------------------------------------------------------------------------------------------- names


def test_a_task_given_by_absolute_path_runs_inside_out(world, tmp_path, spec_elsewhere):
    out = tmp_path / "runs"
    path, _ = run(settings(world, task=str(spec_elsewhere.resolve()), method="pretrained", budget_labels=0),
                  out=out, progress=False)
    assert path == out / "hand-pretrained-s0" and (path / "summary.json").exists()
    assert sorted(p.name for p in spec_elsewhere.parent.iterdir()) == ["task.toml"]  # nothing next to it


def test_a_task_given_by_a_relative_path_with_dotdot_cannot_escape_out(world, tmp_path, spec_elsewhere,
                                                                      monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    s = settings(world, task="../specs/hand/task.toml", method="pretrained", budget_labels=0)
    assert run_dir_name(s) == "hand-pretrained-s0"
    path, _ = run(s, out="runs", progress=False)
    assert path.resolve() == (work / "runs" / "hand-pretrained-s0").resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["specs", "work"]


def test_runner_and_bench_name_folders_with_the_same_function(tmp_path, spec_elsewhere):
    for task in ("hand", str(spec_elsewhere), str(spec_elsewhere.parent)):
        s = from_dict(RunSettings, {"task": task, "method": "hero", "budget_labels": 8, "seed": 3})
        assert Cell(s).name == run_dir_name(s)
    assert run_dir_name(from_dict(RunSettings, {"task": str(spec_elsewhere), "method": "hero",
                                                "budget_labels": 8})) == "hand-hero-s0"


def test_a_failing_spec_leaves_no_folder_at_all(world, tmp_path):
    bad = tmp_path / "bad" / "task.toml"
    bad.parent.mkdir()
    bad.write_text('version = "1.0"\n')  # everything else missing
    out = tmp_path / "new" / "deeper"
    code, text = _cli("run", "--task", str(bad), "--method", "pretrained", "--budget", "0", "--model", str(world),
                      "--out", str(out), "--quiet")
    _one_line_error(code, text, "missing required key")
    # a spec that loads but a run that cannot be built (unknown oracle): its folder and the new parents go
    code, text = _cli("run", "--task", "hand", "--method", "pretrained", "--budget", "0", "--model", str(world),
                      "--oracle", "no-such-oracle", "--out", str(out), "--quiet")
    _one_line_error(code, text, "no-such-oracle")
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------------------- file system


@pytest.mark.parametrize("number, words", [
    (errno.ENOSPC, "no space left on device"), (errno.EACCES, "permission denied"),
    (errno.ENOTDIR, "not a directory"), (errno.EROFS, "read-only file system"),
])
def test_os_errors_are_worded_by_path_and_cause(number, words, monkeypatch, tmp_path):
    e = OSError(number, os.strerror(number), "/runs/x/train.jsonl")
    assert os_error_message(e) == f"/runs/x/train.jsonl: {words}"

    def failing(*_a, **_k):
        raise e

    monkeypatch.setattr(runner, "prepare", failing)
    code, text = _cli("run", "--task", "hand", "--method", "pretrained", "--budget", "0", "--out", str(tmp_path))
    _one_line_error(code, text, f"/runs/x/train.jsonl: {words}")


def test_out_that_is_a_file_is_one_line(world, finished, tmp_path):
    out = tmp_path / "out"
    out.write_text("not a folder")
    code, text = _cli("run", "--task", "hand", "--method", "pretrained", "--budget", "0", "--model", str(world),
                      "--out", str(out), "--quiet")
    _one_line_error(code, text, str(out), "not a directory")
    code, text = _cli("report", str(finished), "--out", str(out / "report"))
    _one_line_error(code, text, "not a directory")


def test_wrapped_library_errors_of_a_full_disk_are_worded_too(tmp_path):
    where = tmp_path / "checkpoints" / "latest.tmp"
    safetensors_like = RuntimeError("Error while serializing: IoError(No space left on device (os error 28))")
    assert str(checkpoint._file_system_error(safetensors_like, where)) == f"{where}: no space left on device"
    assert checkpoint._file_system_error(RuntimeError("a bug"), where) is None
    assert checkpoint._file_system_error(KeyboardInterrupt(), where) is None


def _labels(path: Path) -> list[dict]:
    return [{k: r[k] for k in ("iteration", "image_sha256", "good")}
            for r in read_jsonl(path / "labels.jsonl") if r["kind"] == "label"]


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory) -> Path:
    path, _ = run(settings(world), out=tmp_path_factory.mktemp("ref"), progress=False)
    return path


def test_a_full_disk_while_logging_keeps_every_label_and_resumes(world, reference, tmp_path, monkeypatch):
    real_append = runner.append_jsonl

    def disk_full_at_the_training_log(path, record):
        if Path(path).name == "train.jsonl" and not Path(path).exists():
            # from now on every write there is ENOSPC from the kernel (and nothing reads the device: it
            # would read zeros for ever)
            os.symlink("/dev/full", path)
        return real_append(path, record)

    monkeypatch.setattr(runner, "append_jsonl", disk_full_at_the_training_log)
    r = prepare(settings(world), out=tmp_path, progress=False)
    path = r.dir.path
    with pytest.raises(OSError) as caught:
        execute(r)
    r.close()
    assert os_error_message(caught.value) == f"{path / 'train.jsonl'}: no space left on device"
    assert _labels(path) == _labels(reference)[:4]  # iteration 1's labels, recorded before the log line
    (path / "train.jsonl").unlink()
    monkeypatch.undo()
    run(None, resume=path, progress=False)
    assert _labels(path) == _labels(reference)
    assert read_jsonl(path / "evals.jsonl") == read_jsonl(reference / "evals.jsonl")


def test_a_full_disk_inside_a_checkpoint_removes_the_half_written_one(world, reference, tmp_path, monkeypatch):
    real_save_lora, calls = checkpoint.save_lora, []

    def save_lora_then_fill_the_disk(unet, directory):
        out = real_save_lora(unet, directory)
        calls.append(directory)
        if len(calls) == 2:  # the second checkpoint: its method.pt lands on a full device
            os.symlink("/dev/full", Path(directory).parent / "method.pt")
        return out

    monkeypatch.setattr(checkpoint, "save_lora", save_lora_then_fill_the_disk)
    r = prepare(settings(world), out=tmp_path, progress=False)
    path = r.dir.path
    with pytest.raises(OSError) as caught:
        execute(r)
    r.close()
    ckpts = path / "checkpoints"
    assert os_error_message(caught.value) == f"{ckpts / 'latest.tmp' / 'method.pt'}: no space left on device"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest"]  # latest.tmp removed
    assert json.loads((ckpts / "latest" / "harness.json").read_text())["iteration"] == 1
    assert _labels(path) == _labels(reference)[:8]
    monkeypatch.undo()
    run(None, resume=path, progress=False)
    assert _labels(path) == _labels(reference)
    assert read_jsonl(path / "evals.jsonl") == read_jsonl(reference / "evals.jsonl")


def test_a_failed_write_leaves_no_partial_line_and_no_temporary_file(tmp_path, monkeypatch):
    log = tmp_path / "evals.jsonl"
    append_jsonl(log, {"labels": 0})
    before = log.read_bytes()

    def no_space(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as caught:
        append_jsonl(log, {"labels": 4})
    assert log.read_bytes() == before and caught.value.filename == str(log)
    target = tmp_path / "summary.json"
    with pytest.raises(OSError):
        write_text_atomic(target, "{}")
    assert not target.exists() and list(tmp_path.iterdir()) == [log]


def test_file_system_error_is_a_one_line_herobench_error():
    e = FileSystemError("runs/x/checkpoints/latest.tmp", "no space left on device")
    assert str(e) == "runs/x/checkpoints/latest.tmp: no space left on device"


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory) -> Path:
    path, _ = run(settings(world, method="pretrained", budget_labels=0), out=tmp_path_factory.mktemp("done"),
                  progress=False)
    return path


@pytest.mark.parametrize("labels", ['"NaN"', "NaN", "1.5", "-4", "true", "9" * 5000])
def test_report_refuses_a_bad_label_count_with_one_line(finished, tmp_path, labels):
    path = Path(shutil.copytree(finished, tmp_path / finished.name))
    row = (path / "evals.jsonl").read_text().splitlines()[0]
    (path / "evals.jsonl").write_text(row.replace('"labels": 0', f'"labels": {labels}', 1) + "\n")
    code, text = _cli("report", str(path), "--out", str(tmp_path / "report"))
    _one_line_error(code, text, "evals.jsonl: line 1")
