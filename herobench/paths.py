"""Where herobench finds its data folders and the shipped GlyphWorld model.

``tasks/``, ``oracles/`` and ``results/`` are data, not Python packages (a wheel installing a package
called ``tasks`` would clash with other projects). They are looked up, in order:

1. ``$HEROBENCH_DATA/<name>`` when the environment variable is set;
2. ``<checkout>/<name>`` when herobench runs from a source checkout;
3. ``herobench/_data/<name>`` inside an installed package (copied there at packaging time).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from herobench.errors import HerobenchError

DataName = Literal["tasks", "oracles", "results"]
DATA_NAMES: tuple[str, ...] = ("tasks", "oracles", "results")
ENV_VAR = "HEROBENCH_DATA"

_PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path | None:
    """The source checkout holding this package, or ``None`` for an installed copy.

    A checkout is the package's parent folder when it has both ``tasks/`` and ``pyproject.toml``;
    requiring both keeps an unrelated ``site-packages/tasks`` from being mistaken for ours."""
    root = _PACKAGE_DIR.parent
    if (root / "tasks").is_dir() and (root / "pyproject.toml").is_file():
        return root
    return None


def data_dir(name: DataName, must_exist: bool = True) -> Path:
    """The folder ``name`` ("tasks" | "oracles" | "results"), see the module docstring for the order.

    Raises:
        ValueError: ``name`` is not one of the three data folders (a programming error).
        HerobenchError: ``must_exist`` and the folder is missing (says where it looked).
    """
    if name not in DATA_NAMES:
        raise ValueError(f"unknown data folder {name!r} (known: {', '.join(DATA_NAMES)})")
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser() / name
        if must_exist and not path.is_dir():
            raise HerobenchError(f"${ENV_VAR} is set to {env} but {path} is not a folder")
        return path
    candidates = []
    root = project_root()
    if root is not None:
        candidates.append(root / name)
    candidates.append(_PACKAGE_DIR / "_data" / name)
    for path in candidates:
        if path.is_dir():
            return path
    if must_exist:
        looked = ", ".join(str(p) for p in candidates)
        raise HerobenchError(
            f"cannot find herobench's '{name}' folder (looked in {looked}); "
            f"set ${ENV_VAR} to the folder that holds tasks/, oracles/ and results/"
        )
    return candidates[0]


def glyphworld_model_dir(must_exist: bool = True) -> Path:
    """``herobench/glyphworld/model`` inside the package (shipped as package data).

    Raises:
        HerobenchError: ``must_exist`` and the folder is missing or empty.
    """
    path = _PACKAGE_DIR / "glyphworld" / "model"
    if must_exist and not (path.is_dir() and any(path.iterdir())):
        raise HerobenchError(
            f"the GlyphWorld model is missing from {path}; reinstall herobench or rebuild it with "
            f"`herobench glyphworld train --out {path}`"
        )
    return path
