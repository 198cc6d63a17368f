"""docs/ARCHITECTURE.md's tree names every module under herobench/ in its folder (so that it cannot drift)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def documented_modules(text: str) -> set[str]:
    """``folder/name.py`` paths of the tree in the first code block (folders by indentation)."""
    block = text.split("```")[1]
    stack: list[tuple[int, str]] = []
    found = set()
    for line in block.splitlines():
        m = re.match(r"^(\s*)(\S+)", line)
        if not m:
            continue
        indent, name = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if name.endswith("/"):
            stack.append((indent, name))
        elif name.endswith(".py"):
            found.add("".join(n for _, n in stack) + name)
    return found


def test_every_module_is_named_in_architecture_md():
    documented = documented_modules((ROOT / "docs" / "ARCHITECTURE.md").read_text())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "herobench").rglob("*.py")
               if p.name != "__init__.py" or p.parent.name == "herobench"}
    assert not modules - documented, f"modules missing from docs/ARCHITECTURE.md: {sorted(modules - documented)}"
    assert not documented - modules, f"docs/ARCHITECTURE.md names modules that do not exist: {documented - modules}"
