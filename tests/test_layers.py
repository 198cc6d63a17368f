"""No import runs up a layer (docs/ARCHITECTURE.md, "Layers").

Every herobench module belongs to a layer; an import (at module level or inside a function, both parsed with
``ast``) may only reach the layers its own layer is allowed to use. A top-level module that is not placed in
a layer below fails too, so a new one is placed on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "herobench"

# top-level modules the whole tree stands on (contracts, files, settings); "herobench" is the package's
# __init__ (its version)
FOUNDATION = {"herobench", "types", "errors", "paths", "config", "registry", "tasks", "modelcard", "ledgerfile",
              "stats", "openmp"}
# the entry points, above everything: the CLI, `herobench ls`, the CI regression
ENTRY = {"cli", "catalog", "regression"}
SUBPACKAGES = {"core", "methods", "glyphworld", "oracles", "harness"}

ALLOWED = {
    "foundation": {"foundation"},
    "core": {"foundation", "core"},  # generation and learning, shared by every method
    "methods": {"foundation", "core", "methods"},  # methods only learn
    # the world and the judges: the exact oracle reads the world's palette, calibration judges with it
    "glyphworld": {"foundation", "core", "glyphworld", "oracles"},
    "oracles": {"foundation", "core", "glyphworld", "oracles"},
    "harness": {"foundation", "core", "methods", "glyphworld", "oracles", "harness"},
    "entry": {"foundation", "core", "methods", "glyphworld", "oracles", "harness", "entry"},
}


def layer_of(module: str) -> str:
    """The layer of a dotted herobench module name (``herobench.harness.runner`` -> ``harness``)."""
    parts = module.split(".")
    first = parts[1] if len(parts) > 1 else "herobench"
    if first in SUBPACKAGES:
        return first
    if first in FOUNDATION:
        return "foundation"
    if first in ENTRY:
        return "entry"
    raise AssertionError(f"{module} is in no layer: add it to FOUNDATION or ENTRY in tests/test_layers.py "
                         "and to docs/ARCHITECTURE.md")


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every herobench module ``source`` imports (relative imports resolved)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return [(line, name) for line, name in out if name == "herobench" or name.startswith("herobench.")]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def violations(path: Path, source: str | None = None) -> list[str]:
    """The imports of the file at ``path`` that run up a layer, one line each."""
    module = module_name(path)
    own = layer_of(module)
    text = source if source is not None else path.read_text()
    return [f"{path.relative_to(ROOT)}:{line} ({own}) imports {name} ({layer_of(name)})"
            for line, name in imported_modules(text, module, path.name == "__init__.py")
            if layer_of(name) not in ALLOWED[own]]


def test_no_import_runs_up_a_layer():
    found = [v for path in sorted(PACKAGE.rglob("*.py")) for v in violations(path)]
    assert not found, "imports up a layer:\n" + "\n".join(found)


def test_the_check_sees_imports_and_catches_one_up_a_layer():
    # the real tree's known downward edges are seen (an empty import graph would pass the test above) ...
    build = PACKAGE / "harness" / "run_build.py"
    names = {name for _, name in imported_modules(build.read_text(), module_name(build), False)}
    assert {"herobench.methods", "herobench.core.generator", "herobench.tasks"} <= names
    # ... and an upward import, even one inside a function or relative, is reported with its line
    ddim = PACKAGE / "core" / "ddim.py"
    source = "import torch\n\ndef f():\n    from herobench.harness.runner import Run\n"
    assert violations(ddim, source) == ["herobench/core/ddim.py:4 (core) imports herobench.harness.runner (harness)"]
    card = PACKAGE / "glyphworld" / "card.py"
    assert violations(card, "from ..harness import runner\n") == [
        "herobench/glyphworld/card.py:1 (glyphworld) imports herobench.harness (harness)"]
    assert violations(card, "from ..core import images\n") == []
