"""Guard metrics beside success (issue 25, item 3): diversity of the evaluation images in pixels and in the
world's own attributes, so that a method that wins by collapsing shows it in the same row."""

from __future__ import annotations

import math

import pytest
import torch
from test_runner import settings, tiny_world  # noqa: F401 - fixture

from herobench.harness.evaluate import attribute_entropy, guard_metrics, pixel_diversity
from herobench.harness.runlog import read_jsonl
from herobench.harness.runner import run
from herobench.types import Verdict


def _v(readable=True, **attrs) -> Verdict:
    return Verdict(success=False, score=0.0, reason="r", readable=readable, attrs=attrs)


def test_attribute_entropy_by_hand():
    verdicts = [_v(colour="blue", counts={"rose": 2}), _v(colour="red", counts={"rose": 2}),
                _v(colour="blue", counts={"rose": 3}), _v(colour="green", counts={"rose": 2}),
                _v(readable=False, colour="black")]  # an unreadable image does not count
    h = attribute_entropy(verdicts)
    assert h["colour"] == pytest.approx(1.5, abs=1e-4)  # blue ½, red ¼, green ¼
    p = torch.tensor([0.75, 0.25])
    assert h["counts.rose"] == pytest.approx(float(-(p * p.log2()).sum()), abs=1e-4)
    # a collapsed evaluation: every image the same colour and count
    assert attribute_entropy([_v(colour="blue", counts={"rose": 2})] * 4) == {"colour": 0.0, "counts.rose": 0.0}
    # floats and lists of numbers are not categories; a list of strings is its composition
    assert attribute_entropy([_v(size=0.3, boxes=[1, 2]), _v(size=0.4, boxes=[3])]) == {}
    assert attribute_entropy([_v(colours=["red", "blue"]), _v(colours=["blue", "red"])]) == {"colours": 0.0}


def test_pixel_diversity_by_hand():
    a, b = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    # same prompt: one pair at RMS distance 1; the lone image of prompt "q" has no pair
    assert pixel_diversity(torch.stack([a, b, a]), ["p", "p", "q"]) == pytest.approx(1.0)
    assert pixel_diversity(torch.stack([a, a, a]), ["p", "p", "p"]) == 0.0  # collapsed
    half = torch.full((3, 4, 4), 0.5)
    # pairs (a,b) 1, (a,half) 0.5, (b,half) 0.5 -> mean 2/3
    assert pixel_diversity(torch.stack([a, b, half]), ["p"] * 3) == pytest.approx(2 / 3, abs=1e-6)
    assert math.isnan(pixel_diversity(torch.stack([a, b]), ["p", "q"]))


def test_guard_metrics_mean_over_attributes():
    g = guard_metrics(torch.rand(2, 3, 4, 4), ["p", "p"], [_v(colour="a", n=1), _v(colour="b", n=1)])
    assert g["attr_entropy"] == {"colour": 1.0, "n": 0.0} and g["attr_entropy_mean"] == 0.5
    assert g["pixel_diversity"] > 0
    assert math.isnan(g["success_diversity"])  # no successful image, so no pair of them


def test_success_diversity_is_the_pixel_diversity_of_the_successes_only():
    """Concentrating on the success mode drops ``pixel_diversity`` (the failures' variety is gone) but not
    ``success_diversity``; successes that become one image drop both."""
    a, b, c = torch.zeros(3, 4, 4), torch.ones(3, 4, 4), torch.full((3, 4, 4), 0.5)
    good, bad = Verdict(success=True, score=1.0, reason="ok"), Verdict(success=False, score=0.0, reason="no")
    g = guard_metrics(torch.stack([a, b, c, a]), ["p"] * 4, [good, bad, good, good])
    # successes a, c, a: pairs (a,c) 0.5, (a,a) 0, (c,a) 0.5 -> 1/3; all four images: 3.5 over 6 pairs
    assert g["success_diversity"] == pytest.approx(1 / 3, abs=1e-6)
    assert g["pixel_diversity"] == pytest.approx((0.5 + 0 + 1 + 1 + 0.5 + 0.5) / 6, abs=1e-6)
    assert guard_metrics(torch.stack([a, a, b]), ["p"] * 3, [good, good, bad])["success_diversity"] == 0.0
    # per prompt: a success alone under its prompt has no pair
    assert math.isnan(guard_metrics(torch.stack([a, b]), ["p", "q"], [good, good])["success_diversity"])


def test_every_evaluation_row_has_its_guards(tiny_world, tmp_path):  # noqa: F811
    path, _ = run(settings(tiny_world, task="counting", method="pretrained", budget_labels=0), out=tmp_path,
                  progress=False)
    for e in read_jsonl(path / "evals.jsonl"):
        assert e["pixel_diversity"] > 0 and isinstance(e["attr_entropy"], dict) and "success_diversity" in e
        readable = round(e["n"] * (1 - e["unreadable_rate"]))
        assert bool(e["attr_entropy"]) == (readable > 0)  # counts of cups, apples ... on readable images
        if readable:
            assert e["attr_entropy_mean"] == pytest.approx(sum(e["attr_entropy"].values()) / len(e["attr_entropy"]),
                                                           abs=1e-4)


def test_report_shows_the_guards_beside_success(tiny_world, tmp_path):  # noqa: F811
    from herobench.harness.report import write_report

    path, _ = run(settings(tiny_world, task="counting", method="pretrained", budget_labels=0), out=tmp_path / "runs",
                  progress=False)
    out = write_report([path], tmp_path / "report", echo=lambda line: None)
    text = (tmp_path / "report" / "tables.md").read_text()
    assert "## Guards" in text
    row = next(line for line in text.splitlines() if line.startswith("| counting | pretrained |"))
    ev = next(e for e in read_jsonl(path / "evals.jsonl") if e["prompt_set"] == "eval")
    assert f"{ev['pixel_diversity']:.3f}" in row and f"{ev['unreadable_rate']:.3f}" in row
    assert out  # the report's files
