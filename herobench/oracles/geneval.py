"""``geneval-count`` / ``geneval-count-colour``: an object detector with GenEval's rules, plus CLIP colour.

After GenEval (Ghosh et al. 2023, ``evaluation/evaluate_images.py``), with these changes:

* the detector is an ultralytics instance-segmentation model (``yolov8x-seg``; GenEval: Mask2Former);
* detections count when their confidence is above 0.9 for a counted object ("one", "two", … in the
  prompt, exact count required: at least N and fewer than N + 1) and above 0.3 otherwise ("a vase": at
  least one); at most 16 per class. GenEval picks the threshold per prompt tag; a prompt here can mix
  both kinds ("one blue rose in a vase"), so it is picked per object;
* colour: CLIP zero-shot over GenEval's ten colours on each counted object's crop with the background
  (outside the instance mask) greyed, with GenEval's three templates averaged;
* **open vocabulary**: a class the detector does not know (COCO has no "rose") is found by CLIP on region
  proposals -- a grid of half-overlapping windows at 1/1, 1/2 and 1/3 of the image side plus every
  detector box of any class -- each crop scored against a few background texts; crops whose target share
  is >= ``open_vocab_threshold`` are kept, smallest first, dropping any that overlaps a kept one by more
  than half of the smaller box. This is coarser than a real open-vocabulary detector (YOLO-World needs a
  CLIP text model fetched at run time, so it cannot be built offline); treat its counts as approximate.

The pure rule :func:`rule_geneval` reads only the attrs and the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from herobench.errors import HerobenchError
from herobench.oracles.base import check_batch, graded, load_config, make_verdict, oracle_device, to_uint8
from herobench.oracles.clip_scorer import ClipScorer
from herobench.types import TaskSpec, Verdict

GENEVAL_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
           "eight": 8, "nine": 9, "ten": 10}
# nouns whose COCO class name differs
COCO_NAMES = {"ball": "sports ball", "tv": "tv", "television": "tv", "motorbike": "motorcycle", "sofa": "couch",
              "plant": "potted plant", "glass": "wine glass", "hydrant": "fire hydrant", "people": "person"}
_IRREGULAR = {"people": "person", "mice": "mouse", "knives": "knife", "sheep": "sheep", "skis": "skis",
              "scissors": "scissors", "glasses": "glass", "bus": "bus", "dice": "die"}
_NUM = "|".join(NUMBERS)
_COL = "|".join(GENEVAL_COLOURS)
_PROMPT = re.compile(
    rf"^(?:a )?photo of (?:exactly )?(?P<num>{_NUM}) (?:(?P<col>{_COL}) )?(?P<noun>[a-z]+)"
    rf"(?: (?:in|on|with|next to|beside) (?:a|an) (?P<other>[a-z]+))?$"
)


@dataclass(frozen=True)
class GenevalConfig:
    """``oracles/geneval.toml`` (both geneval oracles). Defaults are GenEval's where it has one."""

    detector: str = "yolov8x-seg"  # weight id in oracles/weights.toml
    clip: str = "clip-vit-l-14-openai"
    threshold: float = 0.3  # GenEval THRESHOLD
    counting_threshold: float = 0.9  # GenEval COUNTING_THRESHOLD
    max_objects: int = 16  # GenEval MAX_OBJECTS
    nms_iou: float = 0.7  # ultralytics' class-wise NMS
    imgsz: int = 640
    colours: tuple[str, ...] = GENEVAL_COLOURS
    colour_templates: tuple[str, ...] = ("a photo of a {c} {obj}", "a photo of a {c}-colored {obj}",
                                         "a photo of a {c} object")
    grey: int = 128  # background value outside the instance mask
    proposal_confidence: float = 0.1  # detector boxes of any class used as open-vocabulary proposals
    grid: tuple[int, ...] = (1, 2, 3)  # proposal windows of 1/k of the image side, half-overlapping
    open_vocab_threshold: float = 0.5
    open_vocab_template: str = "a photo of a {obj}"
    open_vocab_background: tuple[str, ...] = ("a photo of a plain background", "a photo of leaves",
                                              "a photo of a vase", "a photo of a table", "a photo of a wall",
                                              "a photo of an object")


