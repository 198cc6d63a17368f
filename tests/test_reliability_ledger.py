"""The ledger's hash chain: an edited ledger is refused, not replayed (by a resume or by the recorded-labels
oracle); ledgers written before the chain still load, and continue with one."""

from __future__ import annotations

import json

import pytest

from herobench.errors import HerobenchError
from herobench.harness.ledger import FeedbackLedger
from herobench.oracles.recorded import load_records


def entries(goods, it=1):
    return [{"prompt": "1 hand", "image_sha256": f"{it:02d}{i:062d}", "good": bool(g), "score": 0.5}
            for i, g in enumerate(goods)]


@pytest.fixture
def finished(tmp_path):
    path = tmp_path / "labels.jsonl"
    led = FeedbackLedger(path, 100)
    led.record(1, entries([1, 0, 1], 1), best=0)
    led.record(2, entries([0, 1, 0], 2), best=1)
    led.record(3, entries([1, 1, 0], 3))
    return path


def _lines(path):
    return path.read_text().splitlines(keepends=True)


def _refused(path, pattern):
    before = path.read_bytes()
    with pytest.raises(HerobenchError, match=pattern):
        FeedbackLedger.open(path, 100)
    with pytest.raises(HerobenchError, match=pattern):
        load_records(path)  # a replay refuses it too
    assert path.read_bytes() == before


def test_a_flipped_label_is_refused_naming_its_line(finished):
    lines = _lines(finished)
    assert '"good": false' in lines[4]  # iteration 2's first label (not its best pick)
    lines[4] = lines[4].replace('"good": false', '"good": true')
    finished.write_text("".join(lines))
    _refused(finished, r"labels.jsonl: line 5 does not match its chain value: the ledger was edited")


def test_an_edited_best_pick_and_a_removed_iteration_are_refused(finished):
    original = _lines(finished)
    lines = list(original)
    lines[7] = lines[7].replace('"best": 1', '"best": null')  # iteration 2's commit line
    finished.write_text("".join(lines))
    _refused(finished, r"line 8 does not match its chain value")
    finished.write_text("".join(original[:4] + original[8:]))  # iteration 2 gone as a whole
    _refused(finished, r"line 5 does not match its chain value")


def test_a_line_without_chain_after_chained_lines_is_refused(finished):
    lines = _lines(finished)
    obj = json.loads(lines[-1])
    del obj["chain"]
    lines[-1] = json.dumps(obj) + "\n"
    finished.write_text("".join(lines))
    _refused(finished, r"line 12 has no chain value after lines that have one")


def test_an_old_ledger_without_chain_loads_and_continues_with_one(finished):
    old = []
    for line in _lines(finished)[:8]:  # iterations 1-2 as herobench wrote them before the chain
        obj = json.loads(line)
        del obj["chain"]
        old.append(json.dumps(obj) + "\n")
    finished.write_text("".join(old))
    led = FeedbackLedger.open(finished, 100)
    assert led.iterations == [1, 2] and led.spent == 6
    led.record(3, entries([1, 1, 0], 3))
    again = FeedbackLedger.open(finished, 100)
    assert again.iterations == [1, 2, 3] and again.get(3).entries == tuple(entries([1, 1, 0], 3))
    assert all("chain" in json.loads(x) for x in _lines(finished)[8:])
    assert len(load_records(finished)) == 9


def test_the_chain_holds_across_a_resume_and_does_not_depend_on_the_clock(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    FeedbackLedger(a, 100).record(1, entries([1, 0], 1), best=0)
    FeedbackLedger.open(a, 100).record(2, entries([0, 1], 2))  # a resumed process continues the chain
    led = FeedbackLedger(b, 100)
    led.record(1, entries([1, 0], 1), best=0)
    led.record(2, entries([0, 1], 2))
    chains = [[json.loads(x)["chain"] for x in _lines(p)] for p in (a, b)]
    assert chains[0] == chains[1] and len(set(chains[0])) == 6
    assert FeedbackLedger.open(a, 100).iterations == [1, 2]


def test_a_torn_tail_after_the_chain_is_still_only_cut(finished):
    committed = finished.read_bytes()
    finished.write_bytes(committed + b'{"schema": 1, "kind": "label", "iter')
    led = FeedbackLedger.open(finished, 100)
    assert led.iterations == [1, 2, 3] and finished.read_bytes() == committed
    led.record(4, entries([1], 4))
    assert FeedbackLedger.open(finished, 100).iterations == [1, 2, 3, 4]
