"""Recorded labels as an oracle: a label log replayed exactly, with a small nearest-neighbour fallback.

Built from a run's ``labels.jsonl`` (the feedback ledger; its format is ``herobench.ledgerfile``), e.g. one a person
labelled on the web page (``herobench run --rater human``). Options (``oracle_options`` in the run
settings, or ``herobench run --rater replay:LABELS.jsonl``):

* ``labels``: path of the label log (required);
* ``images``: folder of the labelled images as ``<sha256>.png`` (default ``<log folder>/human/images``,
  where ``HumanRater`` keeps them); only the fallback needs them;
* ``k`` (7) and ``min_labels`` (16): the fallback's neighbours and the least data it answers from.

**Exact replay.** An image is looked up by its content hash (``herobench.core.images.sha256_of_image``)
and prompt; a hit returns the recorded good/bad. Scores are not the log's oracle scores but are rebuilt
from the recorded *best picks* so that the simulated rater's HERO rule (the best is the highest-scoring
good image, taken only when it beats the previous best) picks exactly the recorded stars: the j-th of S
starred images scores ``(j + 1) / (S + 1)``, every other recorded image 0. A run repeated with the same
seed, model and code then samples the same images, gets the same labels and best picks, and ends with the
same weights and curve. (A log whose very first good batch has no star cannot be replayed that way: the
HERO rule always picks a first best. Both herobench raters always give one.)

**Unseen images** are answered by distance-weighted k nearest neighbours on 16×16 RGB thumbnails of the
recorded images (those of the same prompt when it has enough of them, else all), and the verdict says so:
``attrs = {"source": "recorded" | "nearest-neighbours", "confidence": …, "coverage": …}`` where
coverage is the fraction of the judged batch found in the log and confidence the weighted vote's margin
(1 for a recorded label). With fewer than ``min_labels`` pictured labels, or only one class, the oracle
refuses an unseen image with a :class:`~herobench.errors.HerobenchError` instead of guessing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from herobench.config import from_dict
from herobench.core.images import sha256_of_image, to_pil
from herobench.errors import ConfigError, HerobenchError
from herobench.ledgerfile import parse
from herobench.types import Verdict

log = logging.getLogger(__name__)

FEATURE_SIDE = 16


@dataclass(frozen=True)
class RecordedLabelsOptions:
    labels: str = ""
    images: str = ""
    k: int = 7
    min_labels: int = 16


@dataclass(frozen=True)
class _Record:
    good: bool
    score: float
    iteration: int


def features(pil_images: list) -> np.ndarray:
    """``N×(16·16·3)`` float32 in ``[0, 1]``: box-downsampled RGB pixels (a deliberately simple embedding)."""
    from PIL import Image

    out = [np.asarray(im.convert("RGB").resize((FEATURE_SIDE, FEATURE_SIDE), Image.Resampling.BOX),
                      dtype=np.float32).reshape(-1) / 255.0 for im in pil_images]
    return np.stack(out) if out else np.zeros((0, FEATURE_SIDE * FEATURE_SIDE * 3), np.float32)


def load_records(path: Path) -> dict[tuple[str, str], _Record]:
    """``(image_sha256, prompt) -> record`` of every committed label, with replay scores (module docstring)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise HerobenchError(f"recorded-labels: label log {path} does not exist") from None
    iterations = parse(path, data).iterations  # the ledger's own reader: same validation, read-only
    stars = [(it, rec.best) for it, rec in sorted(iterations.items()) if rec.best is not None]
    level = {key: (j + 1) / (len(stars) + 1) for j, key in enumerate(stars)}
    records: dict[tuple[str, str], _Record] = {}
    for it, rec in sorted(iterations.items()):
        for i, e in enumerate(rec.entries):
            key = (str(e["image_sha256"]), str(e["prompt"]))
            new = _Record(bool(e["good"]), level.get((it, i), 0.0), it)
            old = records.get(key)
            if old is not None and old.good != new.good:
                log.warning("%s: image %s was labelled twice with different labels; replaying the last",
                            path, key[0][:12])
            records[key] = new if old is None else _Record(new.good, max(old.score, new.score), it)
    if not records:
        raise HerobenchError(f"recorded-labels: {path} holds no committed labels")
    return records


