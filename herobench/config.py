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
(``int`` is accepted where a ``float`` is expected, ``bool`` is never taken for a number, NaN and infinity
are never taken for a number; TOML arrays become tuples). Every numeric setting declares its range in its
field's metadata (``field(metadata=in_range(lo, hi))``), checked by :func:`check_ranges` when the
dataclass is built, so ``sampler.steps=100000`` or ``seed=-1`` is one line naming the key and its range. The generic helpers (:func:`from_dict`, :func:`to_dict`, :func:`apply_overrides`,
:func:`load_toml`) work for any frozen dataclass, so methods use them for their options.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
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


SEED_MAX = 2**32 - 1  # numpy's and most tools' seed range; torch generators take any of these
MAX_BATCH = 4096  # images per batch: more than any accelerator holds for SD at once


def in_range(lo: float, hi: float) -> dict[str, Any]:
    """Field metadata declaring a numeric setting's closed range ``[lo, hi]`` (see :func:`check_ranges`)."""
    return {"range": (lo, hi)}


def show_number(v: Any) -> str:
    """``v`` for a message; an integer too long to print (Python refuses > 4300 digits) by its size."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 128:
        return f"an integer of {v.bit_length()} bits"
    return repr(v) if isinstance(v, float) else str(v)


def _range_message(name: str, v: Any, lo: float, hi: float) -> str | None:
    """Why ``v`` is not a valid value of the setting ``name`` with range ``[lo, hi]``, or None."""
    span = f"[{show_number(lo)}, {show_number(hi)}]"
    if isinstance(v, float) and not math.isfinite(v):
        return f"{name} must be a finite number in {span} (got {v})"
    if v < lo:  # (kept in this form: "steps must be >= 1 (got 0)" is what a typo needs to see first)
        return f"{name} must be >= {show_number(lo)} (got {show_number(v)}); its range is {span}"
    if v > hi:
        return f"{name} must be in {span} (got {show_number(v)})"
    return None


def check_ranges(obj: Any) -> None:
    """Check every numeric field of the dataclass instance ``obj``: finite, and inside the range its
    metadata declares (:func:`in_range`). Call it from ``__post_init__``; the message starts with the
    field's name, which :func:`from_dict` prefixes with the table's dotted path.

    Raises:
        ConfigError: ``"steps must be in [1, 1000] (got 100000)"``.
    """
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        lo, hi = f.metadata.get("range", (-math.inf, math.inf))
        message = _range_message(f.name, v, lo, hi)
        if message:
            raise ConfigError(message)


@dataclass(frozen=True)
class SamplerSettings:
    """DDIM sampler shared by every method (HERO §4: eta 1.0, CFG 5.0; the paper uses 50 steps).

    A field left unset (``None``) takes the model card's calibrated value
    (``<model>/herobench.json``), else the paper's; the resolved values are written to the run."""

    # (DDIM takes at most one step per training timestep: SD has 1000)
    steps: int | None = field(default=None, metadata=in_range(1, 1000))
    eta: float | None = field(default=None, metadata=in_range(0, 1))  # (eta > 1: a negative variance)
    guidance_scale: float | None = field(default=None, metadata=in_range(0, 100))
    negative_prompt: str | None = None
    # images per forward pass (memory knob; results do not depend on it)
    micro_batch: int | None = field(default=None, metadata=in_range(1, MAX_BATCH))

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class EvalSettings:
    """Held-out evaluation: ``n_images`` images from fixed noises (seed ``seed``), never charged."""

    # (the noises of all n_images are held at once: 16384 SD-1.5 latents are 1 GiB)
    n_images: int = field(default=128, metadata=in_range(1, 16_384))
    every_labels: int = field(default=64, metadata=in_range(1, 1_000_000))
    seed: int = field(default=10_000, metadata=in_range(0, SEED_MAX))
    batch_size: int = field(default=64, metadata=in_range(1, MAX_BATCH))

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class RaterSettings:
    """Who gives the feedback: a simulated rater (``herobench.harness.rater.SimulatedRater``) or a person."""

    profile: str = "default"
    flip_rate: float = field(default=0.0, metadata=in_range(0, 1))
    best_noise: float = field(default=0.0, metadata=in_range(0, 1000))  # std of N(0, σ²) on a score
    # "human": a person labels each batch on a local web page (herobench.harness.human); host/port
    # are where that page is served (port 0 = any free port). A simulated rater ignores them.
    kind: Literal["simulated", "human"] = "simulated"
    host: str = "127.0.0.1"
    port: int = field(default=0, metadata=in_range(0, 65535))

    def __post_init__(self) -> None:
        check_ranges(self)
        _require(bool(self.profile), "profile must not be empty")


@dataclass(frozen=True)
class RunSettings:
    """Everything that defines one run. ``method_options`` is a free table that the method's factory
    validates itself (``from_dict(MyOptions, settings.method_options, where="method_options")``)."""

    task: str
    method: str
    budget_labels: int = field(metadata=in_range(0, 1_000_000))
    seed: int = field(default=0, metadata=in_range(0, SEED_MAX))
    batch_size: int = field(default=64, metadata=in_range(1, MAX_BATCH))
    model: str = "glyphworld"
    oracle: str = ""  # "" = the task's oracle for the model's backend
    device: str = "cpu"
    # "bf16": the UNet runs under bfloat16 autocast, an opt-in fast path (issue 30; docs/PERFORMANCE.md). Its
    # runs are their own determinism class: reports keep them apart from fp32 runs, the regression check
    # refuses them against the fp32 reference.
    precision: Literal["fp32", "bf16"] = "fp32"
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    rater: RaterSettings = field(default_factory=RaterSettings)
    method_options: dict[str, Any] = field(default_factory=dict)
    # free table for the feedback oracle's factory (e.g. recorded-labels: {labels = "runs/x/labels.jsonl"})
    oracle_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_ranges(self)
        _require(bool(self.task), "task must not be empty")
        _require(bool(self.method), "method must not be empty")