@dataclass(frozen=True)
class Requirement:
    """One object a prompt asks for: ``count`` of ``noun`` (exactly, or at least), optionally coloured."""

    noun: str  # singular, as written ("rose", "ball")
    cls: str  # the detector's class name ("sports ball") or the noun for open vocabulary
    count: int
    exact: bool
    colour: str = ""


# ================================================================================================ prompts


def singular(word: str) -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def plural(noun: str, n: int) -> str:
    if n == 1:
        return noun
    inv = {v: k for k, v in _IRREGULAR.items()}
    if noun in inv:
        return inv[noun]
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + ("es" if noun.endswith(("ch", "sh", "ss", "x")) else "s")


def parse_prompt(prompt: str) -> tuple[Requirement, ...]:
    """``"photo of one blue rose in a vase"`` -> (exactly 1 blue rose, at least 1 vase).

    A number word asks for an exact count (counting threshold); "a"/"an" and the object after
    "in/on/with a" ask for at least one (GenEval's single-object rule).

    Raises:
        ValueError: the prompt does not have that shape.
    """
    m = _PROMPT.match(" ".join(prompt.lower().replace(",", " ").split()))
    if m is None:
        raise ValueError(f"not a GenEval-style prompt ('[a ]photo of <number> [colour] <object>"
                         f"[ in a <object>]'): {prompt!r}")
    num = m.group("num")
    noun = singular(m.group("noun"))
    reqs = [Requirement(noun, COCO_NAMES.get(noun, noun), NUMBERS[num], num not in ("a", "an"),
                        m.group("col") or "")]
    if m.group("other"):
        other = singular(m.group("other"))
        reqs.append(Requirement(other, COCO_NAMES.get(other, other), 1, False))
    return tuple(reqs)


# ================================================================================================= rule


def _describe(req: Requirement) -> str:
    col = f"{req.colour} " if req.colour else ""
    if req.exact:
        return f"exactly {req.count} {col}{plural(req.noun, req.count)}"
    return f"{col}{req.noun} present"


def rule_geneval(attrs: dict, prompt: str, profile: str = "default") -> tuple[bool, str]:
    """GenEval's rule on the detections of each object the prompt asks for (``attrs["objects"][noun]``:
    ``count``, and ``colours`` of the counted objects when a colour was asked)."""
    problems = []
    for req in parse_prompt(prompt):
        obj = attrs["objects"][req.noun]
        n = obj["count"]
        if req.exact and n != req.count:
            problems.append(f"{n} {plural(req.noun, n)} (wanted exactly {req.count})")
            continue
        if not req.exact and n < req.count:  # "a vase": GenEval's at-least-one
            problems.append(f"no {req.noun}")
            continue
        if req.colour:
            cols = obj["colours"][: req.count]
            k = cols.count(req.colour)
            if k < req.count:
                if req.count == 1:
                    problems.append(f"{req.noun} is {cols[0]} (wanted {req.colour})")
                else:
                    problems.append(f"{k} of {req.count} {plural(req.noun, req.count)} {req.colour} "
                                    f"(colours: {', '.join(cols)})")
    if problems:
        return False, "; ".join(problems)
    return True, "; ".join(_describe(r) for r in parse_prompt(prompt))


def score_geneval(attrs: dict, success: bool, prompt: str) -> float:
    crit = []
    for req in parse_prompt(prompt):
        obj = attrs["objects"][req.noun]
        n = obj["count"]
        crit.append(max(0.0, 1 - abs(n - req.count) / req.count) if req.exact else min(1.0, n / req.count))
        if req.colour:
            crit.append(obj["colours"][: req.count].count(req.colour) / req.count if obj["colours"] else 0.0)
    return graded(crit, success)


# ============================================================================================ perception


@dataclass
class Detection:
    """One detector output in pixel coordinates of the image; ``mask`` is ``H×W`` bool or None."""

    label: str
    confidence: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    mask: np.ndarray | None = None


