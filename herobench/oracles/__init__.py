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
    from herobench.glyphworld.oracles import GlyphOracle

    if task.name not in _GLYPH_TASKS:
        raise HerobenchError(f"oracle 'glyphworld-exact' has no rule for task '{task.name}'")
    return GlyphOracle(_GLYPH_TASKS[task.name], profile=profile)


ORACLES.register("glyphworld-exact", _glyphworld_exact)

DESCRIPTIONS = {
    "glyphworld-exact": "GlyphWorld's exact pixel oracle (counts, colours, relations) with a reason per verdict",
}


def make_oracle(name: str, task: TaskSpec, profile: str = "default") -> Oracle:
    """Build oracle ``name`` for ``task`` (one-line error for an unknown name)."""
    return ORACLES.get(name)(task, profile)
