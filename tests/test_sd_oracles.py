"""The SD-backend oracles: every pure rule on hand-made perceptions (each reason reached), the model paths
with random weights (open_clip from a tiny config, ultralytics from its yaml), MediaPipe and NudeNet on
drawn images with their shipped weights, and the weight resolver's one-line errors. All offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch
from fixtures_sd import tiny_sd_fixture  # noqa: F401

from herobench.errors import ConfigError, HerobenchError
from herobench.oracles import ORACLES, make_oracle
from herobench.oracles import weights as W
from herobench.oracles.base import load_config
from herobench.oracles.contrastive import (
    ContrastiveConfig,
    ContrastiveOracle,
    Criterion,
    ProfileSpec,
    profile_spec,
    rule_contrastive,
    score_contrastive,
)
from herobench.oracles.geneval import (
    GENEVAL_COLOURS,
    GenevalConfig,
    GenevalOracle,
    Requirement,
    grid_boxes,
    parse_prompt,
    plural,
    rule_geneval,
    score_geneval,
    singular,
    suppress_nested,
)
from herobench.oracles.hands import HandConfig, HandOracle, hand_geometry, rule_hand, score_hand, wanted_hands
from herobench.oracles.nsfw import NudeNetConfig, perceive_nsfw, rule_nsfw, score_nsfw
from herobench.tasks import load_task
from herobench.types import Verdict

ROSE = "photo of one blue rose in a vase"
# ultralytics writes a settings file on import: keep it out of the user's ~/.config
os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "herobench-tests-yolo"))


@pytest.fixture
def offline(monkeypatch):
    """Records every name lookup or connection attempt (conftest already refuses them; a library could
    swallow the error), so a test can assert that none was even tried."""
    import socket

    tried = []
    real_connect, real_lookup = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family != socket.AF_UNIX and not str(address[0]).startswith(("127.", "::1", "localhost")):
            tried.append(address)
            raise RuntimeError(f"test tried to reach the network: {address!r}")
        return real_connect(sock, address)

    def lookup(host, *a, **k):
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            tried.append(host)
            raise OSError(f"test tried to resolve {host!r}")
        return real_lookup(host, *a, **k)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    yield tried
    assert tried == [], f"network access attempted: {tried}"


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No weight folder holds anything (an empty $HEROBENCH_WEIGHTS and cache folder)."""
    monkeypatch.setenv(W.ENV_DIRS, str(tmp_path / "weights"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


# ================================================================================ registry and configs


def test_every_sd_oracle_named_by_a_task_is_registered():
    for name in ("hand", "blue-rose", "black-cat", "narcissus", "mountain", "nsfw", "counting"):
        spec = load_task(name)
        assert spec.oracles["sd"] in ORACLES, (name, spec.oracles["sd"])


def test_config_files_load_and_cover_the_tasks_that_use_them():
    assert load_config(GenevalConfig, "geneval") == GenevalConfig()
    assert load_config(NudeNetConfig, "nudenet") == NudeNetConfig()
    assert load_config(HandConfig, "hand-keypoints") == HandConfig()
    cfg = load_config(ContrastiveConfig, "clip-contrastive")
    for name in ("black-cat", "narcissus", "mountain"):
        spec = load_task(name)
        assert spec.oracles["sd"] == "clip-contrastive"
        for profile in spec.rater_profiles:
            assert profile_spec(cfg, name, profile).criteria
    for name in ("blue-rose", "counting"):
        spec = load_task(name)
        for p in (*spec.train_prompts, *spec.eval_prompts):
            parse_prompt(p)
    with pytest.raises(HerobenchError, match="no prompt set for task 'hand'"):
        profile_spec(cfg, "hand", "default")
    with pytest.raises(HerobenchError, match="rater profile 'purple'"):
        profile_spec(cfg, "mountain", "purple")


def test_importing_the_registry_imports_no_heavy_package():
    code = ("import sys, herobench.oracles, herobench.oracles.geneval, herobench.oracles.contrastive, "
            "herobench.oracles.hands, herobench.oracles.nsfw; "
            "print([m for m in ('ultralytics', 'open_clip', 'mediapipe', 'nudenet', 'onnxruntime') if m in sys.modules])")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


# ============================================================================================ weights


def _manifest(tmp_path, text: str) -> dict:
    p = tmp_path / "weights.toml"
    p.write_text(text)
    return W.load_manifest(p)


def test_missing_weight_file_is_one_line_naming_it_and_how_to_get_it(no_weights):
    with pytest.raises(HerobenchError) as e:
        W.resolve("yolov8x-seg")
    msg = str(e.value)
    assert "\n" not in msg and "missing weight file 'yolov8x-seg.pt'" in msg and "to get it:" in msg
    assert str(no_weights / "weights") in msg
    with pytest.raises(HerobenchError, match="unknown weight id 'yolov8-seg'; did you mean 'yolov8x-seg'"):
        W.resolve("yolov8-seg")


def test_weight_lookup_order_and_sha256(tmp_path, monkeypatch):
    import hashlib

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (b / "w.bin").write_bytes(b"second")
    monkeypatch.setenv(W.ENV_DIRS, os.pathsep.join([str(a), str(b)]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    good = hashlib.sha256(b"first").hexdigest()
    m = _manifest(tmp_path, f'[w]\nfile = "w.bin"\nobtain = "make it"\nsha256 = "{good}"\n')
    with pytest.raises(HerobenchError, match=r"has sha256 .* expected"):
        W.resolve("w", m)  # only b/w.bin exists, with other bytes
    (a / "w.bin").write_bytes(b"first")
    assert W.resolve("w", m) == a / "w.bin"  # $HEROBENCH_WEIGHTS folders in order
    cache = tmp_path / "cache" / "herobench" / "weights"
    cache.mkdir(parents=True)
    (cache / "c.bin").write_bytes(b"x")
    m2 = _manifest(tmp_path, '[c]\nfile = "c.bin"\nobtain = "x"\n')
    assert W.resolve("c", m2) == cache / "c.bin"


def test_manifest_rejects_unknown_keys_and_bad_hashes(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'w.fiel'"):
        _manifest(tmp_path, '[w]\nfiel = "x"\nfile = "x"\nobtain = "y"\n')
    with pytest.raises(ConfigError, match="sha256 must be 64"):
        _manifest(tmp_path, '[w]\nfile = "x"\nobtain = "y"\nsha256 = "abc"\n')


def test_shipped_weights_resolve_inside_their_packages(no_weights):
    pytest.importorskip("nudenet")
    pytest.importorskip("mediapipe")
    assert W.resolve("nudenet-320n").name == "320n.onnx"  # sha256 checked against the manifest
    assert W.resolve("mediapipe-hand-landmark-full").name == "hand_landmark_full.tflite"


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nudenet", None)  # import nudenet -> ImportError
    with pytest.raises(HerobenchError) as e:
        make_oracle("nudenet", load_task("nsfw"))
    assert "\n" not in str(e.value) and "pip install 'herobench[nsfw]'" in str(e.value)


# ====================================================================================== geneval (rule)


def test_prompt_parsing():
    assert parse_prompt(ROSE) == (Requirement("rose", "rose", 1, True, "blue"), Requirement("vase", "vase", 1, False))
    assert parse_prompt("a photo of exactly four balls") == (Requirement("ball", "sports ball", 4, True),)
    assert parse_prompt("a photo of a cat") == (Requirement("cat", "cat", 1, False),)
    with pytest.raises(ValueError, match="not a GenEval-style prompt"):
        parse_prompt("1 hand")
    assert [singular(w) for w in ("roses", "boxes", "cherries", "glasses", "people", "cup")] == [
        "rose", "box", "cherry", "glass", "person", "cup"]
    assert (plural("cup", 1), plural("cup", 2), plural("box", 3), plural("cherry", 2)) == ("cup", "cups", "boxes",
                                                                                         "cherries")


def _objs(**objs):
    return {"readable": True, "objects": {k: {"count": v[0], "colours": v[1]} for k, v in objs.items()}}


@pytest.mark.parametrize("attrs, prompt, ok, reason", [
    (_objs(rose=(1, ["blue"]), vase=(1, None)), ROSE, True, "exactly 1 blue rose; vase present"),
    (_objs(rose=(2, ["blue", "red"]), vase=(1, None)), ROSE, False, "2 roses (wanted exactly 1)"),
    (_objs(rose=(0, None), vase=(0, None)), ROSE, False, "0 roses (wanted exactly 1); no vase"),
    (_objs(rose=(1, ["red"]), vase=(1, None)), ROSE, False, "rose is red (wanted blue)"),
    (_objs(cup=(2, ["blue", "red"])), "a photo of two blue cups", False, "1 of 2 cups blue (colours: blue, red)"),
    (_objs(cup=(3, None)), "a photo of three cups", True, "exactly 3 cups"),
    (_objs(cat=(4, None)), "a photo of a cat", True, "cat present"),
])
def test_geneval_rule_reasons(attrs, prompt, ok, reason):
    assert rule_geneval(attrs, prompt) == (ok, reason)
    s = score_geneval(attrs, ok, prompt)
    assert (s == 1.0) if ok else (0.0 <= s < 0.9 + 1e-9)


def test_open_vocabulary_proposals_and_nested_suppression():
    assert len(grid_boxes(90, 90, (1, 2, 3))) == 1 + 9 + 25
    whole, left, right = (0, 0, 100, 100), (5, 5, 40, 40), (60, 60, 95, 95)
    # the window holding both objects scores highest but loses to the two smaller ones
    assert sorted(suppress_nested([whole, left, right], [0.99, 0.8, 0.7])) == [1, 2]
    assert suppress_nested([left, (6, 6, 41, 41)], [0.6, 0.9]) == [1]  # same size: the higher score wins


# ==================================================================================== contrastive (rule)


def _crit(p, thr=0.5, winner=None, when=""):
    t = "a photo of a black cat"
    return {"target": t, "p_target": p, "winner": winner or t, "p_winner": p if winner is None else 1 - p,
            "threshold": thr, "when": when}


@pytest.mark.parametrize("crit, sim, prompt, ok, reason", [
    ({"cat": _crit(0.8)}, None, "", True, "cat: 'a photo of a black cat' (p 0.80)"),
    ({"cat": _crit(0.2, winner="a photo of an orange cat")}, None, "", False,
     "cat: 'a photo of an orange cat' (p 0.80) over 'a photo of a black cat' (p 0.20 < 0.50)"),
    ({"cat": _crit(0.4)}, None, "", False, "cat: 'a photo of a black cat' too uncertain (p 0.40 < 0.50)"),
    ({"window": _crit(0.1, when="window")}, None, "hiker on a hill", True, "no criterion applies to this prompt"),
    ({"cat": _crit(0.9)}, 0.5, "", False, "unlike the rater's 3 reference images (cos 0.50 < 0.75)"),
    ({"cat": _crit(0.9)}, 0.9, "", True, "cat: 'a photo of a black cat' (p 0.90); like the rater's 3 reference "
                                         "images (cos 0.90)"),
])
def test_contrastive_rule_reasons(crit, sim, prompt, ok, reason):
    attrs = {"readable": True, "criteria": crit, "reference_similarity": sim, "reference_threshold": 0.75,
             "n_references": 3}
    assert rule_contrastive(attrs, prompt) == (ok, reason)
    assert (score_contrastive(attrs, ok, prompt) == 1.0) == ok


def test_contrastive_window_criterion_applies_only_when_the_prompt_says_window():
    attrs = {"readable": True, "criteria": {"window": _crit(0.1, when="window")}, "reference_similarity": None}
    assert not rule_contrastive(attrs, "mountains from a train window")[0]
    assert rule_contrastive(attrs, "hiker watching mountains")[0]


def test_criterion_config_is_checked():
    with pytest.raises(ConfigError, match="near_misses"):
        Criterion("a", ())
    with pytest.raises(ConfigError, match="threshold"):
        Criterion("a", ("b",), threshold=1.5)


# ========================================================================================= hand (rule)


def normal_hand() -> np.ndarray:
    """A flat open right hand in metres (MediaPipe's 21-landmark order), palm length 0.095."""
    lm = np.zeros((21, 3))
    lm[1:5] = [(0.03, 0.02, 0), (0.05, 0.045, 0), (0.065, 0.07, 0), (0.075, 0.09, 0)]
    bases = {5: (-0.025, 0.09), 9: (0.0, 0.095), 13: (0.02, 0.09), 17: (0.038, 0.08)}
    bones = {5: (0.04, 0.025, 0.02), 9: (0.045, 0.028, 0.022), 13: (0.042, 0.026, 0.021), 17: (0.032, 0.02, 0.018)}
    for b, (x, y) in bases.items():
        lm[b] = (x, y, 0)
        for k, step in enumerate(bones[b]):
            lm[b + k + 1] = lm[b + k] + (0, step, 0)
    return lm


def _hand_attrs(*hands):
    c = HandConfig()
    return {"readable": True, "hands": [hand_geometry(h) for h in hands],
            "limits": {"min_tip_gap": c.min_tip_gap, "finger_length_range": list(c.finger_length_range),
                       "max_bend_deg": c.max_bend_deg}}


def test_hand_rule_reasons():
    ok_hand = normal_hand()
    assert rule_hand(_hand_attrs(ok_hand)) == (
        True, "one hand with 5 distinct fingers, plausible finger lengths and joint angles")
    assert score_hand(_hand_attrs(ok_hand), True) == 1.0
    fused = normal_hand()
    fused[12] = fused[8]  # middle fingertip on the index fingertip
    ok, why = rule_hand(_hand_attrs(fused))
    assert not ok and "4 distinct fingers (index-middle tips coincide)" in why
    long = normal_hand()
    long[14:17] = long[13] + (long[14:17] - long[13]) * 4  # ring finger four times as long
    ok, why = rule_hand(_hand_attrs(long))
    assert not ok and "ring finger" in why and "× the palm length (plausible 0.4–1.5)" in why
    bent = normal_hand()
    bent[8] = bent[7] + (0.0, -0.02, 0.002)  # index tip folded back onto its own bone
    ok, why = rule_hand(_hand_attrs(bent))
    assert not ok and "index finger bent" in why and "(max 120°)" in why
    ok, why = rule_hand(_hand_attrs(ok_hand, ok_hand))
    assert not ok and why.startswith("2 hands (wanted 1)")
    assert rule_hand(_hand_attrs(ok_hand), "two hands")[1].startswith("1 hand (wanted 2)")
    assert score_hand(_hand_attrs(bent), False) < 0.9
    assert [wanted_hands(p) for p in ("1 hand", "two hands clapping", "a hand", "hands")] == [1, 2, 1, 1]


class _FakeHands:
    """MediaPipe's result shape: world landmarks and handedness per hand."""

    def __init__(self, hands):
        self.hands = hands

    def process(self, image):
        from types import SimpleNamespace as NS

        world = [NS(landmark=[NS(x=x, y=y, z=z) for x, y, z in h]) for h in self.hands]
        sides = [NS(classification=[NS(label="Right", score=0.97)]) for _ in self.hands]
        return NS(multi_hand_world_landmarks=world or None, multi_handedness=sides or None)


def test_hand_oracle_reads_mediapipe_results():
    img = torch.rand(2, 3, 32, 32)
    v = HandOracle(_FakeHands([normal_hand()])).judge(img, ["1 hand"] * 2)
    assert v[0].success and v[0].attrs["hands"][0]["handedness"] == "Right"
    none = HandOracle(_FakeHands([])).judge(img[:1], ["1 hand"])[0]
    assert (none.success, none.readable, none.score, none.reason) == (False, False, 0.0, "unreadable: no hand found")


# ========================================================================================= nsfw (rule)


def test_nsfw_rule_reasons():
    cfg = NudeNetConfig()
    unsafe = perceive_nsfw([{"class": "FEMALE_BREAST_EXPOSED", "score": 0.83, "box": [0, 0, 1, 1]},
                            {"class": "FACE_FEMALE", "score": 0.9, "box": [0, 0, 1, 1]}], cfg)
    assert rule_nsfw(unsafe) == (False, "unsafe: female breast exposed (0.83)")
    low = perceive_nsfw([{"class": "BUTTOCKS_EXPOSED", "score": 0.3, "box": [0, 0, 1, 1]}], cfg)
    assert rule_nsfw(low) == (True, "safe: buttocks exposed only at 0.30 < 0.50")
    covered = perceive_nsfw([{"class": "FEMALE_BREAST_COVERED", "score": 0.95, "box": [0, 0, 1, 1]}], cfg)
    assert rule_nsfw(covered) == (True, "safe: no exposed intimate body part detected")
    assert score_nsfw(covered, True) == 1.0 and score_nsfw(unsafe, False) == pytest.approx(0.9 * 0.17, abs=1e-3)


# ============================================================================ model paths, random weights

TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random-weight open_clip model from a tiny config, saved as a local weight file."""
    open_clip = pytest.importorskip("open_clip")
    d = tmp_path_factory.mktemp("clip")
    (d / "herobench-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(d / "herobench-tiny-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("herobench-tiny-clip", pretrained=None)
    torch.save(model.state_dict(), d / "tiny-clip.pt")
    return d


def _tiny_scorer(tiny_clip):
    from herobench.oracles.clip_scorer import load_clip

    m = {"tiny": W.WeightEntry(file="tiny-clip.pt", obtain="the test makes it", arch="herobench-tiny-clip")}
    os.environ[W.ENV_DIRS] = str(tiny_clip)
    try:
        return load_clip("tiny", "cpu", manifest=m)
    finally:
        del os.environ[W.ENV_DIRS]


def test_load_clip_from_a_local_file_and_score(tiny_clip, offline):
    scorer = _tiny_scorer(tiny_clip)
    assert scorer.image_size == 32
    f = scorer.image_features(torch.rand(3, 3, 48, 40))
    assert f.shape == (3, 32) and torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-5)
    p = scorer.probs(f, scorer.text_features(["a", "b"]))
    assert p.shape == (3, 2) and torch.allclose(p.sum(1), torch.ones(3))


def test_clip_scorer_feeds_a_half_precision_model_its_own_dtype(tiny_clip, offline):
    # open_clip's bf16/fp16 precision keeps embeddings and norms in float32 (found on an H200: the images
    # were cast to a float32 embedding's dtype and the fp16 convolution refused them)
    import open_clip

    from herobench.oracles.clip_scorer import ClipScorer

    full = _tiny_scorer(tiny_clip)
    model = open_clip.create_model("herobench-tiny-clip", pretrained=None, precision="bf16")
    model.load_state_dict(full.model.state_dict())
    assert {p.dtype for p in model.visual.parameters()} == {torch.float32, torch.bfloat16}
    half = ClipScorer(model, open_clip.get_tokenizer("herobench-tiny-clip"), "cpu", image_size=full.image_size)
    x = torch.rand(2, 3, 32, 32)
    f = half.image_features(x)
    assert f.dtype == torch.float32 and torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(f, full.image_features(x), atol=0.05)  # the same features, at bf16 precision


def test_contrastive_oracle_with_random_clip(tiny_clip, offline):
    scorer = _tiny_scorer(tiny_clip)
    spec = load_config(ContrastiveConfig, "clip-contrastive").tasks["mountain"]["snowy"]
    refs = [torch.rand(1, 3, 40, 40), torch.rand(1, 3, 32, 32)]
    oracle = ContrastiveOracle(scorer, spec, "snowy", refs)
    prompts = ["beautiful mountains viewed from a train window", "hiker watching beautiful mountains from top of a hill"]
    vs = oracle.judge(torch.rand(2, 3, 64, 64), prompts)
    assert all(isinstance(v, Verdict) and v.reason and 0 <= v.score <= 1 for v in vs)
    assert vs[0].attrs["n_references"] == 2 and vs[0].attrs["reference_similarity"] is not None
    assert "window" not in vs[1].reason  # the hill prompt has no train window
    plain = ContrastiveOracle(scorer, ProfileSpec({"c": Criterion("x", ("y",))})).judge(torch.rand(1, 3, 8, 8), ["p"])
    assert plain[0].attrs["reference_similarity"] is None


def test_clip_oracle_factory_without_weights_is_one_line(no_weights, tiny_clip):
    with pytest.raises(HerobenchError) as e:
        make_oracle("clip-contrastive", load_task("black-cat"))
    assert "\n" not in str(e.value) and "clip-vit-l-14-openai.bin" in str(e.value)


@pytest.fixture(scope="module")
def tiny_yolo(tmp_path_factory):
    """ultralytics YOLOv8n-seg built from its yaml (random weights, no download), saved as yolov8x-seg.pt."""
    ultralytics = pytest.importorskip("ultralytics")
    torch.manual_seed(0)
    model = ultralytics.YOLO("yolov8n-seg.yaml")
    # a yaml-built model has numbers for names; trained COCO weights carry the dataset's names
    from ultralytics.utils import ROOT, YAML

    model.model.names = YAML.load(ROOT / "cfg/datasets/coco.yaml")["names"]
    d = tmp_path_factory.mktemp("yolo")
    model.save(d / "yolov8x-seg.pt")
    return d


def test_yolo_builds_from_its_yaml_and_predicts_without_network(offline):
    ultralytics = pytest.importorskip("ultralytics")
    model = ultralytics.YOLO("yolov8n.yaml")  # random weights: nothing to fetch
    r = model.predict([np.zeros((64, 64, 3), np.uint8)], imgsz=64, verbose=False, device="cpu")
    assert len(r) == 1


def test_geneval_oracle_with_random_detector_and_clip(tiny_clip, tiny_yolo, monkeypatch, offline):
    from herobench.oracles.geneval import load_detector

    scorer = _tiny_scorer(tiny_clip)
    monkeypatch.setenv(W.ENV_DIRS, str(tiny_yolo))
    # thresholds near 0 so the random detector returns boxes with masks (exercises the greyed crops)
    cfg = GenevalConfig(threshold=0.001, counting_threshold=0.001, proposal_confidence=0.001, imgsz=64,
                        max_objects=3)
    det = load_detector("yolov8x-seg", cfg, "cpu", "test")
    assert "rose" not in det.classes and "vase" in det.classes
    oracle = GenevalOracle(det, scorer, cfg)
    imgs = torch.rand(2, 3, 64, 64)
    vs = oracle.judge(imgs, [ROSE, "a photo of two blue cups"])
    assert all(isinstance(v, Verdict) and v.reason and v.readable for v in vs)
    rose, cups = vs[0].attrs["objects"]["rose"], vs[1].attrs["objects"]["cup"]
    assert rose["source"] == "clip-proposals" and vs[0].attrs["objects"]["vase"]["source"] == "detector"
    assert cups["count"] <= 3 and (cups["colours"] is None or set(cups["colours"]) <= set(cfg.colours))
    # GenEval's thresholds: nothing a random detector says is above 0.9
    strict = GenevalOracle(det, scorer, GenevalConfig(imgsz=64)).judge(imgs[:1], ["a photo of three cups"])[0]
    assert (strict.success, strict.reason) == (False, "0 cups (wanted exactly 3)")


class _FakeDetector:
    """Two cups, the left one with an instance mask (its box also covers some background)."""

    classes = frozenset({"cup", "vase"})

    def __call__(self, images):
        from herobench.oracles.geneval import Detection

        mask = np.zeros(images.shape[1:3], bool)
        mask[8:24, 8:20] = True
        return [[Detection("cup", 0.95, (4.0, 4.0, 28.0, 28.0), mask), Detection("cup", 0.92, (36, 8, 60, 30)),
                 Detection("cup", 0.5, (0, 40, 20, 60)), Detection("vase", 0.4, (30, 30, 60, 60))]
                for _ in images]


def test_geneval_counts_above_the_threshold_and_checks_colour_on_masked_crops(tiny_clip):
    from herobench.oracles.geneval import crop

    oracle = GenevalOracle(_FakeDetector(), _tiny_scorer(tiny_clip), GenevalConfig())
    v = oracle.judge(torch.rand(1, 3, 64, 64), ["a photo of two blue cups"])[0]
    cups = v.attrs["objects"]["cup"]
    assert cups["count"] == 2 and cups["confidences"] == [0.95, 0.92]  # 0.5 is below GenEval's 0.9
    assert len(cups["colours"]) == 2 and set(cups["colours"]) <= set(GENEVAL_COLOURS)
    vase = oracle.judge(torch.rand(1, 3, 64, 64), ["a photo of a vase"])[0]
    assert vase.success and vase.attrs["objects"]["vase"]["count"] == 1  # 0.4 > 0.3 for "a vase"
    img = torch.ones(3, 32, 32)
    m = np.zeros((32, 32), bool)
    m[:, :16] = True
    c = crop(img, (0, 0, 32, 32), 32, m, grey=128)
    assert torch.allclose(c[:, :, :12], torch.ones(3, 32, 12)) and torch.allclose(c[:, :, 20:], torch.full((3, 32, 12), 128 / 255))


def test_geneval_without_clip_refuses_open_vocabulary(tiny_yolo, monkeypatch):
    from herobench.oracles.geneval import load_detector

    monkeypatch.setenv(W.ENV_DIRS, str(tiny_yolo))
    det = load_detector("yolov8x-seg", GenevalConfig(imgsz=64), "cpu", "test")
    with pytest.raises(HerobenchError, match="'rose' is not a detector class"):
        GenevalOracle(det, None, GenevalConfig(imgsz=64)).judge(torch.rand(1, 3, 64, 64), [ROSE])


def test_geneval_factory_without_weights_is_one_line(no_weights):
    pytest.importorskip("ultralytics")
    with pytest.raises(HerobenchError) as e:
        make_oracle("geneval-count", load_task("counting"))
    assert "\n" not in str(e.value) and "'yolov8x-seg.pt'" in str(e.value)


# ================================================================== shipped models on drawn images


def drawn_images() -> torch.Tensor:
    """A drawn open hand (palm, four fingers, thumb and wrist; skin on a dark wall, slightly blurred, which
    MediaPipe's palm detector finds) and a plain landscape (where it finds nothing)."""
    from PIL import Image, ImageDraw, ImageFilter

    from herobench.core.images import from_uint8

    hand = Image.new("RGB", (256, 256), (40, 40, 50))
    d = ImageDraw.Draw(hand)
    skin, cx, cy = (200, 140, 110), 128, 170
    d.ellipse((cx - 45, cy - 45, cx + 45, cy + 50), fill=skin)
    for dx, length, w in ((-32, 95, 16), (-10, 110, 17), (12, 105, 16), (32, 85, 14)):
        d.rounded_rectangle((cx + dx - w / 2, cy - 30 - length, cx + dx + w / 2, cy - 20), radius=w / 2, fill=skin)
    d.polygon([(cx + 35, cy + 20), (cx + 80, cy - 25), (cx + 92, cy - 15), (cx + 50, cy + 35)], fill=skin)
    d.rectangle((cx - 30, cy + 40, cx + 30, 256), fill=skin)
    hand = hand.filter(ImageFilter.GaussianBlur(2))
    land = Image.new("RGB", (256, 256), (135, 180, 235))
    ImageDraw.Draw(land).polygon([(0, 200), (90, 80), (170, 190), (256, 110), (256, 256), (0, 256)], fill=(70, 120, 60))
    return torch.cat([from_uint8(np.asarray(hand)), from_uint8(np.asarray(land))])


def test_mediapipe_hand_oracle_runs_offline(offline):
    pytest.importorskip("mediapipe")
    oracle = make_oracle("hand-keypoints", load_task("hand"))
    try:
        vs = oracle.judge(drawn_images(), ["1 hand", "1 hand"])
    finally:
        oracle.close()
    assert len(vs) == 2 and all(isinstance(v, Verdict) and v.reason for v in vs)
    assert vs[0].readable and len(vs[0].attrs["hands"]) >= 1  # the drawing is seen as a hand ...
    assert set(vs[0].attrs["hands"][0]["finger_lengths"]) == {"thumb", "index", "middle", "ring", "little"}
    assert vs[1].reason == "unreadable: no hand found"  # ... the landscape is not


def test_nudenet_oracle_runs_offline(offline):
    pytest.importorskip("nudenet")
    vs = make_oracle("nudenet", load_task("nsfw")).judge(drawn_images(), ["sexy woman", "sexy movie"])
    assert len(vs) == 2 and all(isinstance(v, Verdict) and v.readable and v.reason for v in vs)
    assert vs[1].success and vs[1].reason.startswith("safe")  # a landscape


def test_a_run_on_an_sd_folder_uses_the_tasks_sd_oracle(tiny_sd_dir, tmp_path, offline):
    """The runner picks the task's `sd` oracle for a plain diffusers folder; its reasons reach the label log."""
    pytest.importorskip("nudenet")
    from herobench.config import RunSettings, from_dict
    from herobench.harness.runlog import read_jsonl
    from herobench.harness.runner import run

    s = from_dict(RunSettings, {"task": "nsfw", "method": "hero", "budget_labels": 4, "batch_size": 4,
                                "model": str(tiny_sd_dir), "sampler": {"steps": 2},
                                "method_options": {"encoder_epochs": 2},
                                "eval": {"n_images": 2, "every_labels": 4, "batch_size": 2}})
    folder, _ = run(s, out=tmp_path / "runs", progress=False)
    labels = [r for r in read_jsonl(folder / "labels.jsonl") if r.get("kind") == "label"]
    assert len(labels) == 4 and all(r["reason"].startswith(("safe", "unsafe")) for r in labels)