class UltralyticsDetector:
    """An ultralytics YOLO model as ``images (B×H×W×3 uint8 RGB) -> B lists of Detection``."""

    def __init__(self, model, device: str = "cpu", conf: float = 0.1, iou: float = 0.7, imgsz: int = 640,
                 max_det: int = 300):
        self.model, self.device, self.conf, self.iou, self.imgsz, self.max_det = model, device, conf, iou, imgsz, max_det
        self.classes = frozenset(model.names.values())

    def __call__(self, images: np.ndarray) -> list[list[Detection]]:
        # ultralytics takes numpy images as BGR (OpenCV's order)
        bgr = [np.ascontiguousarray(a[:, :, ::-1]) for a in images]
        results = self.model.predict(bgr, conf=self.conf, iou=self.iou, imgsz=self.imgsz, max_det=self.max_det,
                                     device=self.device, retina_masks=True, verbose=False)
        out = []
        for r in results:
            boxes = r.boxes
            masks = r.masks.data.cpu().numpy() > 0.5 if r.masks is not None else None
            dets = [Detection(r.names[int(c)], float(p), tuple(float(v) for v in b),
                              None if masks is None else masks[j])
                    for j, (b, p, c) in enumerate(zip(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist()))]
            out.append(dets)
        return out


def load_detector(weight_id: str, config: GenevalConfig, device: str, who: str) -> UltralyticsDetector:
    from herobench.oracles.weights import import_extra, resolve

    ultralytics = import_extra("ultralytics", "detect", who)
    model = ultralytics.YOLO(str(resolve(weight_id)))
    conf = min(config.threshold, config.counting_threshold, config.proposal_confidence)
    return UltralyticsDetector(model, device, conf, config.nms_iou, config.imgsz)


