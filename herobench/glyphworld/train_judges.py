"""Learned judges trained on GlyphWorld renders: a tiny open_clip model and a tiny ultralytics detector.

They are the SD backend's learned oracles (``clip-contrastive``, ``geneval-count``) at GlyphWorld's size, so
those code paths run here with real, meaningful weights, and their agreement with GlyphWorld's exact oracle
can be measured (``benchmarks/oracle_agreement.py --learned``). Training uses the renderer's own ground truth
(never the exact oracle): truth captions for CLIP, object boxes for the detector.

    OMP_NUM_THREADS=1 herobench glyphworld train-judges --seed 0            # writes herobench/glyphworld/judges/

* **glyphworld-clip**: open_clip ``CLIP`` from the custom config ``CLIP_CONFIG`` (ViT, 64×64 input, patch 8;
  a text transformer over the shipped GlyphWorld tokenizer's 484 tokens), trained from scratch by a
  contrastive loss on (render, caption) pairs. Captions are written from the truth dict, in full or naming one
  attribute ("a photo of a black cat", "a photo of a cat sitting inside a cardboard box"); a caption is a
  positive for every image of the batch whose truth it describes (multi-positive InfoNCE, so identical or
  compatible captions are not pushed apart). Saved as an open_clip ``local-dir`` folder: config, tokenizer,
  fp16 safetensors.
* **glyphworld-yolo**: ultralytics ``YOLO`` built from ``yolo.yaml`` (a yolov8-style model at width 0.125),
  trained on counting scenes written in YOLO format to a temporary folder; the class names are the world's
  objects under their COCO names (cup, apple, sports ball, book), so GenEval's prompt parser maps
  "balls" to them as it does for COCO detectors.

Both renders get light blur and noise (the shipped model's samples are softer than renders). One CPU thread;
deterministic from the seed as far as the libraries allow (ultralytics ``deterministic=True``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from herobench.glyphworld import render as R

JUDGES_DIR = Path(__file__).resolve().parent / "judges"
CLIP_DIR_NAME = "clip"
CLIP_FILE = "glyphworld-clip.safetensors"
YOLO_FILE = "glyphworld-yolo.pt"
COCO_NAME = {"cup": "cup", "apple": "apple", "ball": "sports ball", "book": "book"}
CLASS_NAMES = [COCO_NAME[c] for c in R.COUNT_CLASSES]

CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32,
                       "mlp_ratio": 4.0},
        "text_cfg": {"context_length": 24, "vocab_size": 484, "width": 128, "heads": 4, "layers": 3,
                     "hf_tokenizer_name": "glyphworld-tokenizer", "pad_id": 1, "eos_id": 1, "pool_type": "eos"},
    },
    "preprocess_cfg": {"size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
}

YOLO_YAML = """\
# glyphworld-yolo: a yolov8-style detector at width 0.125 / depth 0.33 for 64x64 GlyphWorld images
nc: 4
scales:
  t: [0.33, 0.125, 256]
backbone:
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, Conv, [128, 3, 2]]
  - [-1, 3, C2f, [128, True]]
  - [-1, 1, Conv, [256, 3, 2]]
  - [-1, 6, C2f, [256, True]]
  - [-1, 1, Conv, [512, 3, 2]]
  - [-1, 6, C2f, [512, True]]
  - [-1, 1, Conv, [1024, 3, 2]]
  - [-1, 3, C2f, [1024, True]]
  - [-1, 1, SPPF, [1024, 5]]
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 6], 1, Concat, [1]]
  - [-1, 3, C2f, [512]]
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 4], 1, Concat, [1]]
  - [-1, 3, C2f, [256]]
  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 12], 1, Concat, [1]]
  - [-1, 3, C2f, [512]]
  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 9], 1, Concat, [1]]
  - [-1, 3, C2f, [1024]]
  - [[15, 18, 21], 1, Detect, [nc]]
