"""Run configuration: nested frozen dataclasses read from TOML, with ``--set key=value`` overrides.

A run config file mirrors :class:`RunSettings`::

    task = "hand"
    method = "hero"
    budget_labels = 1152
    [sampler]
    steps = 20
    [method_options]      # free table, validated by the method's own factory with from_dict
    beta = 0.5

Every unknown key is rejected with its full dotted name and the allowed keys; types are checked
(``int`` is accepted where a ``float`` is expected, ``bool`` is never taken for a number; TOML arrays
become tuples). The generic helpers (:func:`from_dict`, :func:`to_dict`, :func:`apply_overrides`,
:func:`load_toml`, :func:`dumps_toml`) work for any frozen dataclass, so methods use them for their options.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from herobench.errors import ConfigError

T = TypeVar("T")

_MISSING = object()


# --------------------------------------------------------------------------------------------------
# run settings


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class SamplerSettings:
    """DDIM sampler shared by every method (HERO §4: eta 1.0, CFG 5.0; the paper uses 50 steps).

    A field left unset (``None``) takes the model card's calibrated value
    (``<model>/herobench.json``), else the paper's; the resolved values are written to the run."""

    steps: int | None = None
    eta: float | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    micro_batch: int | None = None  # images per forward pass (memory knob; results do not depend on it)

    def __post_init__(self) -> None:
        _require(self.steps is None or self.steps >= 1, f"steps must be >= 1 (got {self.steps})")
        _require(self.eta is None or self.eta >= 0, f"eta must be >= 0 (got {self.eta})")
        _require(self.micro_batch is None or self.micro_batch >= 1,
                 f"micro_batch must be >= 1 (got {self.micro_batch})")


@dataclass(frozen=True)
class EvalSettings:
    """Held-out evaluation: ``n_images`` images from fixed noises (seed ``seed``), never charged."""

    n_images: int = 128
    every_labels: int = 64
    seed: int = 10_000
    batch_size: int = 64

    def __post_init__(self) -> None:
        _require(self.n_images >= 1, f"n_images must be >= 1 (got {self.n_images})")
        _require(self.every_labels >= 1, f"every_labels must be >= 1 (got {self.every_labels})")
        _require(self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})")


@dataclass(frozen=True)
class RaterSettings:
    """Who gives the feedback: a simulated rater (``herobench.harness.rater.SimulatedRater``) or a person."""

    profile: str = "default"
    flip_rate: float = 0.0
    best_noise: float = 0.0
    # "human": a person labels each batch on a local web page (herobench.harness.human); host/port
    # are where that page is served (port 0 = any free port). A simulated rater ignores them.
    kind: Literal["simulated", "human"] = "simulated"
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        _require(0.0 <= self.flip_rate <= 1.0, f"flip_rate must be in [0, 1] (got {self.flip_rate})")
        _require(self.best_noise >= 0.0, f"best_noise must be >= 0 (got {self.best_noise})")
        _require(bool(self.profile), "profile must not be empty")
        _require(0 <= self.port <= 65535, f"port must be in [0, 65535] (got {self.port})")


@dataclass(frozen=True)
class RunSettings:
    """Everything that defines one run. ``method_options`` is a free table that the method's factory
    validates itself (``from_dict(MyOptions, settings.method_options, where="method_options")``)."""

    task: str
    method: str
    budget_labels: int
    seed: int = 0
    batch_size: int = 64
    model: str = "glyphworld"
    oracle: str = ""  # "" = the task's oracle for the model's backend
    device: str = "cpu"
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    rater: RaterSettings = field(default_factory=RaterSettings)
    method_options: dict[str, Any] = field(default_factory=dict)
    # free table for the feedback oracle's factory (e.g. recorded-labels: {labels = "runs/x/labels.jsonl"})
    oracle_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(self.budget_labels >= 0, f"budget_labels must be >= 0 (got {self.budget_labels})")
        _require(self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})")
        _require(bool(self.task), "task must not be empty")
        _require(bool(self.method), "method must not be empty")


