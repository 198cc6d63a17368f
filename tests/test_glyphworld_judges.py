"""The GlyphWorld-trained judges (glyphworld-clip, glyphworld-yolo): they load offline from the package,
judge fresh renders with known truth well, feed a real run while the exact oracle evaluates it, and a
missing weight file is one line naming it. The training data helpers draw what the renderer draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from herobench.errors import HerobenchError
from herobench.glyphworld import render as R
from herobench.glyphworld import train_judges as J
from herobench.oracles import ORACLES, make_oracle
from herobench.oracles import weights as W
from herobench.tasks import glyphworld_tasks, load_task

TASKS = glyphworld_tasks()  # the task files' GlyphWorld prompt sets, by task name

pytest.importorskip("open_clip")
pytest.importorskip("ultralytics")

N = 64


def renders(task: str, profile: str, n: int = N, seed: int = 0):
    """``n`` fresh renders for the task's train + eval prompts, their prompts and their truth success."""
    spec = TASKS[task]
    prompts = list(dict.fromkeys([*spec.train_prompts, *spec.eval_prompts]))
    rng = np.random.default_rng(seed)
    imgs, ps, truth = [], [], []
    for i in range(n):
        p = prompts[i % len(prompts)]
        img, tr = R.render_for_prompt(p, rng)
        imgs.append(img)
        ps.append(p)
        truth.append(R.truth_success(task, tr, p, profile))
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0, ps, truth


@pytest.fixture(scope="module")
def yolo():
    return make_oracle("glyphworld-yolo", load_task("counting"))


@pytest.fixture(scope="module")
def clip_oracles():
    return {(t, p): make_oracle("glyphworld-clip", load_task(t), p)
            for t, p in (("black-cat", "default"), ("blue-rose", "default"), ("narcissus", "default"),
                         ("mountain", "green"), ("mountain", "snowy"))}


def test_registered_and_shipped_in_the_package():
    assert {"glyphworld-clip", "glyphworld-yolo"} <= set(ORACLES.names())
    manifest = W.load_manifest()
    for wid in ("glyphworld-clip", "glyphworld-yolo"):
        path = W.resolve(wid, manifest)  # the sha256 recorded in weights.toml is checked here
        assert manifest[wid].sha256 and path.is_relative_to(J.JUDGES_DIR)
    assert (J.JUDGES_DIR / "README.md").is_file()
    total = sum(f.stat().st_size for f in J.JUDGES_DIR.rglob("*") if f.is_file())
    assert total < 10 * 2**20


def test_missing_weight_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(W.ENV_DIRS, str(tmp_path))
    manifest = W.load_manifest()
    entry = manifest["glyphworld-yolo"]
    gone = {"glyphworld-yolo": W.WeightEntry(**{**entry.__dict__, "package_file": "judges/nothing-here.pt"})}
    with pytest.raises(HerobenchError) as e:
        W.resolve("glyphworld-yolo", gone)
    msg = str(e.value)
    assert "\n" not in msg and "missing weight file 'glyphworld-yolo.pt'" in msg and "train-judges" in msg


def test_yolo_counts_fresh_renders(yolo):
    images, prompts, truth = renders("counting", "default")
    verdicts = yolo.judge(images, prompts)
    acc = np.mean([v.success == t for v, t in zip(verdicts, truth)])
    assert acc >= 0.9, acc
    assert yolo.name == "glyphworld-yolo" and all(v.readable for v in verdicts)
    assert verdicts[0].attrs["objects"]["cup"]["source"] == "detector"  # never the open-vocabulary path
    # the detector's own counts, per class, against the renderer's (the prompt's class)
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(16):
        img, tr = R.render_for_prompt("a photo of three apples", rng)
        dets = yolo.detector(img[None])[0]
        k = sum(d.label == "apple" and d.confidence > yolo.config.counting_threshold for d in dets)
        hits += k == tr["counts"]["apple"]
    assert hits >= 13


@pytest.mark.parametrize("task,profile", [("black-cat", "default"), ("blue-rose", "default"),
                                          ("narcissus", "default"), ("mountain", "green"), ("mountain", "snowy")])
def test_clip_judges_fresh_renders(clip_oracles, task, profile):
    oracle = clip_oracles[(task, profile)]
    images, prompts, truth = renders(task, profile)
    verdicts = oracle.judge(images, prompts)
    acc = np.mean([v.success == t for v, t in zip(verdicts, truth)])
    assert acc >= 0.8, acc
    assert oracle.name == "glyphworld-clip" and oracle.references is None
    assert 0 < sum(truth) < N  # both kinds of render were judged


def test_clip_features_separate_attributes(clip_oracles):
    """A zero-shot read of one attribute on renders: the cat's colour."""
    scorer = clip_oracles[("black-cat", "default")].scorer
    colours = ["black", "grey", "orange", "brown"]
    texts = scorer.text_features([f"a photo of a {c} cat" for c in colours])
    rng = np.random.default_rng(1)
    right = 0
    for _ in range(16):
        truth = R.cat.params(rng)
        img = torch.from_numpy(R.draw(truth, rng)).permute(2, 0, 1)[None].float() / 255.0
        right += colours[int(scorer.probs(scorer.image_features(img), texts).argmax())] == truth["cat_colour"]
    assert right >= 14


def test_training_boxes_are_the_renderers_drawing():
    for s in range(8):
        truth = J.sample_objects_truth(np.random.default_rng(100 + s))
        img, boxes = J.render_objects_with_boxes(truth, np.random.default_rng(s))
        assert np.array_equal(img, R.draw(truth, np.random.default_rng(s)))
        assert sorted(b[0] for b in boxes) == sorted(o[0] for o in truth["objects"])
        for _, x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and 6 <= x1 - x0 <= 16


def test_captions_describe_their_truth():
    rng = np.random.default_rng(0)
    for _ in range(200):
        attrs = J.truth_attrs(J.sample_clip_truth(rng))
        text, constraints = J.caption(attrs, rng)
        assert J.compatible(attrs, constraints) and text.startswith("a photo of")


def test_run_counting_with_learned_feedback(tmp_path):
    from herobench.cli import main

    res = CliRunner().invoke(main, ["run", "--task", "counting", "--oracle", "glyphworld-yolo", "--budget", "8",
                                    "--set", "batch_size=4", "--set", "sampler.steps=2", "--set", "eval.n_images=4",
                                    "--set", "method_options.encoder_epochs=2", "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    cfg = json.loads(next(Path(tmp_path).rglob("config.json")).read_text())
    assert cfg["oracle"]["feedback"]["name"] == "glyphworld-yolo"
    assert cfg["oracle"]["evaluation"]["name"] == "glyphworld-exact"
    summary = json.loads(next(Path(tmp_path).rglob("summary.json")).read_text())
    assert summary["labels"] == 8