def crop(image: torch.Tensor, box, size: int, mask: np.ndarray | None = None, grey: int = 128) -> torch.Tensor:
    """``3×H×W`` in ``[0, 1]`` -> the ``box`` crop (outside ``mask`` greyed), short side resized to
    ``size`` and centre-cropped: ``3×size×size``."""
    h, w = image.shape[-2:]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(w, max(x0 + 1, int(round(box[2])))), min(h, max(y0 + 1, int(round(box[3]))))
    c = image[:, y0:y1, x0:x1]
    if mask is not None:
        m = torch.from_numpy(np.asarray(mask[y0:y1, x0:x1], bool))
        c = torch.where(m, c, torch.full_like(c, grey / 255.0))
    ch, cw = c.shape[-2:]
    s = size / min(ch, cw)
    nh, nw = max(size, round(ch * s)), max(size, round(cw * s))
    c = F.interpolate(c[None], size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    return c[:, top:top + size, left:left + size]


def grid_boxes(h: int, w: int, divisions: tuple[int, ...]) -> list[tuple[float, float, float, float]]:
    """Windows of ``1/k`` of each side for each ``k``, with half-window strides (``(2k-1)²`` per ``k``)."""
    out = []
    for k in divisions:
        bh, bw = h / k, w / k
        n = 2 * k - 1
        for i in range(n):
            for j in range(n):
                out.append((j * bw / 2, i * bh / 2, j * bw / 2 + bw, i * bh / 2 + bh))
    return out


def _area(b) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def suppress_nested(boxes: list, scores: list[float], overlap: float = 0.5) -> list[int]:
    """Indices kept, smallest box first: a box overlapping a kept one by more than ``overlap`` of the
    smaller box's area is dropped (so a window holding two roses loses to the two single-rose windows)."""
    order = sorted(range(len(boxes)), key=lambda i: (_area(boxes[i]), -scores[i]))
    kept: list[int] = []
    for i in order:
        b = boxes[i]
        ok = True
        for j in kept:
            k = boxes[j]
            inter = _area((max(b[0], k[0]), max(b[1], k[1]), min(b[2], k[2]), min(b[3], k[3])))
            if inter > overlap * min(_area(b), _area(k)):
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


class GenevalOracle:
    """Detector + GenEval rules (+ CLIP colour and open vocabulary); implements ``herobench.types.Oracle``.

    Args:
        detector: ``images B×H×W×3 uint8 -> B lists of Detection`` with a ``classes`` set of known names.
        clip: a :class:`ClipScorer`, needed when a prompt names a colour or a class the detector lacks.
        config: thresholds and texts. name: the registry name this instance serves.
    """

    version = "1"

    def __init__(self, detector, clip: ClipScorer | None, config: GenevalConfig = GenevalConfig(),
                 name: str = "geneval-count-colour", profile: str = "default"):
        self.detector, self.clip, self.config, self.name, self.profile = detector, clip, config, name, profile

    def _open_vocab(self, image: torch.Tensor, req: Requirement, dets: list[Detection]) -> list[tuple]:
        c, clip = self.config, self.clip
        h, w = image.shape[-2:]
        boxes = grid_boxes(h, w, c.grid) + [d.box for d in dets if d.confidence >= c.proposal_confidence]
        crops = torch.stack([crop(image, b, clip.image_size) for b in boxes])
        texts = [c.open_vocab_template.format(obj=req.noun), *c.open_vocab_background]
        p = clip.probs(clip.image_features(crops), clip.text_features(texts))[:, 0].tolist()
        hits = [i for i, s in enumerate(p) if s >= c.open_vocab_threshold]
        kept = suppress_nested([boxes[i] for i in hits], [p[i] for i in hits])
        found = sorted(((p[hits[k]], boxes[hits[k]]) for k in kept), key=lambda t: -t[0])
        return [Detection(req.noun, s, b, None) for s, b in found[: c.max_objects]]

    def _colours(self, image: torch.Tensor, noun: str, found: list[Detection]) -> list[str]:
        c, clip = self.config, self.clip
        crops = torch.stack([crop(image, d.box, clip.image_size, d.mask, c.grey) for d in found])
        cls = clip.class_features(list(c.colours), c.colour_templates, obj=noun)
        p = clip.probs(clip.image_features(crops), cls)
        return [c.colours[int(i)] for i in p.argmax(dim=1)]

    def perceive(self, image: torch.Tensor, prompt: str, dets: list[Detection]) -> dict:
        """One ``3×H×W`` image, its prompt and detections -> attrs (``objects[noun]``: count, colours,
        confidences, boxes, source, threshold)."""
        objects = {}
        for req in parse_prompt(prompt):
            if req.cls in self.detector.classes:
                thr = self.config.counting_threshold if req.exact else self.config.threshold
                found = sorted((d for d in dets if d.label == req.cls and d.confidence > thr),
                               key=lambda d: -d.confidence)[: self.config.max_objects]
                source = "detector"
            else:
                if self.clip is None:
                    raise HerobenchError(f"oracle '{self.name}': '{req.noun}' is not a detector class and no CLIP "
                                         "model is loaded for the open-vocabulary path")
                thr, found, source = self.config.open_vocab_threshold, self._open_vocab(image, req, dets), "clip-proposals"
            colours = None
            if req.colour and found:
                colours = self._colours(image, req.noun, found[: req.count])
            objects[req.noun] = {"count": len(found), "colours": colours, "source": source, "threshold": thr,
                                 "confidences": [round(d.confidence, 4) for d in found],
                                 "boxes": [[round(v, 1) for v in d.box] for d in found]}
        return {"readable": True, "objects": objects}

    def judge(self, images: torch.Tensor, prompts: list[str]) -> list[Verdict]:
        check_batch(images, prompts)
        x = images.detach().to("cpu", torch.float32).clamp(0, 1)
        all_dets = self.detector(to_uint8(x))
        out = []
        for img, p, dets in zip(x, prompts, all_dets):
            attrs = self.perceive(img, p, dets)
            out.append(make_verdict(attrs, rule_geneval, lambda a, ok, p=p: score_geneval(a, ok, p), p, self.profile))
        return out


def _factory(name: str, config_name: str = "geneval") -> Callable[[TaskSpec, str], GenevalOracle]:
    def make(task: TaskSpec, profile: str = "default") -> GenevalOracle:
        from herobench.oracles.clip_scorer import load_clip

        prompts = dict.fromkeys([*task.train_prompts, *task.eval_prompts])
        for p in prompts:
            try:
                parse_prompt(p)
            except ValueError as e:
                raise HerobenchError(f"oracle '{name}' cannot judge task '{task.name}': {e}") from None
        config = load_config(GenevalConfig, config_name)
        device = oracle_device()
        detector = load_detector(config.detector, config, device, f"oracle '{name}'")
        needs_clip = any(r.colour or r.cls not in detector.classes for p in prompts for r in parse_prompt(p))
        clip = load_clip(config.clip, device, who=f"oracle '{name}'") if needs_clip else None
        return GenevalOracle(detector, clip, config, name, profile)

    return make


make_geneval_count = _factory("geneval-count")
make_geneval_count_colour = _factory("geneval-count-colour")
# the same rule with the GlyphWorld-trained detector and oracles/glyphworld-yolo.toml
make_glyphworld_yolo = _factory("glyphworld-yolo", "glyphworld-yolo")
