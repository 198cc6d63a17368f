import json
import logging
import os

import pytest

from herobench.errors import BudgetExceededError, HerobenchError
from herobench.harness import runlog
from herobench.harness.ledger import FeedbackLedger
from herobench.harness.runlog import RunDir, append_jsonl, environment_info, read_jsonl
from herobench.ledgerfile import SCHEMA_VERSION
from herobench.types import Feedback


def entries(goods, it=0):
    return [
        {
            "prompt": "1 hand",
            "image_sha256": f"{it:02d}{i:062d}",
            "good": bool(g),
            "noise_id": i,
            "reason": "ok",
        }
        for i, g in enumerate(goods)
    ]


def test_record_counts_and_schema(tmp_path):
    path = tmp_path / "labels.jsonl"
    led = FeedbackLedger(path, budget_labels=10)
    led.record(1, entries([1, 0, 1, 0]), best=2, pairs=[(0, 1), (2, 3)], meta={"protocol": "hero"})
    led.record(2, entries([0, 0, 0], it=2))
    assert (led.spent, led.remaining, led.n_best_picks, led.n_pairs) == (7, 3, 1, 2)
    assert led.iterations == [1, 2] and led.last_iteration == 2
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 4 + 1 + 3 + 1
    assert all(x["schema"] == SCHEMA_VERSION for x in lines)
    assert [x["kind"] for x in lines[:5]] == ["label"] * 4 + ["iteration"]
    assert {k: v for k, v in lines[4].items() if k != "chain"} | {"time": 0} == {
        "schema": 1, "kind": "iteration", "iteration": 1, "n_labels": 4, "spent": 4, "best": 2,
        "pairs": [[0, 1], [2, 3]], "scores": None, "meta": {"protocol": "hero"}, "time": 0,
    }  # fmt: skip
    assert lines[1]["noise_id"] == 1 and lines[1]["index"] == 1 and lines[1]["iteration"] == 1


def test_budget_is_never_exceeded_and_nothing_is_written(tmp_path):
    path = tmp_path / "labels.jsonl"
    led = FeedbackLedger(path, budget_labels=6)
    led.record(0, entries([1, 0, 1, 0]))
    before = path.read_bytes()
    with pytest.raises(
        BudgetExceededError, match=r"recording 3 labels would exceed the budget: 4 of 6 spent, 2 remaining"
    ):
        led.record(1, entries([1, 1, 1]))
    assert path.read_bytes() == before and led.spent == 4
    led.record(1, entries([1, 1]))  # exactly up to the budget is fine
    assert led.remaining == 0
    with pytest.raises(BudgetExceededError):
        led.record(2, entries([1]))
    led.record(2, [])  # an unlabelled iteration costs nothing
    assert FeedbackLedger.open(path, 6).spent == 6


def test_lines_are_fsynced_before_record_returns(tmp_path, monkeypatch):
    path = tmp_path / "labels.jsonl"
    seen = []
    real = os.fsync

    def spy(fd):
        real(fd)
        seen.append(path.read_text() if path.exists() else "")

    monkeypatch.setattr(runlog.os, "fsync", spy)
    led = FeedbackLedger(path, 10)
    led.record(0, entries([1, 0]))
    assert seen, "record returned without an fsync"
    assert seen[0].count("\n") == 3 and '"kind": "iteration"' in seen[0]
    # a fresh reader (a new process after a crash) sees everything record() acknowledged
    again = FeedbackLedger.open(path, 10)
    assert list(again.get(0).entries) == entries([1, 0])


