"""Task specs: ``tasks/<name>/task.toml`` -> :class:`herobench.types.TaskSpec`.

A task file holds (all keys required unless a default is given)::

    version = "1.0"                       # a string; bump it when prompts or the success rule change
    category = "counting + colour"
    description = "..."
    success = "exactly one rose, blue, in a vase"   # one line: what the oracle checks
    train_prompts = ["photo of one blue rose in a vase"]
    eval_prompts = [...]                  # default: the train prompts (when the paper has no held-out ones)
    enhanced_prompts = [...]              # SD-Enhanced baseline, one per eval prompt, same order
    default_budget_labels = 512
    budget_labels_by_method = { d3po = 5000 }   # optional: a method's own default budget (the paper's)
    rater_profiles = ["default"]          # default ["default"]
    [oracles]                             # backend ("glyphworld" | "sd") -> oracle name
    glyphworld = "glyphworld-exact"
    sd = "geneval-count-colour"

The task's name is its folder name (or the file's stem when the file is not called ``task.toml``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from herobench.config import from_dict, load_toml
from herobench.errors import ConfigError, UnknownNameError
from herobench.paths import data_dir
from herobench.registry import unknown_name_message
from herobench.types import TaskSpec

TASK_FILE = "task.toml"
_VERSION = re.compile(r"^\d+(\.\d+)*$")


@dataclass(frozen=True)
class _Oracles:
    """Oracle name per generation backend (the runner picks by model: GlyphWorld or a real SD)."""

    glyphworld: str = ""
    sd: str = ""


BACKENDS: tuple[str, ...] = ("glyphworld", "sd")


@dataclass(frozen=True)
class _Enhanced:
    """``[enhanced_prompts]``: per backend, one prompt per eval prompt, same order."""

    glyphworld: tuple[str, ...] = ()
    sd: tuple[str, ...] = ()


@dataclass(frozen=True)
class _TaskFile:
    version: str
    category: str
    description: str
    success: str
    train_prompts: tuple[str, ...]
    enhanced_prompts: _Enhanced
    oracles: _Oracles
    default_budget_labels: int
    eval_prompts: tuple[str, ...] | None = None
    rater_profiles: tuple[str, ...] = ("default",)
    budget_labels_by_method: dict[str, int] = field(default_factory=dict)


def _validate(spec: _TaskFile) -> None:
    if not _VERSION.match(spec.version):
        raise ConfigError(f"'version' must be a version string like \"1.0\", got {spec.version!r}")
    for key in ("category", "description", "success"):
        if not getattr(spec, key).strip():
            raise ConfigError(f"'{key}' must not be empty")
    if "\n" in spec.success:
        raise ConfigError("'success' must be one line")
    eval_prompts = spec.eval_prompts if spec.eval_prompts is not None else spec.train_prompts
    for key, prompts in (
        ("train_prompts", spec.train_prompts),
        ("eval_prompts", eval_prompts),
        ("rater_profiles", spec.rater_profiles),
    ):
        if not prompts:
            raise ConfigError(f"'{key}' must not be empty")
        for i, p in enumerate(prompts):
            if not p.strip():
                raise ConfigError(f"'{key}[{i}]' must not be empty")
    for backend in BACKENDS:
        prompts = getattr(spec.enhanced_prompts, backend)
        key = f"enhanced_prompts.{backend}"
        if not prompts:
            raise ConfigError(f"'{key}' must not be empty")
        for i, p in enumerate(prompts):
            if not p.strip():
                raise ConfigError(f"'{key}[{i}]' must not be empty")
        if len(prompts) != len(eval_prompts):
            raise ConfigError(
                f"'{key}' must have one prompt per eval prompt ({len(eval_prompts)}), got {len(prompts)}"
            )
    if not any(getattr(spec.oracles, b).strip() for b in BACKENDS):
        raise ConfigError(f"'oracles' must name the oracle of at least one backend ({', '.join(BACKENDS)})")
    if spec.default_budget_labels < 0:
        raise ConfigError(f"'default_budget_labels' must be >= 0, got {spec.default_budget_labels}")
    for method, budget in spec.budget_labels_by_method.items():
        if budget < 0:
            raise ConfigError(f"'budget_labels_by_method.{method}' must be >= 0, got {budget}")


def _task_file(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    as_path = Path(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or "/" in text or "\\" in text or text.endswith(".toml")
    if looks_like_path or (as_path.exists() and text not in list_tasks()):
        path = as_path / TASK_FILE if as_path.is_dir() else as_path
        if not path.is_file():
            raise ConfigError(f"task file not found: {path}")
        return path
    path = data_dir("tasks") / text / TASK_FILE
    if not path.is_file():
        raise UnknownNameError(unknown_name_message("task", text, list_tasks()))
    return path


def resolve_profile(task: TaskSpec, profile: str) -> str:
    """The rater profile a run of ``task`` uses: ``profile``, or the task's first one for ``"default"``
    when the task has no default profile (mountain: green).

    Raises:
        ConfigError: a profile the task does not have (named, with the task's profiles).
    """
    profiles = list(task.rater_profiles)
    if profile == "default" and profiles and "default" not in profiles:
        profile = profiles[0]
    if profile not in profiles:
        raise ConfigError(f"rater profile '{profile}' is not one of task '{task.name}': {profiles}")
    return profile


def load_task(name_or_path: str | Path) -> TaskSpec:
    """Load a task by name (``"hand"``) or by path (a ``task.toml`` or the folder holding it).

    Raises:
        UnknownNameError: no task of that name (with the closest name as a suggestion).
        ConfigError: a missing file, or a malformed spec (message starts with the file's path and
            names the offending key).
    """
    path = _task_file(name_or_path)
    try:
        raw = from_dict(_TaskFile, load_toml(path))
        _validate(raw)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(
            msg if msg.startswith(("cannot parse", "config file")) else f"{path}: {msg}"
        ) from None
    name = path.parent.name if path.name == TASK_FILE else path.stem
    return TaskSpec(
        name=name,
        version=raw.version,
        category=raw.category,
        description=raw.description.strip(),
        train_prompts=raw.train_prompts,
        eval_prompts=raw.eval_prompts if raw.eval_prompts is not None else raw.train_prompts,
        enhanced_prompts=raw.enhanced_prompts.sd,
        enhanced_by_backend={b: getattr(raw.enhanced_prompts, b) for b in BACKENDS},
        oracles={b: getattr(raw.oracles, b) for b in BACKENDS if getattr(raw.oracles, b).strip()},
        default_budget_labels=raw.default_budget_labels,
        budget_labels_by_method=dict(raw.budget_labels_by_method),
        success=raw.success,
        rater_profiles=raw.rater_profiles,
    )


def list_tasks() -> list[str]:
    """Names of the tasks shipped in the tasks folder (sorted)."""
    root = data_dir("tasks")
    return sorted(p.name for p in root.iterdir() if (p / TASK_FILE).is_file())


def for_backend(task: TaskSpec, backend: str) -> TaskSpec:
    """The task as seen by a model of ``backend``: ``enhanced_prompts`` become that backend's."""
    import dataclasses

    prompts = task.enhanced_by_backend.get(backend) or task.enhanced_prompts
    return dataclasses.replace(task, enhanced_prompts=tuple(prompts))


def glyphworld_tasks() -> dict[str, TaskSpec]:
    """The shipped tasks that name a GlyphWorld oracle, as the GlyphWorld backend sees them (its enhanced
    prompts), by name: the one source of GlyphWorld's task prompt sets (calibration, judges, benchmarks)."""
    specs = (load_task(name) for name in list_tasks())
    return {spec.name: for_backend(spec, "glyphworld") for spec in specs if spec.oracles.get("glyphworld")}
