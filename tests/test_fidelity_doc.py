"""docs/FIDELITY.md's herobench references point at real code and real tests (so that they cannot drift).

The page cites herobench code as backticked ``path.py:N``, ``path.py:N-M`` or ``path.py:N, M-K`` (a path under
``herobench/`` or the repository root, or a module's unique file name such as ``grpo.py``), and continues a cell
with ``:N`` (the cell's last herobench file, else the section's method file). Tests are cited as
``test_x.py::test_name``, ``::test_name`` (the cell's last test file), ``p::``/``nft::``/``kto::`` (the page's
abbreviations) or, in the GRPO and reward-model tables, a bare ``test_name``; a trailing ``…`` is a prefix and
``[param]`` a parametrisation.

Only herobench's side is checked: the herobench column of each table (and the reward-model table's "reference"
column, which cites HERO's herobench code), and anywhere on the page a path that starts with a herobench folder
(``herobench/``, ``tests/``, ``core/``, ``methods/``, ``harness/``, ``glyphworld/``, ``oracles/``). Official
references (``hero:``, ``ddpo:``, ``train:``, ``cfg:`` ...) point into other repositories and are left alone.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "FIDELITY.md"
PACKAGE = ROOT / "herobench"

HEROBENCH_PREFIXES = ("herobench/", "tests/", "core/", "methods/", "harness/", "glyphworld/", "oracles/")
TEST_ABBREVIATIONS = {
    "p": "tests/test_d3po_protocol.py",
    "nft": "tests/test_methods_nft.py",
    "kto": "tests/test_methods_kto.py",
}
# section heading (substring) -> (default code file for a bare ``:N``, default test file for a bare test name)
SECTION_DEFAULTS = {
    "`grpo`": ("herobench/methods/grpo.py", "tests/test_methods_grpo.py"),
    "`reward-model`": ("herobench/methods/reward_model.py", "tests/test_methods_reward_model.py"),
    "DiffusionNFT (`diffusion-nft`": ("herobench/methods/diffusion_nft.py", "tests/test_methods_nft.py"),
    "Diffusion-KTO (`diffusion-kto`": ("herobench/methods/diffusion_kto.py", "tests/test_methods_kto.py"),
}

RANGES = r"\d+(?:-\d+)?(?:,\s*\d+(?:-\d+)?)*"
CODE_REF = re.compile(rf"^(?P<path>[\w./]*\.py)?:(?P<ranges>{RANGES})$")
TEST_REF = re.compile(r"^(?:(?P<file>[\w./]+\.py|p|nft|kto))?::(?P<name>test_\w+)(?P<prefix>…)?(?:\[[^\]]*\])?"
                      r"(?:\s.*)?$")
BARE_TEST = re.compile(r"^(?P<name>test_\w+)(?P<prefix>…)?(?:\[[^\]]*\])?$")


@dataclass(frozen=True)
class CodeRef:
    line: int          # line of the page
    text: str          # the backticked span
    path: str          # resolved, relative to ROOT
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class CitedTest:
    line: int
    text: str
    path: str
    name: str
    prefix: bool


@cache
def _basenames() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for p in PACKAGE.rglob("*.py"):
        found.setdefault(p.name, []).append(str(p.relative_to(ROOT)))
    return found


def resolve_code_path(path: str) -> str | None:
    """A cited path as a file relative to ROOT, or None when it names no herobench file."""
    for candidate in (path, f"herobench/{path}"):
        if (ROOT / candidate).is_file():
            return candidate
    if "/" not in path:
        matches = _basenames().get(path, [])
        if len(matches) == 1:
            return matches[0]
    return None


def _ranges(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        out.append((int(a), int(b or a)))
    return tuple(out)


def _cells(row: str) -> list[str]:
    """A table row's cells: split on the pipes that are neither escaped nor inside a code span."""
    cells, cell, in_code, prev = [], [], False, ""
    for ch in row.strip().strip("|"):
        if ch == "`":
            in_code = not in_code
        if ch == "|" and not in_code and prev != "\\":
            cells.append("".join(cell).strip())
            cell = []
        else:
            cell.append(ch)
        prev = ch
    cells.append("".join(cell).strip())
    return cells


