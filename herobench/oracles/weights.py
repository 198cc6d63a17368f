"""Local weight files and optional packages for the SD-backend oracles. Nothing is ever downloaded.

The manifest ``oracles/weights.toml`` (in the data folder, see ``herobench.paths``) names every weight file
an oracle may load, one table per weight id::

    [yolov8x-seg]
    file = "yolov8x-seg.pt"        # the file name looked for
    sha256 = ""                    # checked on load when known ("" = not recorded yet)
    licence = "AGPL-3.0"
    obtain = "..."                 # one line: how to get the file
    arch = ""                      # the architecture the file fits (open_clip model name), if any
    hf_repo = ""                   # optional: also found in the local Hugging Face cache (offline lookup)
    hf_file = ""
    package = ""                   # optional: shipped inside this installed Python package ...
    package_file = ""              # ... at this path relative to the package folder

A weight file is looked for, in order, in

1. every folder of ``$HEROBENCH_WEIGHTS`` (``os.pathsep``-separated);
2. the herobench cache folder ``${XDG_CACHE_HOME:-~/.cache}/herobench/weights``;
3. the local Hugging Face cache, when the entry names ``hf_repo``/``hf_file``
   (``huggingface_hub.try_to_load_from_cache`` reads the disk only);
4. the installed package, when the entry names ``package``/``package_file`` (nudenet, mediapipe).

A file found nowhere raises one line naming the file and how to get it.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from herobench.config import from_dict, load_toml
from herobench.errors import ConfigError, HerobenchError

ENV_DIRS = "HEROBENCH_WEIGHTS"
MANIFEST = "weights.toml"


@dataclass(frozen=True)
class WeightEntry:
    """One weight file of the manifest (see the module docstring for the fields)."""

    file: str
    obtain: str
    licence: str = ""
    sha256: str = ""
    arch: str = ""
    hf_repo: str = ""
    hf_file: str = ""
    package: str = ""
    package_file: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.sha256 and (len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256)):
            raise ConfigError(f"sha256 must be 64 lowercase hex digits or empty (got {self.sha256!r})")
        if bool(self.hf_repo) != bool(self.hf_file):
            raise ConfigError("hf_repo and hf_file go together")
        if bool(self.package) != bool(self.package_file):
            raise ConfigError("package and package_file go together")


def manifest_path() -> Path:
    from herobench.paths import data_dir

    return data_dir("oracles") / MANIFEST


def load_manifest(path: str | Path | None = None) -> dict[str, WeightEntry]:
    """weight id -> entry, from ``path`` (default: ``oracles/weights.toml``); unknown keys rejected."""
    path = Path(path) if path is not None else manifest_path()
    raw = load_toml(path)
    out = {}
    for wid, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: '{wid}' must be a table")
        out[wid] = from_dict(WeightEntry, table, where=wid)
    return out


def search_dirs() -> list[Path]:
    """The folders searched for weight files, in order (``$HEROBENCH_WEIGHTS``, then the cache folder)."""
    dirs = [Path(p).expanduser() for p in os.environ.get(ENV_DIRS, "").split(os.pathsep) if p]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    dirs.append(cache / "herobench" / "weights")
    return dirs


def _hf_cached(entry: WeightEntry) -> Path | None:
    if not entry.hf_repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        return None
    hit = try_to_load_from_cache(entry.hf_repo, entry.hf_file)
    return Path(hit) if isinstance(hit, str) else None


def _in_package(entry: WeightEntry) -> Path | None:
    if not entry.package:
        return None
    import importlib.util

    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / entry.package_file
    return path if path.is_file() else None


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (memoised on path, size and modification time)."""
    st = Path(path).stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


def resolve(weight_id: str, manifest: dict[str, WeightEntry] | None = None, verify: bool = True) -> Path:
    """The local path of weight ``weight_id`` (see the module docstring for where it looks).

    Raises:
        HerobenchError: unknown id; file not found (one line: the file, where it looked, how to get
            it); or its sha256 differs from the manifest's.
    """
    manifest = load_manifest() if manifest is None else manifest
    if weight_id not in manifest:
        from herobench.registry import unknown_name_message

        raise HerobenchError(unknown_name_message("weight id", weight_id, sorted(manifest)))
    entry = manifest[weight_id]
    dirs = search_dirs()
    found = next((d / entry.file for d in dirs if (d / entry.file).is_file()), None)
    found = found or _hf_cached(entry) or _in_package(entry)
    if found is None:
        where = ", ".join(str(d) for d in dirs)
        extra = f", the Hugging Face cache ({entry.hf_repo})" if entry.hf_repo else ""
        extra += f", the installed '{entry.package}' package" if entry.package else ""
        raise HerobenchError(
            f"missing weight file '{entry.file}' ({weight_id}); looked in {where}{extra}; "
            f"to get it: {entry.obtain}; then put it in ${ENV_DIRS} or the cache folder"
        )
    if verify and entry.sha256:
        got = sha256_file(found)
        if got != entry.sha256:
            raise HerobenchError(
                f"weight file {found} has sha256 {got[:12]}…, expected {entry.sha256[:12]}… ({weight_id}); "
                f"replace it ({entry.obtain})"
            )
    return found


def import_extra(module: str, extra: str, who: str) -> ModuleType:
    """Import an optional heavy package, or raise one line naming the extra that installs it.

    ``YOLO_OFFLINE=1`` is set before ultralytics is imported, so it never checks for updates or fetches
    assets by itself."""
    if module.split(".")[0] == "ultralytics":
        os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise HerobenchError(
            f"{who} needs the '{module.split('.')[0]}' package ({type(e).__name__}: {e}); "
            f"install it with: pip install 'herobench[{extra}]'"
        ) from None
