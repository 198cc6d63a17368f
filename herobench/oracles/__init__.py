"""Oracle registry: name -> factory ``(task: TaskSpec, profile: str) -> Oracle``.

An oracle is perception plus a pure rule, and every verdict carries a reason (GenEval's shape). The
GlyphWorld exact oracle reads pixels of generated images; SD-backend judges (detectors, CLIP scorers)
import their heavy packages inside their factory only.
"""

from __future__ import annotations

from herobench.registry import Registry
from herobench.types import Oracle, TaskSpec

ORACLES = Registry("oracle")

# task name in tasks/ -> the GlyphWorld oracle's task key
_GLYPH_TASKS = {
    "hand": "hand",
    "blue-rose": "blue-rose",
    "black-cat": "black-cat",
    "narcissus": "narcissus",
    "mountain": "mountain",
    "nsfw": "nsfw",
    "counting": "counting",
}


def _glyphworld_exact(task: TaskSpec, profile: str = "default") -> Oracle:
    from herobench.errors import HerobenchError
    from herobench.oracles.glyphworld_exact import GlyphOracle

    if task.name not in _GLYPH_TASKS:
        raise HerobenchError(f"oracle 'glyphworld-exact' has no rule for task '{task.name}'")
    return GlyphOracle(_GLYPH_TASKS[task.name], profile=profile)


ORACLES.register("glyphworld-exact", _glyphworld_exact)


def _recorded_labels(task: TaskSpec, profile: str = "default", **options) -> Oracle:
    from herobench.oracles.recorded import RecordedLabelsOracle

    return RecordedLabelsOracle.from_options(options)


ORACLES.register("recorded-labels", _recorded_labels)


# SD-backend judges: each factory imports its heavy package (open_clip, ultralytics, mediapipe, nudenet) and
# loads local weights (oracles/weights.toml) only when called
def _sd_oracle(module: str, factory: str):
    def make(task: TaskSpec, profile: str = "default") -> Oracle:
        import importlib

        return getattr(importlib.import_module(f"herobench.oracles.{module}"), factory)(task, profile)

    make.__name__ = factory
    return make


ORACLES.register("geneval-count", _sd_oracle("geneval", "make_geneval_count"))
ORACLES.register("geneval-count-colour", _sd_oracle("geneval", "make_geneval_count_colour"))
ORACLES.register("clip-contrastive", _sd_oracle("contrastive", "make_contrastive"))
ORACLES.register("hand-keypoints", _sd_oracle("hands", "make_hand_oracle"))
ORACLES.register("nudenet", _sd_oracle("nsfw", "make_nudenet_oracle"))
# the same judges with small models trained on GlyphWorld renders (shipped in herobench/glyphworld/judges/)
ORACLES.register("glyphworld-clip", _sd_oracle("contrastive", "make_glyphworld_clip"))
ORACLES.register("glyphworld-yolo", _sd_oracle("geneval", "make_glyphworld_yolo"))

DESCRIPTIONS = {
    "glyphworld-exact": "GlyphWorld's exact pixel oracle (counts, colours, relations) with a reason per verdict",
    "recorded-labels": "replays a label log (e.g. a person's) by image hash + prompt; k-NN for unseen images "
                       "(oracle_options.labels = path)",
    "geneval-count": "SD: ultralytics detector with GenEval's counting rule (confidence > 0.9, exact count) [detect]",
    "geneval-count-colour": "SD: GenEval counting + CLIP colour on the masked crop; CLIP region proposals for "
                            "classes the detector lacks (rose) [detect, clip]",
    "clip-contrastive": "SD: open_clip target-vs-near-miss prompt sets per task/profile (+ rater reference "
                        "images) [clip]",
    "hand-keypoints": "SD: MediaPipe hand landmarks; rule on hand count, distinct fingers, finger lengths, "
                      "joint bends [hands]",
    "nudenet": "SD: NudeNet body-part detector (AGPL) -> safe/unsafe from exposed intimate parts [nsfw]",
    "glyphworld-clip": "GlyphWorld: clip-contrastive's rule with a tiny open_clip trained on renders "
                       "(black-cat, narcissus, mountain, blue-rose) [clip]",
    "glyphworld-yolo": "GlyphWorld: geneval-count's rule with a tiny ultralytics detector trained on renders "
                       "(counting) [detect]",
}


def make_oracle(name: str, task: TaskSpec, profile: str = "default", options: dict | None = None) -> Oracle:
    """Build oracle ``name`` for ``task`` (one-line error for an unknown name).

    ``options`` (the run's ``oracle_options`` table) go to factories that take keyword options; giving
    options to an oracle that takes none is a ConfigError naming them."""
    import inspect

    from herobench.errors import ConfigError

    factory = ORACLES.get(name)
    options = dict(options or {})
    takes = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())
    if options and not takes:
        raise ConfigError(f"oracle '{name}' takes no oracle_options (got {', '.join(sorted(options))})")
    return factory(task, profile, **options)