def test_resume_replays_entries_and_feedback(tmp_path):
    path = tmp_path / "labels.jsonl"
    led = FeedbackLedger(path, 100)
    led.record(3, entries([1, 0, 1]), best=0, pairs=[(0, 1), (2, 1)], scores=[1.0, 0.0, 1.0])
    led.record(4, entries([0, 1], it=4), best=1)
    again = FeedbackLedger.open(path, 100)
    assert (again.spent, again.n_best_picks, again.n_pairs, again.iterations) == (5, 2, 2, [3, 4])
    assert list(again.get(3).entries) == entries([1, 0, 1]) and again.get(5) is None
    assert again.get(3).feedback() == Feedback(
        good=(True, False, True), best=0, pairs=((0, 1), (2, 1)), scores=(1.0, 0.0, 1.0)
    )
    assert again.get(4).feedback() == Feedback(good=(False, True), best=1)
    assert again.recovered is None
    again.get(3).entries[0]["good"] = "mutated"  # callers get copies
    assert again.get(3).entries[0]["good"] is True
    with pytest.raises(ValueError, match="not after the last recorded iteration 4"):
        again.record(4, entries([1]))
    again.record(5, entries([1]))
    assert FeedbackLedger.open(path, 100).spent == 6


def test_open_absent_file_starts_fresh_and_constructor_refuses_existing(tmp_path):
    path = tmp_path / "labels.jsonl"
    assert FeedbackLedger.open(path, 5).spent == 0
    FeedbackLedger(path, 5).record(0, entries([1]))
    with pytest.raises(HerobenchError, match="already holds labels"):
        FeedbackLedger(path, 5)
    with pytest.raises(BudgetExceededError, match="already holds 1 labels, more than the budget of 0"):
        FeedbackLedger.open(path, 0)


@pytest.mark.parametrize("cut", [1, 10, 40])
def test_truncated_last_line_is_dropped_without_losing_earlier_lines(tmp_path, cut, caplog):
    path = tmp_path / "labels.jsonl"
    led = FeedbackLedger(path, 100)
    led.record(0, entries([1, 0]), best=0)
    committed = path.read_bytes()
    led.record(1, entries([1, 1, 0], it=1), pairs=[(0, 2)])
    full = path.read_bytes()
    path.write_bytes(full[:-cut])  # killed mid-write: the commit line (and maybe more) is torn
    with caplog.at_level(logging.WARNING):
        again = FeedbackLedger.open(path, 100)
    assert again.recovered and "uncommitted" in again.recovered and "uncommitted" in caplog.text
    assert again.iterations == [0] and again.spent == 2 and again.get(1) is None
    assert path.read_bytes() == committed  # earlier lines intact, the torn tail removed
    torn = path.with_name("labels.jsonl.torn").read_bytes()
    assert committed + torn.rstrip(b"\n") == full[:-cut]  # nothing silently destroyed
    again.record(1, entries([0], it=1))  # the run asks again for iteration 1 and continues
    assert FeedbackLedger.open(path, 100).iterations == [0, 1]


def test_uncommitted_complete_label_lines_are_dropped(tmp_path):
    path = tmp_path / "labels.jsonl"
    led = FeedbackLedger(path, 100)
    led.record(0, entries([1]))
    committed = path.read_bytes()
    led.record(1, entries([1, 0], it=1))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))  # both label lines complete, commit marker missing
    again = FeedbackLedger.open(path, 100)
    assert again.spent == 1 and path.read_bytes() == committed and "2 uncommitted line(s)" in again.recovered


def test_malformed_middle_line_names_the_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    led = FeedbackLedger(path, 100)
    led.record(0, entries([1, 0]))
    led.record(1, entries([1], it=1))
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = '{"schema": 1, "kind": "lab\n'
    path.write_text("".join(lines))
    with pytest.raises(HerobenchError, match=r"labels.jsonl: line 2 is malformed"):
        FeedbackLedger.open(path, 100)


