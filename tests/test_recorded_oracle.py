"""The recorded-labels oracle on a synthetic label log: exact replay (labels and best picks through the
simulated rater's HERO rule), the nearest-neighbour fallback with coverage/confidence, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from herobench.core.images import sha256_of_image
from herobench.errors import ConfigError, HerobenchError
from herobench.harness.human import thumbnail_png
from herobench.harness.ledger import FeedbackLedger
from herobench.harness.rater import SimulatedRater
from herobench.oracles import ORACLES, make_oracle
from herobench.oracles.recorded import RecordedLabelsOracle
from herobench.tasks import load_task

PROMPT = "1 hand"


def _images(good: list[bool], seed: int) -> torch.Tensor:
    """Bright images are the good ones, dark ones the bad: something a 16×16 k-NN can learn."""
    g = torch.Generator().manual_seed(seed)
    level = torch.tensor([0.75 if x else 0.25 for x in good]).view(-1, 1, 1, 1)
    return (level + 0.2 * (torch.rand(len(good), 3, 8, 8, generator=g) - 0.5)).clamp(0, 1)


# (good labels, best pick) per iteration: a first best, a kept best, a new best, a batch without goods
BATCHES = [
    ([True, False, True, False], 2),
    ([False, True, True, False], None),
    ([True, True, False, False], 0),
    ([False, False, False, False], None),
    ([True, False, False, True], None),
]


def write_log(folder, batches=BATCHES, pictures=True):
    ledger = FeedbackLedger(folder / "labels.jsonl", 1000)
    images_dir = folder / "human" / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for it, (good, best) in enumerate(batches, start=1):
        imgs = _images(good, seed=it)
        hashes = [sha256_of_image(i) for i in imgs]
        ledger.record(it, [{"prompt": PROMPT, "image_sha256": h, "good": g, "score": 0.5}
                           for h, g in zip(hashes, good)], best=best)
        if pictures:
            for img, h in zip(imgs, hashes):
                (images_dir / f"{h}.png").write_bytes(thumbnail_png(img))
        out.append(imgs)
    return folder / "labels.jsonl", out


def test_exact_replay_reproduces_labels_and_best_picks_through_the_hero_rule(tmp_path):
    path, batches = write_log(tmp_path)
    oracle = make_oracle("recorded-labels", load_task("hand"), options={"labels": str(path)})
    assert oracle.name == "recorded-labels" and oracle.version.startswith("1+")
    rater = SimulatedRater()  # it keeps its best's score from batch to batch itself
    for imgs, (good, best) in zip(batches, BATCHES):
        verdicts = oracle.judge(imgs, [PROMPT] * len(imgs))
        assert all(v.attrs["source"] == "recorded" and v.attrs["confidence"] == 1.0 for v in verdicts)
        assert all(v.attrs["coverage"] == 1.0 for v in verdicts)
        fb = rater.rate(verdicts, "hero")
        assert (list(fb.good), fb.best) == (good, best)


def test_unseen_images_get_a_nearest_neighbour_verdict_with_coverage_and_confidence(tmp_path):
    path, batches = write_log(tmp_path)
    oracle = RecordedLabelsOracle(path, k=3)
    fresh = _images([True, False], seed=99)
    mixed = torch.cat([batches[0][:1], fresh])
    v = oracle.judge(mixed, [PROMPT] * 3)
    assert v[0].attrs["source"] == "recorded"
    assert [x.attrs["source"] for x in v[1:]] == ["nearest-neighbours"] * 2
    assert [x.success for x in v[1:]] == [True, False]
    assert all(x.attrs["coverage"] == pytest.approx(1 / 3) for x in v)
    assert all(0.5 <= x.attrs["confidence"] <= 1.0 and x.attrs["k"] == 3 for x in v[1:])
    assert "nearest recorded images (same prompt)" in v[1].reason
    # another prompt falls back to every recorded prompt
    assert "(all prompts)" in oracle.judge(fresh[:1], ["2 hands"])[0].reason


def test_too_little_data_is_refused_for_unseen_images_but_exact_hits_still_answer(tmp_path):
    path, batches = write_log(tmp_path, BATCHES[:3])  # 12 labels < 16
    oracle = RecordedLabelsOracle(path)
    assert oracle.judge(batches[0], [PROMPT] * 4)[2].success is True
    with pytest.raises(HerobenchError, match=r"needs at least 16 labelled pictures of both classes.*has 12"):
        oracle.judge(_images([True], seed=50), [PROMPT])
    (tmp_path / "bad").mkdir()
    path, _ = write_log(tmp_path / "bad", [([False] * 4, None)] * 5)  # 20 labels, one class
    with pytest.raises(HerobenchError, match=r"0 good, 20 bad"):
        RecordedLabelsOracle(path).judge(_images([True], seed=51), [PROMPT])
    (tmp_path / "nopic").mkdir()
    path, _ = write_log(tmp_path / "nopic", pictures=False)  # labels without stored pictures
    with pytest.raises(HerobenchError, match="has 0"):
        RecordedLabelsOracle(path).judge(_images([True], seed=52), [PROMPT])


def test_options_are_checked(tmp_path):
    task = load_task("hand")
    assert "recorded-labels" in ORACLES
    with pytest.raises(ConfigError, match="needs oracle_options.labels"):
        make_oracle("recorded-labels", task)
    with pytest.raises(ConfigError, match="labelz"):
        make_oracle("recorded-labels", task, options={"labelz": "x"})
    with pytest.raises(HerobenchError, match="does not exist"):
        make_oracle("recorded-labels", task, options={"labels": str(tmp_path / "none.jsonl")})
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(HerobenchError, match="no committed labels"):
        make_oracle("recorded-labels", task, options={"labels": str(tmp_path / "empty.jsonl")})
    with pytest.raises(ConfigError, match="takes no oracle_options"):
        make_oracle("glyphworld-exact", task, options={"labels": "x"})


def test_features_are_deterministic_and_in_range(tmp_path):
    path, batches = write_log(tmp_path)
    a, b = RecordedLabelsOracle(path), RecordedLabelsOracle(path)
    assert np.array_equal(a._feats, b._feats) and a._feats.shape == (20, 16 * 16 * 3)
    assert 0.0 <= a._feats.min() and a._feats.max() <= 1.0
