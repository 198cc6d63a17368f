"""One folder per run, and the durable file primitives every run file uses.

Layout of a run folder, as :mod:`herobench.harness.runner` writes it::

    config.json        resolved settings, sampler, task, oracles, method, model and environment
                       (``{"settings": {...}, "environment": {...}, ...}``; a ``--budget`` extension adds
                       ``budget_extensions``); ``herobench run --resume`` rebuilds the run from it
    labels.jsonl       the feedback ledger (append-only, hash-chained; ``herobench.ledgerfile``)
    evals.jsonl        one line per evaluation point and prompt set (append-only)
    train.jsonl        one line of method statistics per iteration (append-only)
    summary.json       written at the end (atomically)
    checkpoints/latest/    the one checkpoint: ``lora/``, ``method.pt``, ``harness.json``, ``README.md``
                       (``herobench.harness.checkpoint``; ``latest.tmp``/``latest.old`` only mid-swap)
    human/images/      the images a person labelled (``--rater human``; ``herobench.harness.human``)
    tensorboard/, wandb/   trackers' mirrors of the JSONL rows (``--log-with``; ``herobench.harness.tracking``)
    report/            the run's own curve and tables, drawn by ``herobench run`` at the end (derived)

The folder's name is :func:`run_dir_name`.

JSONL files are append-only; every append is flushed and fsync'd before returning. A line is complete only
with its trailing newline: bytes after the last newline are a torn write (the process died mid-write,
and the writer never returned) and are dropped by readers and repaired by the next append.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herobench import openmp
from herobench.errors import HerobenchError

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def run_dir_name(settings: Any) -> str:
    """``<task>-<method>-s<seed>``: the run folder's name, from the task's *name* (``tasks/<name>/`` or a
    spec file's folder), never from the path it was given, so ``--task /abs/x/task.toml`` or
    ``../x/task.toml`` lands inside ``--out`` like ``--task x``. The one naming rule of the runner and of
    ``herobench bench``.

    Raises:
        UnknownNameError, ConfigError: the task does not load (before any folder is made).
    """
    from herobench.tasks import load_task

    task = load_task(settings.task).name
    return "-".join(_safe_part(p) for p in (task, settings.method, f"s{settings.seed}"))


def _safe_part(text: str) -> str:
    # one path component: no separators, no leading dots ("..", hidden folders)
    return _UNSAFE.sub("_", str(text)).lstrip(".") or "_"


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run folder (nothing is created until :meth:`create`)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_json(self) -> Path:
        return self.path / "config.json"

    @property
    def labels(self) -> Path:
        return self.path / "labels.jsonl"

    @property
    def evals(self) -> Path:
        return self.path / "evals.jsonl"

    @property
    def train_log(self) -> Path:
        return self.path / "train.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def create(self) -> RunDir:
        """Make the folder and ``checkpoints/`` (idempotent)."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self

    def is_run(self) -> bool:
        """A run folder is one with a ``config.json``."""
        return self.config_json.is_file()


# --------------------------------------------------------------------------------------------------
# durable appends


def _fsync_dir(path: Path) -> None:
    # make a newly created file's directory entry durable too (POSIX; a no-op where unsupported)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def drop_torn_tail(path: Path) -> bytes:
    """Truncate ``path`` after its last newline; return the bytes removed (``b""`` if none).

    Those bytes are a torn write: our writers end every record with a newline in one ``write``."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return b""
    if size == 0:
        return b""
    with path.open("rb") as fh:  # (read-only first: the common case, a complete last line, writes nothing)
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return b""
    with path.open("r+b") as fh:
        data = fh.read()
        keep = data.rfind(b"\n") + 1
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return data[keep:]


def append_durably(path: Path, data: bytes) -> None:
    """Append ``data`` (whole lines) in one write, then fsync before returning.

    A write that fails (disk full, I/O error) is cut back off the file before the error propagates, so
    the file never keeps part of a record its writer was told had failed; the ``OSError`` names ``path``.
    """
    path = Path(path)
    created = not path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise _with_path(e, path) from None
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException as e:
            try:
                os.ftruncate(fd, start)
            except OSError:
                log.warning("%s: could not remove a partial write; readers drop it as a torn line", path)
            if isinstance(e, OSError):
                raise _with_path(e, path) from None
            raise
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` as the whole of ``path``; an ``OSError`` names ``path`` (a caller that needs
    atomicity writes into a temporary folder or file and renames it)."""
    path = Path(path)
    try:
        with path.open("wb") as fh:
            fh.write(data)
            fh.flush()
    except OSError as e:
        raise _with_path(e, path) from None


def _with_path(e: OSError, path: Path) -> OSError:
    """``e`` with ``path`` as its file name (``os.write`` and ``os.fsync`` errors name none)."""
    if e.filename is not None or not e.errno:
        return e
    return type(e)(e.errno, e.strerror, str(path))


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON record as a line; durable (fsync) when this returns.

    A torn last line left by a killed process is removed first (logged), so it cannot corrupt the file."""
    path = Path(path)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    dropped = drop_torn_tail(path)
    if dropped:
        log.warning("%s: dropped a torn last line (%d bytes) before appending", path, len(dropped))
    append_durably(path, line)


def iter_jsonl_lines(path: Path) -> tuple[list[tuple[int, Any]], bytes]:
    """Parse ``path`` into ``(line_number, value)`` pairs (1-based; blank lines skipped) and the torn tail.

    Raises:
        HerobenchError: the file is missing, or a complete line is not valid JSON (names the line).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise HerobenchError(f"file not found: {path}") from None
    keep = data.rfind(b"\n") + 1
    tail = data[keep:]
    out = []
    for number, raw in enumerate(data[:keep].split(b"\n")[:-1], start=1):
        if not raw.strip():
            continue
        try:
            out.append((number, json.loads(raw)))
        except (ValueError, RecursionError) as e:  # (a 5000-digit integer is a ValueError, not a decode error)
            raise HerobenchError(f"{path}: line {number} is not valid JSON ({str(e)[:200]})") from None
    return out, tail


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records of a JSONL file; a torn last line is skipped (logged).

    Raises:
        HerobenchError: missing file, a malformed complete line (named by number), or a line that is
            not a JSON object.
    """
    lines, tail = iter_jsonl_lines(path)
    if tail:
        log.warning("%s: ignoring a torn last line (%d bytes)", path, len(tail))
    for number, value in lines:
        if not isinstance(value, dict):
            raise HerobenchError(f"{path}: line {number} is not a JSON object")
    return [value for _, value in lines]


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` via a temporary file and ``os.replace`` (readers never see half a file)."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace``; on failure the temporary
    file is removed and ``path`` keeps its old content (or stays absent)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


# --------------------------------------------------------------------------------------------------
# environment


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            fields = dict(line.split(":", 1) for line in fh.read().split("\n\n")[0].splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        name = fields.get("model name", "")
        family, model = fields.get("cpu family"), fields.get("model")
        return f"{name} (family {family}, model {model})" if family and model else name
    except OSError:
        return platform.processor()


def environment_info() -> dict[str, Any]:
    """Versions and machine facts recorded in every run's ``config.json``.

    Package versions come from installed metadata (nothing heavy is imported); ``git`` is the commit
    of the source checkout (``None`` outside one or before the first commit) and ``git_dirty`` whether
    tracked files differ from it."""
    import herobench
    from herobench.paths import project_root

    packages = {
        name: _package_version(name) for name in ("torch", "diffusers", "transformers", "peft", "numpy")
    }
    info: dict[str, Any] = {
        "herobench": herobench.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
        "git": None,
        "git_dirty": None,
    }
    root = project_root()
    if root is not None:
        info["git"] = _git(root, "rev-parse", "HEAD")
        if info["git"] is not None:
            status = _git(root, "status", "--porcelain", "--untracked-files=no")
            info["git_dirty"] = bool(status) if status is not None else None
    info["cpu"] = cpu_model()
    torch = sys.modules.get("torch")  # only if the caller already imported it (no import cost here)
    if torch is not None:
        # the kernels torch dispatches to (AVX2, AVX512, ...) set float rounding: runs whose reward is
        # learned (HERO) reproduce only on the same CPU capability
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["threads"] = torch.get_num_threads()
        info["openmp_wait"] = openmp.describe()  # speed only: how idle threads wait changes no number
        info["cuda"] = torch.version.cuda
        info["device_name"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info