"""

# ============================================================================================== data


def degrade(img: np.ndarray, rng: np.random.Generator, p_blur: float = 0.6, p_noise: float = 0.5) -> np.ndarray:
    """Light Gaussian blur (sigma up to 1.2 px) and noise (std up to 6), each with its probability."""
    x = img.astype(np.float32)
    if rng.random() < p_blur:
        s = float(rng.uniform(0.3, 1.2))
        r = int(math.ceil(3 * s))
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
        k /= k.sum()
        x = np.pad(x, ((r, r), (r, r), (0, 0)), mode="edge")
        x = sum(k[i] * x[i:i + img.shape[0]] for i in range(2 * r + 1))
        x = sum(k[i] * x[:, i:i + img.shape[1]] for i in range(2 * r + 1))
    if rng.random() < p_noise:
        x = x + rng.normal(0, rng.uniform(1, 6), x.shape)
    return np.clip(x, 0, 255).round().astype(np.uint8)


def render_objects_with_boxes(truth: dict, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """The renderer's own drawing of an objects scene (``render.objects.draw``, same rng draws, same image)
    plus each object's box ``(cls, x0, y0, x1, y1)`` in pixels: the pixels its drawing changed."""
    cv = R.canvas.Canvas(rng, R.choice(rng, R.BACKGROUNDS))
    cells = rng.permutation(9)[: len(truth["objects"])]
    boxes = []
    for (cls, col), c in zip(truth["objects"], cells):
        i, j = int(c) % 3, int(c) // 3
        x = 11 + 21 * i + rng.uniform(-1, 1)
        y = 11 + 21 * j + rng.uniform(-1, 1)
        before = cv.img.copy()
        R.objects.draw_object(cv, cls, col, x, y, rng)
        ys, xs = np.nonzero((cv.img != before).any(-1))
        boxes.append((cls, int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    return cv.img, boxes


COUNT_PROMPTS = R.COUNT_SPECIAL + R.COUNT_SPECIAL_EXACT


def sample_objects_truth(rng: np.random.Generator) -> dict:
    """An objects scene: half from a counting prompt's Q(scene | prompt), half from the generic captioner."""
    if rng.random() < 0.5:
        return R.special_sampler(COUNT_PROMPTS[int(rng.integers(len(COUNT_PROMPTS)))])(rng)
    return R.generic_scene("objects", rng)[0]


# task prompts whose Q(scene | prompt) is mixed into the CLIP data (more of the rare successes)
CLIP_KINDS = {"cat": 0.22, "rose": 0.22, "narcissus": 0.22, "mountain": 0.22, "hand": 0.04, "person": 0.04,
              "objects": 0.04}
_SPECIAL = {"cat": ["a black cat sitting inside a cardboard box"], "rose": ["photo of one blue rose in a vase"],
            "narcissus": ["narcissus by a quiet spring and its reflection in the water"],
            "mountain": [R.MOUNTAIN_PROMPT, R.HIKER_PROMPT]}


def sample_clip_truth(rng: np.random.Generator) -> dict:
    kind = R.choice(rng, CLIP_KINDS)
    if kind in _SPECIAL and rng.random() < 0.5:
        ps = _SPECIAL[kind]
        return R.special_sampler(ps[int(rng.integers(len(ps)))])(rng)
    if kind == "objects":
        return sample_objects_truth(rng)
    if kind in ("hand", "person"):
        return R.generic_scene(kind, rng)[0]
    return R.GENERIC_PARAMS[kind](rng)


def truth_attrs(truth: dict) -> dict:
    """The attributes the captions talk about, read from the renderer's truth dict."""
    kind = truth["kind"]
    if kind == "cat":
        return {"kind": "cat", "colour": truth["cat_colour"], "relation": truth["relation"]}
    if kind == "rose":
        cols = truth["colours"]
        return {"kind": "rose", "n": truth["n_roses"], "colour": cols[0] if len(set(cols)) == 1 else "mixed",
                "vase": bool(truth["vase"])}
    if kind == "narcissus":
        state = ("mirrored" if truth["reflection_mirrored"] else "shifted" if truth["reflection"]
                 else "no reflection" if truth["water"] else "no water")
        return {"kind": "narcissus", "state": state, "petal": truth["petal_colour"]}
    if kind == "mountain":
        return {"kind": "mountain", "style": truth["style"], "window": bool(truth["window"]),
                "hiker": bool(truth["hiker"])}
    if kind == "objects":
        return {"kind": "objects", **{f"n_{c}": truth["counts"][c] for c in R.COUNT_CLASSES}}
    return {"kind": kind}


REL = {"inside": "inside", "beside": "next to", "behind": "behind", "on": "on top of"}
NARC = {"mirrored": "by the water with its mirrored reflection", "shifted": "by the water with a shifted reflection",
        "no reflection": "by the water with no reflection", "no water": "with no water"}
NUM = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


def caption(attrs: dict, rng: np.random.Generator) -> tuple[str, dict]:
    """A caption written from the truth attributes, in full or naming one attribute, and the constraints
    it states (a sub-dict of attrs: the caption describes every image whose attrs contain it)."""
    kind = attrs["kind"]
    opts: list[tuple[str, list[str]]]
    if kind == "cat":
        c, r = attrs["colour"], REL[attrs["relation"]]
        opts = [(f"a photo of a {c} cat sitting {r} a cardboard box", ["colour", "relation"]),
                (f"a photo of a {c} cat", ["colour"]), (f"a photo of a cat sitting {r} a cardboard box", ["relation"])]
    elif kind == "rose":
        n, c, v = attrs["n"], attrs["colour"], "in a vase" if attrs["vase"] else "with no vase"
        roses = "rose" if n == 1 else "roses"
        opts = [(f"a photo of {NUM[n]} {roses}", ["n"]), (f"a photo of roses {v}", ["vase"])]
        if c == "mixed":
            opts.append((f"a photo of {NUM[n]} {roses} {v}", ["n", "vase"]))
        else:
            opts += [(f"a photo of {NUM[n]} {c} {roses} {v}", ["n", "colour", "vase"]), (f"a photo of {c} roses", ["colour"])]
    elif kind == "narcissus":
        s = NARC[attrs["state"]]
        opts = [(f"a photo of a {attrs['petal']} narcissus flower {s}", ["state", "petal"]),
                (f"a photo of a narcissus flower {s}", ["state"])]
    elif kind == "mountain":
        st = attrs["style"]
        w = "seen through a train window" if attrs["window"] else "with no window"
        opts = [(f"a photo of {st} mountains {w}", ["style", "window"]), (f"a photo of {st} mountains", ["style"]),
                (f"a photo of mountains {w}", ["window"])]
        if attrs["hiker"]:
            opts.append((f"a photo of a hiker watching {st} mountains", ["style", "hiker"]))
    elif kind == "objects":
        opts = [(f"a photo of {NUM[attrs[f'n_{c}']]} {R.PLURAL[c] if attrs[f'n_{c}'] != 1 else c}", [f"n_{c}"])
                for c in R.COUNT_CLASSES if attrs[f"n_{c}"] > 0]
    else:
        opts = [(f"a photo of a {kind}", [])]
    text, keys = opts[int(rng.integers(len(opts)))]
    return text, _sub(attrs, keys)


def _sub(attrs: dict, keys) -> dict:
    return {"kind": attrs["kind"], **{k: attrs[k] for k in keys}}


def compatible(attrs: dict, constraints: dict) -> bool:
    return all(attrs.get(k) == v for k, v in constraints.items())


# ============================================================================================== CLIP


def _write_clip_folder(out: Path) -> None:
    """open_clip ``local-dir`` folder: open_clip_config.json and the shipped GlyphWorld tokenizer."""
    from herobench.paths import glyphworld_model_dir

    out.mkdir(parents=True, exist_ok=True)
    (out / "open_clip_config.json").write_text(json.dumps(CLIP_CONFIG, indent=2) + "\n")
    for f in sorted((glyphworld_model_dir() / "tokenizer").iterdir()):
        shutil.copy2(f, out / f.name)


def _clip_training_set(n_images: int, rng: np.random.Generator) -> tuple[torch.Tensor, list[dict]]:
    """``n_images`` degraded renders of the CLIP judge's scenes (uint8 ``N×3×64×64``) and their attrs."""
    imgs, attrs = [], []
    for _ in range(n_images):
        truth = sample_clip_truth(rng)
        img = R.draw(truth, rng)
        imgs.append(degrade(img, rng))
        attrs.append(truth_attrs(truth))
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous(), attrs


def _clip_batch_loss(model, tokenizer, data: torch.Tensor, attrs: list[dict], idx: torch.Tensor,
                     flip: torch.Tensor, rng: np.random.Generator, mean: torch.Tensor,
                     std: torch.Tensor) -> torch.Tensor:
    """The symmetric contrastive loss of the batch ``idx`` (images mirrored where ``flip``), one caption per
    image drawn with ``rng``; every caption compatible with an image's attrs is a positive for it."""
    x = data[idx].float() / 255.0
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    caps = [caption(attrs[int(i)], rng) for i in idx]
    texts = [c[0] for c in caps]
    pos = torch.tensor([[compatible(attrs[int(i)], c[1]) for c in caps] for i in idx], dtype=torch.float32)
    img_f, txt_f, scale = model((x - mean) / std, tokenizer(texts))[:3]  # unit-norm; scale = exp(logit_scale)
    logits = scale * img_f @ txt_f.T
    return 0.5 * (-(pos / pos.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
                  - (pos.T / pos.T.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean())


def train_clip(out: Path, seed: int = 0, n_images: int = 24000, steps: int = 1000, batch: int = 128,
               lr: float = 1e-3, log=print) -> dict:
    """Train glyphworld-clip from scratch; writes the local-dir folder ``out``. Returns training stats."""
    import open_clip
    from safetensors.torch import save_file

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data, attrs = _clip_training_set(n_images, rng)
    log(f"clip: rendered {n_images} images in {time.perf_counter() - t0:.0f}s")

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _write_clip_folder(tmp)
    name = f"local-dir:{tmp}"
    model = open_clip.create_model(name, device="cpu")
    tokenizer = open_clip.get_tokenizer(name)
    mean = torch.tensor(CLIP_CONFIG["preprocess_cfg"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_CONFIG["preprocess_cfg"]["std"]).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    g = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for step in range(steps):
        idx = torch.randint(0, n_images, (batch,), generator=g)
        flip = torch.rand(batch, generator=g) < 0.5
        loss = _clip_batch_loss(model, tokenizer, data, attrs, idx, flip, rng, mean, std)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        if step % 200 == 0 or step == steps - 1:
            log(f"clip: step {step} loss {np.mean(losses[-200:]):.3f} scale {float(model.logit_scale.exp()):.1f} "
                f"({time.perf_counter() - t0:.0f}s)")
    model.eval()
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / CLIP_FILE))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    n_params = sum(p.numel() for p in model.parameters())
    return {"seconds": round(time.perf_counter() - t0, 1), "params": n_params, "n_images": n_images,
            "steps": steps, "batch": batch, "lr": lr, "final_loss": round(float(np.mean(losses[-100:])), 4),
            "seed": seed}


# ============================================================================================== YOLO


def write_yolo_dataset(root: Path, n_train: int, n_val: int, seed: int, p_other: float = 0.05) -> Path:
    """Counting scenes (and a few scenes of other kinds, no boxes) as a YOLO-format dataset; returns
    the dataset yaml."""
    from PIL import Image

    rng = np.random.default_rng(seed + 1)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            if rng.random() < p_other:
                kind = R.choice(rng, [k for k in R.KINDS if k != "objects"])
                img, boxes = R.draw(R.generic_scene(kind, rng)[0], rng), []
            else:
                img, boxes = render_objects_with_boxes(sample_objects_truth(rng), rng)
            Image.fromarray(degrade(img, rng)).save(root / "images" / split / f"{i:06d}.png")
            s = float(R.IMAGE_SIZE)
            lines = [f"{R.COUNT_CLASSES.index(c)} {(x0 + x1) / 2 / s:.6f} {(y0 + y1) / 2 / s:.6f} "
                     f"{(x1 - x0) / s:.6f} {(y1 - y0) / s:.6f}" for c, x0, y0, x1, y1 in boxes]
            (root / "labels" / split / f"{i:06d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    yaml = root / "data.yaml"
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return yaml


def train_yolo(out_file: Path, seed: int = 0, n_train: int = 8000, n_val: int = 300, epochs: int = 10,
               batch: int = 32, work: Path | None = None, log=print) -> dict:
    """Train glyphworld-yolo from ``YOLO_YAML`` (no pretrained weights) and save the stripped fp16
    checkpoint to ``out_file``. Everything else goes to ``work`` (a temporary folder by default)."""
    import tempfile

    t0 = time.perf_counter()
    tmp = Path(work) if work is not None else Path(tempfile.mkdtemp(prefix="glyphworld-yolo-"))
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp / "config"))
    import ultralytics
    import ultralytics.data.utils as du
    import ultralytics.utils.torch_utils as tu

    du.check_font = lambda *a, **k: None  # plotting font: would be fetched from the network; no plots here
    tu.NUM_THREADS = 1  # select_device() resets torch's threads to this on CPU
    yaml = write_yolo_dataset(tmp / "data", n_train, n_val, seed)
    log(f"yolo: wrote {n_train}+{n_val} images in {time.perf_counter() - t0:.0f}s")
    (tmp / "glyphworld-yolo.yaml").write_text(YOLO_YAML)
    model = ultralytics.YOLO(str(tmp / "glyphworld-yolo.yaml"), task="detect")
    model.train(data=str(yaml), epochs=epochs, imgsz=R.IMAGE_SIZE, batch=batch, workers=0, device="cpu",
                seed=seed, deterministic=True, pretrained=False, amp=False, plots=False, val=False,
                project=str(tmp / "runs"), name="train", exist_ok=True, verbose=False, cache=False,
                mosaic=0.0, scale=0.1, translate=0.05, degrees=0.0, hsv_h=0.01, hsv_s=0.3, hsv_v=0.2,
                fliplr=0.5, close_mosaic=0, warmup_epochs=1.0, patience=0)
    best = tmp / "runs" / "train" / "weights" / "last.pt"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    slim = {"model": ckpt["model"].half() if ckpt.get("model") is not None else ckpt["ema"].half(),
            "train_args": ckpt.get("train_args", {}), "date": None, "version": ckpt.get("version")}
    for p in slim["model"].parameters():
        p.requires_grad = False
    torch.save(slim, out_file)
    n_params = sum(p.numel() for p in slim["model"].parameters())
    if work is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"seconds": round(time.perf_counter() - t0, 1), "params": n_params, "n_train": n_train,
            "epochs": epochs, "batch": batch, "seed": seed}


# ============================================================================================ both


def train_judges(out: Path = JUDGES_DIR, seed: int = 0, which: tuple[str, ...] = ("clip", "yolo"),
                 clip_steps: int | None = None, yolo_epochs: int | None = None, log=print) -> dict:
    """Train the judges named in ``which`` into ``out`` and record their stats in ``out/training.json``."""
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    rec_path = out / "training.json"
    record = json.loads(rec_path.read_text()) if rec_path.is_file() else {}
    env = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if "clip" in which:
        kw = {} if clip_steps is None else {"steps": clip_steps}
        record["glyphworld-clip"] = {**train_clip(out / CLIP_DIR_NAME, seed, log=log, **kw), **env}
    if "yolo" in which:
        kw = {} if yolo_epochs is None else {"epochs": yolo_epochs}
        stats = train_yolo(out / YOLO_FILE, seed, log=log, **kw)
        import ultralytics

        record["glyphworld-yolo"] = {**stats, **env, "ultralytics": ultralytics.__version__}
    rec_path.write_text(json.dumps(record, indent=2) + "\n")
    return record
