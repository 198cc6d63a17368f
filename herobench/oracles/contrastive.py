"""``clip-contrastive``: CLIP judges a task by contrasting its target descriptions with near misses.

For the reasoning tasks (black-cat, narcissus) and personalization (mountain). Each (task, rater profile)
has a few *criteria* in ``oracles/clip-contrastive.toml``; a criterion is one target text against its near
misses (``"a cat sitting inside a cardboard box"`` vs ``"… next to …"``, ``"… on top of …"``). Perception
gives each criterion the target's share ``p`` of CLIP's softmax over its texts; the rule passes a criterion
when ``p >= threshold``. A criterion with ``when = "window"`` applies only to prompts containing that word
(the mountain task's second eval prompt has no train window).

Personalization: images in ``oracles/<task>/<profile>/`` (PNG/JPEG) are the rater's reference images; when
there are any, the image's mean CLIP cosine to them must also reach ``reference_threshold``. The folders
may be empty (then only the criteria decide): see ``oracles/mountain/README.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from herobench.errors import ConfigError, HerobenchError
from herobench.oracles.base import check_batch, graded, load_config, make_verdict, oracle_device
from herobench.oracles.clip_scorer import ClipScorer
from herobench.types import TaskSpec, Verdict

NAME = "clip-contrastive"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class Criterion:
    """One target text against its near misses; passes when the target's softmax share >= threshold."""

    target: str
    near_misses: tuple[str, ...]
    threshold: float = 0.5
    when: str = ""  # apply only to prompts containing this word ("" = always)

    def __post_init__(self) -> None:
        if not self.near_misses:
            raise ConfigError("near_misses must name at least one text")
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1] (got {self.threshold})")


@dataclass(frozen=True)
class ProfileSpec:
    """The criteria of one (task, rater profile), and the reference-image threshold."""

    criteria: dict[str, Criterion]
    reference_threshold: float = 0.75  # mean CLIP cosine to the rater's reference images (when any)

    def __post_init__(self) -> None:
        if not self.criteria:
            raise ConfigError("criteria must hold at least one criterion")


@dataclass(frozen=True)
class ContrastiveConfig:
    """``oracles/clip-contrastive.toml``: the CLIP weight id and ``tasks.<task>.<profile>`` prompt sets."""

    model: str = "clip-vit-l-14-openai"
    tasks: dict[str, dict[str, ProfileSpec]] = field(default_factory=dict)
    references: bool = True  # load the rater's reference images from oracles/<task>/<profile>/


# ============================================================================================ perception


def perceive_contrastive(scorer: ClipScorer, images: torch.Tensor, spec: ProfileSpec,
                         references: torch.Tensor | None = None) -> list[dict]:
    """``B×3×H×W`` images -> ``B`` attrs: per criterion the target's share ``p_target``, the winning text
    and its share (and the criterion's target, threshold and ``when``, so the rule needs nothing else);
    ``reference_similarity`` is the mean cosine to the ``R×D`` reference features (None without any)."""
    feats = scorer.image_features(images)
    per_crit = {}
    for name, c in spec.criteria.items():
        texts = [c.target, *c.near_misses]
        per_crit[name] = (texts, scorer.probs(feats, scorer.text_features(texts)))
    sims = (feats @ references.T).mean(dim=1) if references is not None and len(references) else None
    out = []
    for i in range(feats.shape[0]):
        crit = {}
        for name, (texts, p) in per_crit.items():
            c = spec.criteria[name]
            w = int(p[i].argmax())
            crit[name] = {"target": c.target, "p_target": round(float(p[i, 0]), 4), "winner": texts[w],
                          "p_winner": round(float(p[i, w]), 4), "threshold": c.threshold, "when": c.when}
        attrs = {"readable": True, "criteria": crit,
                 "reference_similarity": None if sims is None else round(float(sims[i]), 4),
                 "reference_threshold": spec.reference_threshold,
                 "n_references": 0 if references is None else int(len(references))}
        out.append(attrs)
    return out


# ================================================================================================= rule


def _applies(crit: dict, prompt: str) -> bool:
    return not crit["when"] or crit["when"].lower() in re.findall(r"[a-z]+", prompt.lower())