class RecordedLabelsOracle:
    """See the module docstring. ``judge(images B×3×H×W in [0, 1], prompts) -> B verdicts``."""

    name = "recorded-labels"

    def __init__(self, labels: str | Path, images: str | Path | None = None, k: int = 7, min_labels: int = 16):
        if k < 1 or min_labels < 2:
            raise ConfigError(f"recorded-labels: k must be >= 1 and min_labels >= 2 (got {k}, {min_labels})")
        self.path = Path(labels)
        self.records = load_records(self.path)
        self.version = "1+" + hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        self.images_dir = Path(images) if images else self.path.parent / "human" / "images"
        self.k, self.min_labels = int(k), int(min_labels)
        pictured = [(key, r) for key, r in self.records.items() if (self.images_dir / f"{key[0]}.png").is_file()]
        self._prompts = [key[1] for key, _ in pictured]
        self._good = np.array([r.good for _, r in pictured], dtype=bool)
        self._score = np.array([r.score for _, r in pictured], dtype=np.float64)
        self._feats = features([_open(self.images_dir / f"{key[0]}.png") for key, _ in pictured])

    @classmethod
    def from_options(cls, options: dict) -> RecordedLabelsOracle:
        opts = from_dict(RecordedLabelsOptions, options, "oracle_options")
        if not opts.labels:
            raise ConfigError("oracle 'recorded-labels' needs oracle_options.labels = the path of a labels.jsonl "
                              "(or run with --rater replay:LABELS.jsonl)")
        return cls(opts.labels, opts.images or None, opts.k, opts.min_labels)

    def judge(self, images: torch.Tensor, prompts: list[str]) -> list[Verdict]:
        hashes = [sha256_of_image(img) for img in images]
        hits = [self.records.get((h, p)) for h, p in zip(hashes, prompts)]
        coverage = sum(r is not None for r in hits) / max(1, len(hits))
        missing = [i for i, r in enumerate(hits) if r is None]
        feats = features(to_pil(images[missing])) if missing else None
        out = []
        for i, (r, h, p) in enumerate(zip(hits, hashes, prompts)):
            if r is not None:
                out.append(Verdict(
                    success=r.good, score=r.score,
                    reason=f"recorded label: {'good' if r.good else 'bad'} (iteration {r.iteration})",
                    attrs={"source": "recorded", "confidence": 1.0, "coverage": coverage,
                           "iteration": r.iteration}))
            else:
                out.append(self._neighbours(feats[missing.index(i)], h, p, coverage))
        return out

    def _neighbours(self, feat: np.ndarray, sha: str, prompt: str, coverage: float) -> Verdict:
        same = np.array([q == prompt for q in self._prompts], dtype=bool)
        pool, where = (same, "same prompt") if _enough(self._good[same], self.min_labels) else \
            (np.ones(len(self._prompts), dtype=bool), "all prompts")
        good = self._good[pool]
        if not _enough(good, self.min_labels):
            raise HerobenchError(
                f"recorded-labels: image {sha[:12]} (prompt '{prompt}') is not in {self.path}, and the "
                f"nearest-neighbour fallback needs at least {self.min_labels} labelled pictures of both "
                f"classes in {self.images_dir}; it has {len(good)} ({int(good.sum())} good, "
                f"{int((~good).sum())} bad). Replay the same run (same seed, model and code) or record more labels."
            )
        d = np.sqrt(((self._feats[pool] - feat) ** 2).mean(axis=1))  # RMS pixel distance in [0, 1]
        k = min(self.k, len(d))
        nn = np.argsort(d, kind="stable")[:k]
        w = 1.0 / (d[nn] + 1e-3)
        p_good = float((w * good[nn]).sum() / w.sum())
        score = float((w * self._score[pool][nn]).sum() / w.sum())
        success = p_good > 0.5
        return Verdict(
            success=success, score=score,
            reason=f"not recorded; {k} nearest recorded images ({where}) vote good with weight {p_good:.2f}",
            attrs={"source": "nearest-neighbours", "confidence": max(p_good, 1.0 - p_good), "coverage": coverage,
                   "p_good": p_good, "k": k, "nearest_distance": float(d[nn[0]]), "neighbours_from": where},
        )


def _enough(good: np.ndarray, min_labels: int) -> bool:
    return len(good) >= min_labels and bool(good.any()) and bool((~good).any())


def _open(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")