def test_inconsistent_or_newer_schema_lines_raise(tmp_path):
    path = tmp_path / "labels.jsonl"
    FeedbackLedger(path, 100).record(0, entries([1, 0]))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([lines[0], lines[2]]))  # a label line lost in the middle
    with pytest.raises(HerobenchError, match=r"line 2: iteration 0 commits 2 labels"):
        FeedbackLedger.open(path, 100)
    path.write_text(json.dumps({"schema": 99, "kind": "label"}) + "\n")
    with pytest.raises(HerobenchError, match=r"line 1: ledger schema version 99 is not supported"):
        FeedbackLedger.open(path, 100)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"entries": [{"prompt": "p", "good": True}]}, "needs 'image_sha256'"),
        ({"entries": [{"prompt": "p", "image_sha256": "h", "good": 1}]}, "needs 'good'"),
        ({"entries": [{"prompt": "p", "image_sha256": "h", "good": True, "index": 3}]}, "reserved"),
        (
            {"entries": [{"prompt": "p", "image_sha256": "h", "good": True, "x": object()}]},
            "JSON-serialisable",
        ),
        (
            {"entries": [{"prompt": "p", "image_sha256": "h", "good": True, "x": float("nan")}]},
            "JSON-serialisable",
        ),
        ({"entries": entries([1, 0]), "best": 1}, "best pick 1 is not labelled good"),
        ({"entries": entries([1, 0]), "best": 2}, "best must be an index"),
        ({"entries": entries([1, 0]), "pairs": [(1, 0)]}, r"pair \(1, 0\) must be \(good, bad\)"),
        ({"entries": entries([1, 0]), "scores": [1.0]}, "got 1 scores for 2 entries"),
        ({"entries": entries([1]), "iteration": -1}, "iteration must be an int >= 0"),
    ],
)
def test_bad_arguments_write_nothing(tmp_path, kwargs, pattern):
    path = tmp_path / "labels.jsonl"
    led = FeedbackLedger(path, 100)
    with pytest.raises(ValueError, match=pattern):
        led.record(kwargs.pop("iteration", 0), **kwargs)
    assert not path.exists() or path.read_bytes() == b""
    assert led.spent == 0


def test_failed_write_leaves_no_partial_iteration(tmp_path, monkeypatch):
    path = tmp_path / "labels.jsonl"
    led = FeedbackLedger(path, 100)
    led.record(0, entries([1]))
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runlog.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        led.record(1, entries([1, 0], it=1))
    assert path.read_bytes() == before and led.spent == 1 and led.iterations == [0]


# ---------------------------------------------------------------------------------------------- runlog


def test_run_dir_layout(tmp_path):
    rd = RunDir(tmp_path / "run").create()
    assert rd.checkpoints.is_dir() and not rd.is_run()
    assert [p.name for p in (rd.config_json, rd.labels, rd.evals, rd.summary, rd.train_log)] == [
        "config.json", "labels.jsonl", "evals.jsonl", "summary.json", "train.jsonl",
    ]  # fmt: skip
    runlog.write_json_atomic(rd.config_json, {"settings": {"task": "hand"}})
    assert rd.is_run() and json.loads(rd.config_json.read_text())["settings"]["task"] == "hand"