def rule_contrastive(attrs: dict, prompt: str = "", profile: str = "default") -> tuple[bool, str]:
    """Every applicable criterion's target wins its share; with reference images, close enough to them."""
    problems, good = [], []
    for name, c in attrs["criteria"].items():
        if not _applies(c, prompt):
            continue
        if c["p_target"] >= c["threshold"]:
            good.append(f"{name}: '{c['target']}' (p {c['p_target']:.2f})")
        elif c["winner"] != c["target"]:
            problems.append(f"{name}: '{c['winner']}' (p {c['p_winner']:.2f}) over '{c['target']}' "
                            f"(p {c['p_target']:.2f} < {c['threshold']:.2f})")
        else:
            problems.append(f"{name}: '{c['target']}' too uncertain (p {c['p_target']:.2f} < {c['threshold']:.2f})")
    sim = attrs.get("reference_similarity")
    if sim is not None:
        thr = attrs["reference_threshold"]
        text = f"{attrs['n_references']} reference images (cos {sim:.2f}"
        if sim < thr:
            problems.append(f"unlike the rater's {text} < {thr:.2f})")
        else:
            good.append(f"like the rater's {text})")
    if problems:
        return False, "; ".join(problems)
    return True, "; ".join(good) if good else "no criterion applies to this prompt"


def score_contrastive(attrs: dict, success: bool, prompt: str = "") -> float:
    crit = [min(1.0, c["p_target"] / c["threshold"]) for c in attrs["criteria"].values() if _applies(c, prompt)]
    if attrs.get("reference_similarity") is not None:
        crit.append(min(1.0, max(0.0, attrs["reference_similarity"]) / attrs["reference_threshold"]))
    return graded(crit, success)


# =============================================================================================== oracle


def reference_dir(task: str, profile: str) -> Path:
    from herobench.paths import data_dir

    return data_dir("oracles") / task / profile


def load_reference_images(folder: Path) -> list[torch.Tensor]:
    """Every PNG/JPEG/WebP in ``folder`` (sorted) as a ``1×3×H×W`` tensor in ``[0, 1]``; none if absent."""
    if not folder.is_dir():
        return []
    import numpy as np
    from PIL import Image

    from herobench.core.images import from_uint8

    out = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            try:
                out.append(from_uint8(np.asarray(Image.open(p).convert("RGB"))))
            except OSError as e:
                raise HerobenchError(f"cannot read reference image {p}: {e}") from None
    return out


class ContrastiveOracle:
    """CLIP contrastive judge of one (task, profile); implements ``herobench.types.Oracle``."""

    name = NAME
    version = "1"

    def __init__(self, scorer: ClipScorer, spec: ProfileSpec, profile: str = "default",
                 references: list[torch.Tensor] | None = None, name: str = NAME):
        self.name = name  # the registry name this instance serves (clip-contrastive, glyphworld-clip)
        self.scorer = scorer
        self.spec = spec
        self.profile = profile
        refs = [scorer.image_features(r) for r in (references or [])]
        self.references = torch.cat(refs) if refs else None

    def judge(self, images: torch.Tensor, prompts: list[str]) -> list[Verdict]:
        check_batch(images, prompts)
        attrs = perceive_contrastive(self.scorer, images, self.spec, self.references)
        return [make_verdict(a, rule_contrastive, lambda a, ok, p=p: score_contrastive(a, ok, p), p, self.profile)
                for a, p in zip(attrs, prompts)]


def profile_spec(config: ContrastiveConfig, task: str, profile: str, name: str = NAME) -> ProfileSpec:
    """The prompt set of (task, profile), or a one-line error naming what the config file lacks."""
    if task not in config.tasks:
        raise HerobenchError(f"oracle '{name}' has no prompt set for task '{task}' "
                             f"(oracles/{name}.toml has: {', '.join(sorted(config.tasks)) or 'none'})")
    if profile not in config.tasks[task]:
        raise HerobenchError(f"oracle '{name}' has no prompt set for task '{task}', rater profile '{profile}' "
                             f"(has: {', '.join(sorted(config.tasks[task]))})")
    return config.tasks[task][profile]


def make_contrastive(task: TaskSpec, profile: str = "default", name: str = NAME) -> ContrastiveOracle:
    """The registry factory: config file ``oracles/<name>.toml`` -> prompt set -> local CLIP weights ->
    reference images (unless the config turns them off)."""
    from herobench.oracles.clip_scorer import load_clip

    config = load_config(ContrastiveConfig, name)
    spec = profile_spec(config, task.name, profile, name)
    scorer = load_clip(config.model, oracle_device(), who=f"oracle '{name}'")
    refs = load_reference_images(reference_dir(task.name, profile)) if config.references else []
    return ContrastiveOracle(scorer, spec, profile, refs, name=name)


def make_glyphworld_clip(task: TaskSpec, profile: str = "default") -> ContrastiveOracle:
    """``glyphworld-clip``: the same judge with the GlyphWorld-trained CLIP and ``oracles/glyphworld-clip.toml``."""
    return make_contrastive(task, profile, "glyphworld-clip")