def parse(text: str) -> tuple[list[CodeRef], list[CitedTest], list[str]]:
    """All herobench code and test references of the page, and the spans that look like ones but do not resolve."""
    code: list[CodeRef] = []
    tests: list[CitedTest] = []
    unresolved: list[str] = []
    default_code = default_test = None
    header: list[str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            default_code = default_test = None
            for key, (c, t) in SECTION_DEFAULTS.items():
                if key in line:
                    default_code, default_test = c, t
            header = None
            continue
        if line.startswith("|"):
            cells = _cells(line)
            if header is None:
                header = [c.lower() for c in cells]
                continue
            if set(line.replace("|", "").strip()) <= set("-: "):
                continue
            roles = header
        else:
            header = None
            cells, roles = [line], ["prose"]
        for cell, role in zip(cells, roles):
            herobench_cell = "herobench" in role or role == "reference"
            test_cell = role in ("test", "pinned by")
            last_code = None
            last_test = None
            for span in re.findall(r"`([^`]+)`", cell):
                span = span.strip()
                m = CODE_REF.match(span)
                if m:
                    path = m.group("path")
                    explicit = path is not None and path.startswith(HEROBENCH_PREFIXES)
                    if not (herobench_cell or explicit):
                        continue
                    if path is None:
                        resolved = last_code or default_code
                    else:
                        resolved = resolve_code_path(path)
                    if resolved is None:
                        unresolved.append(f"line {number}: `{span}`")
                        continue
                    last_code = resolved
                    code.append(CodeRef(number, span, resolved, _ranges(m.group("ranges"))))
                    continue
                if re.fullmatch(r"[\w./]+\.py", span) and span.startswith(HEROBENCH_PREFIXES):
                    if resolve_code_path(span) is None:  # a file cited without a line
                        unresolved.append(f"line {number}: `{span}`")
                    continue
                m = TEST_REF.match(span)
                if m:
                    file = m.group("file")
                    if file is None:
                        resolved = last_test or default_test
                    elif file in TEST_ABBREVIATIONS:
                        resolved = TEST_ABBREVIATIONS[file]
                    else:
                        resolved = file if file.startswith("tests/") else f"tests/{file}"
                    if resolved is None:
                        unresolved.append(f"line {number}: `{span}`")
                        continue
                    last_test = resolved
                    tests.append(CitedTest(number, span, resolved, m.group("name"), bool(m.group("prefix"))))
                    continue
                m = BARE_TEST.match(span)
                if m and (test_cell or herobench_cell) and default_test:
                    tests.append(CitedTest(number, span, default_test, m.group("name"), bool(m.group("prefix"))))
    return code, tests, unresolved


@cache
def _lines(path: str) -> list[str]:
    return (ROOT / path).read_text().splitlines()


@cache
def _test_names(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text())
    return frozenset(n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _refs():
    return parse(DOC.read_text())


def test_the_page_has_references():
    code, tests, _ = _refs()
    assert len(code) > 100 and len(tests) > 100


def test_every_herobench_path_resolves():
    _, _, unresolved = _refs()
    assert not unresolved, "references to no herobench file:\n" + "\n".join(unresolved)


def test_every_cited_line_range_is_code_within_the_file():
    bad = []
    for ref in _refs()[0]:
        lines = _lines(ref.path)
        for a, b in ref.ranges:
            if not 1 <= a <= b <= len(lines):
                bad.append(f"line {ref.line}: `{ref.text}` -> {ref.path}:{a}-{b} (file has {len(lines)} lines)")
            elif not lines[a - 1].strip() or not lines[b - 1].strip():
                bad.append(f"line {ref.line}: `{ref.text}` -> {ref.path}:{a}-{b} starts or ends on a blank line")
    assert not bad, "\n".join(bad)


def test_every_cited_test_exists():
    bad = []
    for ref in _refs()[1]:
        if not (ROOT / ref.path).is_file():
            bad.append(f"line {ref.line}: `{ref.text}`: no file {ref.path}")
            continue
        names = _test_names(ref.path)
        ok = any(n.startswith(ref.name) for n in names) if ref.prefix else ref.name in names
        if not ok:
            bad.append(f"line {ref.line}: `{ref.text}`: no test {ref.name} in {ref.path}")
    assert not bad, "\n".join(bad)