def test_append_and_read_jsonl_with_torn_tail(tmp_path, caplog):
    path = tmp_path / "evals.jsonl"
    append_jsonl(path, {"labels": 0, "success_rate": 0.5})
    append_jsonl(path, {"labels": 64, "success_rate": 0.75, "note": "é"})
    with path.open("ab") as fh:
        fh.write(b'{"labels": 128, "succ')  # killed mid-write
    with caplog.at_level(logging.WARNING):
        assert [r["labels"] for r in read_jsonl(path)] == [0, 64]
    assert "torn" in caplog.text
    append_jsonl(path, {"labels": 128, "success_rate": 1.0})  # repairs the tail first
    assert [r["labels"] for r in read_jsonl(path)] == [0, 64, 128]
    path.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(HerobenchError, match="line 2 is not valid JSON"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n[1]\n')
    with pytest.raises(HerobenchError, match="line 2 is not a JSON object"):
        read_jsonl(path)
    with pytest.raises(HerobenchError, match="file not found"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_environment_info_records_versions():
    info = environment_info()
    assert info["python"].count(".") == 2 and info["packages"]["torch"]
    assert set(info) >= {"herobench", "platform", "packages", "git", "git_dirty", "cpu"}
    import torch  # the CPU capability and threads are recorded once torch is imported (always, in a run)

    info = environment_info()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and info["threads"] >= 1
    json.dumps(info)  # goes into config.json


def _edit(path, number, **changes):
    lines = path.read_text().splitlines(keepends=True)
    obj = json.loads(lines[number - 1])
    for k, v in changes.items():
        if v is KeyError:
            obj.pop(k)
        else:
            obj[k] = v
    lines[number - 1] = json.dumps(obj) + "\n"
    path.write_text("".join(lines))


@pytest.mark.parametrize("number, changes, pattern", [
    (1, {"good": "false"}, r"line 1 is not a valid label \(entry 0 needs 'good' \(bool\), got 'false'\)"),
    (2, {"image_sha256": KeyError}, r"line 2 is not a valid label \(entry 1 needs 'image_sha256'"),
    (3, {"pairs": [1]}, r"line 3: iteration 0 is not valid \(a pair must be two batch indices"),
    (3, {"pairs": [["x", 1]]}, r"line 3: iteration 0 is not valid \(a pair must be two batch indices"),
    (3, {"pairs": [[1, 0]]}, r"pair \(1, 0\) must be \(good, bad\)"),
    (3, {"scores": "abc"}, r"line 3: iteration 0 is not valid \(scores must be a list of numbers"),
    (3, {"best": True}, r"best must be an index"),
    (3, {"meta": [1]}, r"meta must be an object"),
])
def test_an_edited_committed_line_is_refused_by_name(tmp_path, number, changes, pattern):
    # the same rules as record(): a replayed log or a resumed ledger never feeds a method a label of a
    # type it would not have written ("false" read as good, a pair that is not two indices, ...)
    path = tmp_path / "labels.jsonl"
    FeedbackLedger(path, 100).record(0, entries([1, 0]), pairs=[(0, 1)], scores=[0.9, 0.1])
    _edit(path, number, **changes)
    before = path.read_bytes()
    with pytest.raises(HerobenchError, match=pattern):
        FeedbackLedger.open(path, 100)
    assert path.read_bytes() == before


def test_open_without_repair_leaves_a_torn_tail_until_the_next_record(tmp_path):
    path = tmp_path / "labels.jsonl"
    led = FeedbackLedger(path, 100)
    led.record(0, entries([1, 0]))
    committed = path.read_bytes()
    path.write_bytes(committed + b'{"schema": 1, "kind": "label", "itera')
    torn_file = path.read_bytes()
    again = FeedbackLedger.open(path, 100, repair=False)
    assert again.spent == 2 and again.recovered is None
    assert path.read_bytes() == torn_file and not path.with_name("labels.jsonl.torn").exists()
    again.record(1, entries([1], it=1))  # continuing cuts the tail first, into the side file
    assert "1 uncommitted line(s)" in again.recovered
    assert path.with_name("labels.jsonl.torn").read_bytes() == b'{"schema": 1, "kind": "label", "itera\n'
    assert FeedbackLedger.open(path, 100).iterations == [0, 1] and path.read_bytes().startswith(committed)


def test_numpy_indices_and_scores_are_recorded_as_plain_numbers(tmp_path):
    import numpy as np

    path = tmp_path / "labels.jsonl"
    FeedbackLedger(path, 100).record(0, entries([1, 0]), best=np.int64(0), pairs=[(np.int64(0), np.int32(1))],
                                     scores=np.array([0.75, 0.25], dtype=np.float32))
    rec = FeedbackLedger.open(path, 100).get(0)
    assert (rec.best, rec.pairs, rec.scores) == (0, ((0, 1),), (0.75, 0.25))
