from dataclasses import dataclass, field
from typing import Literal

import pytest

from herobench.config import (
    EvalSettings,
    RaterSettings,
    RunSettings,
    SamplerSettings,
    apply_overrides,
    from_dict,
    load_toml,
    to_dict,
)
from herobench.errors import ConfigError

BASE = {"task": "hand", "method": "hero", "budget_labels": 512}


@dataclass(frozen=True)
class Inner:
    mode: Literal["best", "mean"] = "best"
    sizes: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class Outer:
    name: str
    rate: float = 0.5
    flag: bool = False
    pair: tuple[int, str] = (0, "a")
    maybe: int | None = None
    inner: Inner = field(default_factory=Inner)
    table: dict[str, int] = field(default_factory=dict)


def test_defaults_and_nested_tables():
    s = from_dict(RunSettings, {**BASE, "sampler": {"steps": 50}, "rater": {"flip_rate": 0.1}})
    assert s.sampler == SamplerSettings(steps=50)
    assert s.eval == EvalSettings()
    assert s.rater == RaterSettings(flip_rate=0.1)
    assert (s.seed, s.batch_size, s.model, s.oracle, s.device) == (0, 64, "glyphworld", "", "cpu")
    assert s.eval.seed == 10_000 and s.eval.every_labels == 64 and s.sampler.guidance_scale is None  # unset: the model card decides


def test_unknown_key_names_full_dotted_key_and_allowed_keys():
    with pytest.raises(ConfigError) as e:
        from_dict(RunSettings, {**BASE, "sampler": {"stepz": 3}})
    msg = str(e.value)
    assert "'sampler.stepz'" in msg and "did you mean 'sampler.steps'" in msg
    assert "allowed: eta, guidance_scale, micro_batch, negative_prompt, steps" in msg
    with pytest.raises(ConfigError, match=r"unknown key 'budget'.*budget_labels"):
        from_dict(RunSettings, {"task": "hand", "method": "hero", "budget": 3})


def test_missing_required_key_is_named():
    with pytest.raises(ConfigError, match="missing required key 'budget_labels'"):
        from_dict(RunSettings, {"task": "hand", "method": "hero"})
    with pytest.raises(ConfigError, match="missing required key 'cfg.name'"):
        from_dict(Outer, {}, where="cfg")