def load_run_settings(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunSettings:
    """Read a run config (optional) and apply ``--set`` overrides; the one entry point for the CLI."""
    data = load_toml(path) if path is not None else {}
    return from_dict(RunSettings, apply_overrides(data, list(overrides), RunSettings))


# --------------------------------------------------------------------------------------------------
# dataclass <-> dict


def _dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a table, got {_describe(value)}")
        return from_dict(tp, value, where=key)
    if origin is Literal:
        if value not in args or type(value) is not type(next(a for a in args if a == value)):
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"'{key}' must be one of {allowed}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        real = [a for a in args if a is not type(None)]
        if len(real) == 1:  # Optional[X]: report X's own message
            return _convert(real[0], value, key)
        for alt in args:
            if alt is type(None):
                continue
            try:
                return _convert(alt, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"'{key}' must be {_type_name(tp)}, got {_describe(value)}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"'{key}' must be an array, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if args:
            if len(value) != len(args):
                raise ConfigError(f"'{key}' must have {len(args)} elements, got {len(value)}")
            return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        return tuple(value)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"'{key}' must be an array, got {_describe(value)}")
        return [_convert(args[0], v, f"{key}[{i}]") if args else v for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a table, got {_describe(value)}")
        if not args:
            return dict(value)
        return {
            _convert(args[0], k, f"{key} (key)"): _convert(args[1], v, f"{key}.{k}") for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"'{key}' must be a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, got {_describe(value)}")
        return value
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"'{key}' must be a path string, got {_describe(value)}")
        return Path(value)
    raise TypeError(f"from_dict does not support the annotation {tp!r} (field '{key}')")


def _unknown_key_message(key: str, where: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f"; did you mean '{_dotted(where, close[0])}'?" if close else ""
    return f"unknown key '{_dotted(where, key)}'{hint} (allowed: {', '.join(sorted(allowed)) or 'none'})"


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a (TOML) mapping, recursively.

    Args:
        cls: a dataclass type; nested dataclass fields are built from sub-tables.
        data: the mapping, e.g. from :func:`load_toml`. Missing keys take the field default.
        where: dotted prefix of ``data`` in the whole config (used in error messages).

    Raises:
        ConfigError: unknown key (named with its dotted path and the allowed keys), a missing
            required key, a wrong type, or a value rejected by ``cls.__post_init__`` (whose message
            should start with the field name; it is prefixed with ``where``).
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    if not isinstance(data, Mapping):
        raise ConfigError(f"'{where or cls.__name__}' must be a table, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(_unknown_key_message(str(key), where, list(fields)))
    kwargs = {}
    for name, f in fields.items():
        key = _dotted(where, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{key}'")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        # convention: __post_init__ messages start with the field's own name ("steps must be >= 1");
        # prefixing the table's dotted path makes that the full key ("sampler.steps must be >= 1")
        msg = str(e)
        if where and not msg.startswith(f"{where}."):
            msg = f"{where}.{msg}"
        raise ConfigError(msg) from None


def to_dict(obj: Any) -> Any:
    """Dataclass (or nested containers of them) -> plain dicts/lists/scalars, ready for TOML or JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


# --------------------------------------------------------------------------------------------------
# overrides


def _parse_value(text: str) -> Any:
    """A TOML literal (``3``, ``0.5``, ``true``, ``"x"``, ``[1, 2]``), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _check_path(schema: type, parts: list[str], assignment: str) -> None:
    """Raise if the dotted key ``parts`` does not name a field of ``schema`` (free tables accept any)."""
    cls: Any = schema
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth])
        if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
            origin = typing.get_origin(cls)
            if cls is dict or origin is dict or cls is Any:
                return  # a free table: its owner validates the contents
            raise ConfigError(f"--set {assignment}: '{where}' is not a table")
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        if part not in names:
            raise ConfigError(f"--set {assignment}: " + _unknown_key_message(part, where, names))
        cls = typing.get_type_hints(cls)[part]


def apply_overrides(
    data: Mapping[str, Any], overrides: Sequence[str], schema: type | None = RunSettings
) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` override applied.

    The value is parsed as a TOML literal, falling back to the plain string (``method=hero``).
    With a ``schema`` dataclass (default :class:`RunSettings`) each key is checked to exist, so a
    typo is reported at once; types are checked later by :func:`from_dict`. ``schema=None`` skips it.

    Raises:
        ConfigError: an override without ``=`` or with an empty key, or a key not in ``schema``.
    """
    out = copy.deepcopy(dict(data))
    for assignment in overrides:
        key, sep, raw = assignment.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or not all(parts):
            raise ConfigError(f"--set expects key=value with a dotted key, got '{assignment}'")
        if schema is not None:
            _check_path(schema, parts, assignment)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {assignment}: '{'.'.join(parts[: i + 1])}' is not a table")
            node = child
        node[parts[-1]] = _parse_value(raw.strip())
    return out


# --------------------------------------------------------------------------------------------------
# TOML files


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file. Raises a one-line ConfigError naming the path (and the line, if malformed)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"expected a TOML file, got a directory: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"cannot parse {path}: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot parse {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_str(key)


def _toml_str(s: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes; TOML also forbids a raw DEL
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(v: Any, key: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(v), repr(v))
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x, key) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_toml_key(str(k))} = {_toml_value(x, key)}" for k, x in v.items()) + "}"
    raise ValueError(f"cannot write {_describe(v)} at '{key}' as TOML")


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Write nested plain data (as from :func:`to_dict`) as TOML that :func:`load_toml` reads back.

    Sub-tables become ``[a.b]`` sections. TOML has no null: a key whose value is ``None`` is left out
    (reading it back gives the field's default, which is exact for fields that default to ``None``);
    ``None`` inside an array is rejected."""
    lines: list[str] = []

    def emit(table: Mapping[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping) and v is not None}
        tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        if prefix and (scalars or not tables):
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{_toml_key(str(k))} = {_toml_value(v, _dotted(prefix, str(k)))}")
        if scalars or (prefix and not tables):
            lines.append("")
        for k, v in tables.items():
            emit(v, _dotted(prefix, _toml_key(str(k))))

    emit(data, "")
    return "\n".join(lines).rstrip("\n") + "\n"
