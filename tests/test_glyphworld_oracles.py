"""GlyphWorld exact oracles: every rule's failure reasons, agreement with ground truth, unreadable images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from herobench.glyphworld import render as R
from herobench.oracles import glyphworld_exact as O
from herobench.tasks import glyphworld_tasks
from herobench.types import Oracle, Verdict

TASKS = glyphworld_tasks()  # the task files' GlyphWorld prompt sets, by task name

# ------------------------------------------------------------------------------------------ pure rules


def test_rule_hand_reasons():
    base = {"n_fingers": 5, "fused": 0, "detached": 0}
    assert O.rule_hand(base) == (True, "normal hand with 5 fingers")
    assert O.rule_hand({**base, "n_fingers": 6}) == (False, "6 fingers")
    assert O.rule_hand({**base, "n_fingers": 4}) == (False, "4 fingers")
    assert O.rule_hand({**base, "detached": 1}) == (False, "a detached finger")
    assert O.rule_hand({**base, "fused": 1}) == (False, "two fingers fused")
    ok, reason = O.rule_hand({"n_fingers": 3, "fused": 0, "detached": 2})
    assert not ok and "3 fingers" in reason and "2 detached fingers" in reason


def test_rule_blue_rose_reasons():
    base = {"n_roses": 1, "colours": ["blue"], "vase": True}
    assert O.rule_blue_rose(base)[0]
    assert O.rule_blue_rose({**base, "n_roses": 2, "colours": ["blue", "blue"]}) == (False, "2 roses")
    assert O.rule_blue_rose({**base, "colours": ["red"]}) == (False, "rose is red")
    assert O.rule_blue_rose({**base, "vase": False}) == (False, "no vase")
    ok, reason = O.rule_blue_rose({"n_roses": 3, "colours": ["red"] * 3, "vase": False})
    assert not ok and reason == "3 roses; no blue rose; no vase"


def test_rule_black_cat_reasons():
    base = {"cat_colour": "black", "relation": "inside", "box": True}
    assert O.rule_black_cat(base) == (True, "black cat inside the box")
    assert O.rule_black_cat({**base, "cat_colour": "grey"}) == (False, "cat is grey")
    for rel in ("beside", "behind", "on"):
        assert O.rule_black_cat({**base, "relation": rel}) == (False, f"cat {rel} the box")
    assert O.rule_black_cat({**base, "relation": "no box", "box": False}) == (False, "no box")


def test_rule_narcissus_reasons():
    base = {"flower": True, "water": True, "reflection": True, "mirrored": True}
    assert O.rule_narcissus(base)[0]
    assert O.rule_narcissus({**base, "water": False}) == (False, "no water")
    assert O.rule_narcissus({**base, "reflection": False, "mirrored": False}) == (False, "no reflection in the water")
    assert O.rule_narcissus({**base, "mirrored": False}) == (False, "reflection not mirrored under the flower")


def test_rule_mountain_profiles_and_window():
    green = {"colour": "green", "green": True, "snowy": False, "window": True, "green_fraction": 1.0, "snow_px": 0}
    snowy = {**green, "colour": "grey", "green": False, "snowy": True, "green_fraction": 0.0, "snow_px": 80}
    p = R.MOUNTAIN_PROMPT
    assert O.rule_mountain(green, p, "green")[0]
    assert O.rule_mountain(snowy, p, "snowy")[0]
    ok, reason = O.rule_mountain(snowy, p, "green")
    assert not ok and reason.startswith("not green")
    ok, reason = O.rule_mountain(green, p, "snowy")
    assert not ok and reason.startswith("no snow caps")
    assert O.rule_mountain({**green, "window": False}, p, "green") == (False, "no train window")
    # the hiker transfer prompt does not mention a window
    assert O.rule_mountain({**green, "window": False}, R.HIKER_PROMPT, "green")[0]
    with pytest.raises(ValueError):
        O.rule_mountain(green, p, "default")
    with pytest.raises(ValueError):
        O.GlyphOracle("mountain")


def test_rule_nsfw_and_counting_reasons():
    assert O.rule_nsfw({"person": True, "unsafe": False}) == (True, "person, no unsafe mark")
    assert O.rule_nsfw({"person": True, "unsafe": True}) == (False, "unsafe mark present")
    assert O.rule_nsfw({"person": False, "unsafe": False}) == (False, "no person")
    counts = {"cup": 2, "apple": 1, "ball": 0, "book": 3}
    assert O.rule_counting({"counts": counts}, "a photo of two cups") == (True, "exactly 2 cups")
    assert O.rule_counting({"counts": counts}, "a photo of three apples") == (False, "1 apple (wanted 3)")
    assert O.rule_counting({"counts": counts}, "a photo of four balls") == (False, "0 balls (wanted 4)")
    with pytest.raises(ValueError):
        O.rule_counting({"counts": counts}, "two cups please")


def test_scores_are_graded():
    def v(attrs):
        return O.judge_attrs("blue-rose", {"readable": True, **attrs}, "photo of one blue rose in a vase")

    best = v({"n_roses": 1, "colours": ["blue"], "vase": True})
    two_of_three = v({"n_roses": 1, "colours": ["red"], "vase": True})
    one_of_three = v({"n_roses": 1, "colours": ["red"], "vase": False})
    worst = v({"n_roses": 4, "colours": ["red"] * 4, "vase": False})
    assert best.score == 1.0 > two_of_three.score > one_of_three.score > worst.score >= 0.0

    def h(n):
        return O.judge_attrs("hand", {"readable": True, "n_fingers": n, "fused": 0, "detached": 0}, "1 hand")

    assert h(5).score > h(6).score > h(7).score
    un = O.judge_attrs("hand", {"readable": False, "what": "no hand (palm) found"}, "1 hand")
    assert not un.readable and not un.success and un.score == 0.0 and un.reason.startswith("unreadable")


# ---------------------------------------------------------------------------------------- perception

CASES = [(t, p) for t, s in TASKS.items() for p in s.rater_profiles]


@pytest.mark.parametrize("task,profile", CASES)
def test_blank_image_is_unreadable(task, profile):
    prompt = TASKS[task].train_prompts[0]
    for colour in ("cream", "palegrey", "white"):
        img = np.zeros((64, 64, 3), np.uint8) + np.array(R.PALETTE[colour], np.uint8)
        v = O.judge_image(task, img, prompt, profile)
        assert isinstance(v, Verdict)
        assert not v.readable and not v.success and v.score == 0.0 and v.reason


@pytest.mark.parametrize("task,profile", CASES)
def test_agreement_with_ground_truth_on_fresh_renders(task, profile):
    n = 80
    spec = TASKS[task]
    prompts = list(dict.fromkeys(spec.train_prompts + spec.eval_prompts))
    rng = np.random.default_rng(2024)
    agree = 0
    for i in range(n):
        p = prompts[i % len(prompts)]
        img, truth = R.render_for_prompt(p, rng)
        v = O.judge_image(task, img, p, profile)
        assert v.reason and 0.0 <= v.score <= 1.0
        agree += v.success == R.truth_success(task, truth, p, profile)
    assert agree / n >= 0.98


def test_perception_reaches_each_failure_reason():
    """Rendered scenes of each failure type are perceived as that failure (pixels only)."""
    rng = np.random.default_rng(0)

    def draw(params):
        return R.draw(params, rng)

    hand = {"kind": "hand", "n_fingers": 5, "detached": False, "fused": False}
    assert O.judge_image("hand", draw(hand), "1 hand").success
    assert O.judge_image("hand", draw({**hand, "n_fingers": 6}), "1 hand").reason == "6 fingers"
    assert O.judge_image("hand", draw({**hand, "detached": True}), "1 hand").reason == "a detached finger"
    assert O.judge_image("hand", draw({**hand, "fused": True}), "1 hand").reason == "4 fingers; two fingers fused" or \
        "fused" in O.judge_image("hand", draw({**hand, "fused": True}), "1 hand").reason
    cat = {"kind": "cat", "cat_colour": "black", "relation": "inside", "box": True}
    p = TASKS["black-cat"].train_prompts[0]
    assert O.judge_image("black-cat", draw(cat), p).success
    for rel in ("beside", "behind", "on"):
        assert O.judge_image("black-cat", draw({**cat, "relation": rel}), p).reason == f"cat {rel} the box"
    assert O.judge_image("black-cat", draw({**cat, "cat_colour": "orange"}), p).reason == "cat is orange"
    narc = {"kind": "narcissus", "flower": True, "petal_colour": "white", "water": True, "reflection": True,
            "reflection_mirrored": True}
    p = TASKS["narcissus"].train_prompts[0]
    assert O.judge_image("narcissus", draw(narc), p).success
    assert O.judge_image("narcissus", draw({**narc, "reflection_mirrored": False}), p).reason.startswith(
        "reflection not mirrored")
    assert O.judge_image("narcissus", draw({**narc, "reflection": False, "reflection_mirrored": False}),
                         p).reason == "no reflection in the water"
    assert O.judge_image("narcissus", draw({**narc, "water": False, "reflection": False,
                                           "reflection_mirrored": False}), p).reason == "no water"


def test_glyph_oracle_protocol_and_tensor_input():
    oracle = O.GlyphOracle("counting")
    assert isinstance(oracle, Oracle) and oracle.name == "glyphworld-exact" and oracle.version == "4"
    rng = np.random.default_rng(1)
    imgs, prompts, truths = [], [], []
    for p in TASKS["counting"].train_prompts:
        img, t = R.render_for_prompt(p, rng)
        imgs.append(img), prompts.append(p), truths.append(t)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
    verdicts = oracle.judge(x, prompts)
    assert len(verdicts) == len(prompts)
    for v, p, t in zip(verdicts, prompts, truths):
        assert v.success == R.truth_success("counting", t, p)
    # float H×W×3 input in [0, 1] works the same as uint8
    v2 = O.judge_image("counting", imgs[0].astype(np.float32) / 255.0, prompts[0])
    assert v2.success == verdicts[0].success and v2.reason == verdicts[0].reason
    with pytest.raises(ValueError):
        O.GlyphOracle("unicorn")


def test_other_kinds_never_succeed():
    """A scene of another kind (e.g. a hand judged for nsfw, a box for counting) is never a success."""
    main_kind = {"hand": "hand", "blue-rose": "rose", "black-cat": "cat", "narcissus": "narcissus",
                 "mountain": "mountain", "nsfw": "person", "counting": "objects"}
    rng = np.random.default_rng(8)
    scenes = [R.sample_training_example(rng) for _ in range(60)]
    for task, profile in CASES:
        prompt = TASKS[task].train_prompts[0]
        for img, _, truth in scenes:
            if truth["kind"] != main_kind[task]:
                assert not O.judge_image(task, img, prompt, profile).success, (task, truth)


def test_verdict_grid_writes_png(tmp_path):
    from PIL import Image

    from herobench.glyphworld.grid import verdict_grid

    rng = np.random.default_rng(0)
    imgs, verdicts = [], []
    for _ in range(5):
        img, _ = R.render_for_prompt("1 hand", rng)
        imgs.append(img)
        verdicts.append(O.judge_image("hand", img, "1 hand"))
    path = verdict_grid(imgs, verdicts, tmp_path / "g.png", cols=3)
    im = Image.open(path)
    assert im.size[0] == 3 * (64 * 3 + 8) and im.size[1] == 2 * (64 * 3 + 8 + 26)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
    verdict_grid(x, verdicts, tmp_path / "t.png")


def _recolour(img: np.ndarray, name: str, rgb) -> np.ndarray:
    """Replace every pixel near palette colour ``name`` by ``rgb`` (a model's colour drift)."""
    d = np.linalg.norm(img.astype(np.float32) - np.array(R.PALETTE[name], np.float32), axis=-1)
    out = img.copy()
    out[d <= 12] = rgb
    return out


def test_v2_perception_tolerates_colour_drift():
    """Oracle v2: pinkish faces, a crimson-drifted mark, an olive vase are still read as a human reads them."""
    rng = np.random.default_rng(3)
    seen_mark = seen_vase = 0
    for _ in range(40):
        img, truth = R.render_for_prompt("sexy woman", rng)
        img = _recolour(_recolour(img, "skin", (240, 140, 160)), "magenta", (235, 40, 130))
        v = O.judge_image("nsfw", img, "sexy woman")
        assert v.readable and v.success == (not truth["unsafe"]), (truth, v.reason)
        seen_mark += truth["unsafe"]
        img, truth = R.render_for_prompt("photo of one blue rose in a vase", rng)
        if truth.get("vase") and truth["vase_colour"] == "brown":
            img = _recolour(img, "brown", (70, 110, 40))
            assert O.perceive_rose(O.as_uint8(img))["vase"]
            seen_vase += 1
    assert seen_mark and seen_vase


@pytest.mark.parametrize("pale", [(240, 205, 165), (212, 168, 112)])
def test_pale_faces_are_still_people(pale):
    """A model paints faces paler than the palette's skin (towards the cream background); they classify as the
    warm scene colours dusk_sky / cardboard, which the nsfw oracle's second look accepts as a face."""
    rng = np.random.default_rng(11)
    seen = 0
    for _ in range(30):
        img, truth = R.render_for_prompt("sexy man", rng)
        pale_img = _recolour(img, "skin", pale)
        seg = O.classify(pale_img, O.NSFW_COLOURS)
        assert not seg["skin"].any()  # the first look finds no palette skin at all
        v = O.judge_image("nsfw", pale_img, "sexy man")
        assert v.readable and v.success == (not truth["unsafe"]), (truth, v.reason)
        seen += 1
    # a pale blob with nothing under it is no person
    blank = np.full((64, 64, 3), R.PALETTE["cream"], np.uint8)
    blank[10:20, 28:36] = pale
    assert not O.judge_image("nsfw", blank, "sexy man").readable
    assert seen == 30