@pytest.mark.parametrize(
    "data, pattern",
    [
        ({"sampler": {"steps": "abc"}}, r"'sampler.steps' must be an integer, got str 'abc'"),
        ({"sampler": {"steps": True}}, r"'sampler.steps' must be an integer, got bool"),
        ({"sampler": {"steps": 2.5}}, r"'sampler.steps' must be an integer"),
        ({"sampler": {"eta": "x"}}, r"'sampler.eta' must be a number"),
        ({"sampler": {"eta": False}}, r"'sampler.eta' must be a number"),
        ({"sampler": {"negative_prompt": 3}}, r"'sampler.negative_prompt' must be a string"),
        ({"sampler": 3}, r"'sampler' must be a table"),
        ({"method_options": [1]}, r"'method_options' must be a table"),
    ],
)
def test_type_errors_name_the_key(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        from_dict(RunSettings, {**BASE, **data})


def test_value_errors_carry_the_full_dotted_key():
    with pytest.raises(ConfigError, match=r"^settings.sampler.steps must be >= 1"):
        from_dict(RunSettings, {**BASE, "sampler": {"steps": 0}}, where="settings")
    with pytest.raises(ConfigError, match=r"^settings.budget_labels must be >= 0"):
        from_dict(RunSettings, {**BASE, "budget_labels": -5}, where="settings")
    with pytest.raises(ConfigError, match=r"^steps must be >= 1"):
        SamplerSettings(steps=0)


def test_int_accepted_for_float_and_converted():
    s = from_dict(RunSettings, {**BASE, "sampler": {"eta": 1, "guidance_scale": 7}})
    assert isinstance(s.sampler.eta, float) and s.sampler.guidance_scale == 7.0


def test_tuple_literal_optional_and_typed_dict():
    o = from_dict(
        Outer,
        {
            "name": "x",
            "pair": [3, "b"],
            "maybe": 4,
            "inner": {"mode": "mean", "sizes": [4, 5]},
            "table": {"a": 1},
        },
    )
    assert o.pair == (3, "b") and o.inner.sizes == (4, 5) and o.inner.mode == "mean" and o.maybe == 4
    with pytest.raises(ConfigError, match=r"'inner.mode' must be one of 'best', 'mean', got 'max'"):
        from_dict(Outer, {"name": "x", "inner": {"mode": "max"}})
    with pytest.raises(ConfigError, match=r"'inner.sizes\[1\]' must be an integer"):
        from_dict(Outer, {"name": "x", "inner": {"sizes": [1, "2"]}})
    with pytest.raises(ConfigError, match=r"'pair' must have 2 elements"):
        from_dict(Outer, {"name": "x", "pair": [1]})
    with pytest.raises(ConfigError, match=r"'table.a' must be an integer"):
        from_dict(Outer, {"name": "x", "table": {"a": "one"}})
    with pytest.raises(ConfigError, match=r"'maybe' must be"):
        from_dict(Outer, {"name": "x", "maybe": "3"})


def test_value_checks_raise_config_error():
    with pytest.raises(ConfigError, match=r"budget_labels must be >= 0 \(got -1\)"):
        from_dict(RunSettings, {**BASE, "budget_labels": -1})
    with pytest.raises(ConfigError, match=r"rater.flip_rate must be in \[0, 1\]"):
        from_dict(RunSettings, {**BASE, "rater": {"flip_rate": 1.5}})
    with pytest.raises(ConfigError, match=r"sampler.steps must be >= 1"):
        from_dict(RunSettings, {**BASE, "sampler": {"steps": 0}})


def test_method_options_is_a_free_table_validated_by_the_method():
    s = from_dict(RunSettings, {**BASE, "method_options": {"beta": 0.3, "anything": [1, 2]}})
    assert s.method_options == {"beta": 0.3, "anything": [1, 2]}
    with pytest.raises(ConfigError, match=r"unknown key 'method_options.anything'"):
        from_dict(Inner, {"anything": 1}, where="method_options")  # what a method's factory does


def test_to_dict_round_trips_through_from_dict():
    s = from_dict(
        RunSettings,
        {**BASE, "sampler": {"negative_prompt": 'ugly "hands"\n\\ é 🎨'}, "method_options": {"beta": 0.5}},
    )
    data = to_dict(s)
    assert data["sampler"]["negative_prompt"] == 'ugly "hands"\n\\ é 🎨'
    assert from_dict(RunSettings, data) == s
    o = Outer(name="z", pair=(1, "q"), table={"weird key": 2})
    assert from_dict(Outer, to_dict(o)) == o


def test_apply_overrides_parses_toml_literals_with_string_fallback():
    data = {**BASE, "sampler": {"steps": 20}}
    out = apply_overrides(
        data,
        [
            "sampler.steps=50",
            "sampler.eta = 0.5",
            "method=d3po",
            "eval.n_images=32",
            "method_options.beta=0.25",
            "method_options.mode=mean",
            "method_options.sizes=[1, 2]",
            "oracle=",
            'sampler.negative_prompt="a=b"',
        ],
    )
    assert data["sampler"]["steps"] == 20  # input untouched
    assert out["sampler"] == {"steps": 50, "eta": 0.5, "negative_prompt": "a=b"}
    assert out["method"] == "d3po" and out["eval"] == {"n_images": 32} and out["oracle"] == ""
    assert out["method_options"] == {"beta": 0.25, "mode": "mean", "sizes": [1, 2]}
    s = from_dict(RunSettings, out)
    assert s.sampler.steps == 50 and s.eval.n_images == 32


@pytest.mark.parametrize(
    "override, pattern",
    [
        (
            "sampler.stepz=3",
            r"--set sampler.stepz=3: unknown key 'sampler.stepz'; did you mean 'sampler.steps'",
        ),
        ("budget=3", r"unknown key 'budget'; did you mean 'budget_labels'"),
        ("seed.x=3", r"'seed' is not a table"),
        ("sampler", r"expects key=value"),
        ("a..b=1", r"expects key=value"),
    ],
)
def test_apply_overrides_rejects_unknown_keys(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        apply_overrides(BASE, [override])


def test_override_type_error_surfaces_in_from_dict():
    out = apply_overrides(BASE, ["sampler.steps=many"])
    with pytest.raises(ConfigError, match=r"'sampler.steps' must be an integer, got str 'many'"):
        from_dict(RunSettings, out)


def test_load_toml_errors_are_one_line_with_path_and_line(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.toml"):
        load_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('task = "hand"\nmethod = \n')
    with pytest.raises(ConfigError) as e:
        load_toml(bad)
    assert str(bad) in str(e.value) and "line 2" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="directory"):
        load_toml(tmp_path)