def recorded_settings(data: Any) -> Any:
    """A recorded ``settings`` table (a run's ``config.json``, a regression reference) as today's
    :class:`RunSettings` writes it: keys added since it was recorded take their defaults (a run recorded
    before ``precision`` existed ran fp32), in JSON form. A table that no longer parses comes back as it was,
    so the comparison it is made for reports the difference."""
    try:
        return json.loads(json.dumps(to_dict(from_dict(RunSettings, data))))
    except ConfigError:
        return data


def numeric_settings(cls: type = RunSettings, where: str = "") -> dict[str, tuple[type, float, float]]:
    """``{"sampler.steps": (int, 1, 1000), ...}``: every numeric setting of ``cls`` (nested tables
    included) with its type and declared range (what the property tests walk)."""
    out: dict[str, tuple[type, float, float]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = _dotted(where, f.name)
        tp = hints[f.name]
        real = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        if len(real) == 1 and dataclasses.is_dataclass(real[0]):
            out.update(numeric_settings(real[0], key))
        elif len(real) == 1 and real[0] in (int, float):
            lo, hi = f.metadata.get("range", (-math.inf, math.inf))
            out[key] = (real[0], lo, hi)
    return out


def check_partial(cls: type, data: Mapping[str, Any], where: str = "") -> None:
    """Check the keys ``data`` has against ``cls`` -- known, of the right type, inside their ranges --
    without requiring the missing ones. A config file is checked this way before flags and ``--set``
    overrides replace some of its values, so a wrong value in the file is reported even when a flag
    overrides it.

    Raises:
        ConfigError: the first bad key, named by its dotted path.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"'{where or cls.__name__}' must be a table, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(str(key), where, list(fields)))
        dotted = _dotted(where, key)
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type) and isinstance(value, Mapping):
            check_partial(tp, value, dotted)
            continue
        converted = _convert(tp, value, dotted)
        if isinstance(converted, int | float) and not isinstance(converted, bool):
            lo, hi = fields[key].metadata.get("range", (-math.inf, math.inf))
            message = _range_message(dotted, converted, lo, hi)
            if message:
                raise ConfigError(message)


def check_config_file(data: Mapping[str, Any], path: str | Path) -> None:
    """:func:`check_partial` of a run config file's table; the message names the file."""
    try:
        check_partial(RunSettings, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------------------
# dataclass <-> dict


def _dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _describe(value: Any) -> str:
    text = show_number(value) if isinstance(value, int | float) and not isinstance(value, bool) else repr(value)
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
        return _convert_union(tp, args, value, key)
    if origin is tuple or origin is list:
        return _convert_array(origin, args, value, key)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a table, got {_describe(value)}")
        if not args:
            return dict(value)
        return {
            _convert(args[0], k, f"{key} (key)"): _convert(args[1], v, f"{key}.{k}") for k, v in value.items()
        }
    return _convert_scalar(tp, value, key)


def _convert_union(tp: Any, args: tuple, value: Any, key: str) -> Any:
    """``X | Y | None``: None when allowed, else the first alternative that accepts ``value``."""
    if value is None and type(None) in args:
        return None
    real = [a for a in args if a is not type(None)]
    if len(real) == 1:  # Optional[X]: report X's own message
        return _convert(real[0], value, key)
    for alt in real:
        try:
            return _convert(alt, value, key)
        except ConfigError:
            continue
    raise ConfigError(f"'{key}' must be {_type_name(tp)}, got {_describe(value)}")


def _convert_array(origin: type, args: tuple, value: Any, key: str) -> tuple | list:
    """``tuple[X, ...]``, ``tuple[X, Y]``, ``tuple`` or ``list[X]`` from a TOML array."""
    if not isinstance(value, list | tuple):
        raise ConfigError(f"'{key}' must be an array, got {_describe(value)}")
    if origin is list:
        return [_convert(args[0], v, f"{key}[{i}]") if args else v for i, v in enumerate(value)]
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if args:
        if len(value) != len(args):
            raise ConfigError(f"'{key}' must have {len(args)} elements, got {len(value)}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    return tuple(value)


def _convert_scalar(tp: Any, value: Any, key: str) -> Any:
    """``bool``, ``int``, ``float`` (finite), ``str`` or ``Path``; a bool is never taken for a number."""
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
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float's range
            raise ConfigError(f"'{key}' must be a finite number, got {_describe(value)}") from None
        if not math.isfinite(number):
            raise ConfigError(f"'{key}' must be a finite number, got {_describe(value)}")
        return number
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
    except ValueError:  # an integer literal longer than Python converts (4300 digits)
        raise ConfigError(f"the value {text[:20]}... ({len(text)} characters) is not a number this "
                          "setting can take") from None


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
        try:
            node[parts[-1]] = _parse_value(raw.strip())
        except ConfigError as e:
            raise ConfigError(f"--set {'.'.join(parts)}: {e}") from None
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
    except ValueError as e:  # tomllib: an integer longer than Python converts
        raise ConfigError(f"cannot parse {path}: {str(e).split(':')[0].lower()}") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
