"""A property test over every numeric setting: values at its bounds are taken, values beyond them, NaN,
infinities and huge numbers are refused with one line naming the key and its range -- through a config
table, ``--set`` and the command line, before any run folder is made. Written without hypothesis (not a
dependency): the cases are the bounds themselves plus values drawn from a seeded generator."""

from __future__ import annotations

import math
import random

import pytest
from click.testing import CliRunner

from herobench.cli import main
from herobench.config import RunSettings, from_dict, numeric_settings
from herobench.errors import ConfigError
from herobench.harness.settings import settings_from_cli

BASE = {"task": "hand", "method": "hero", "budget_labels": 8}
SETTINGS = numeric_settings(RunSettings)


def _nested(key: str, value) -> dict:
    data: dict = dict(BASE)
    node = data
    *parents, last = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return data


def _literal(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return repr(value)


def _accepted(tp: type, lo: float, hi: float, value) -> bool:
    if isinstance(value, bool):
        return False
    if tp is int and not isinstance(value, int):
        return False
    return math.isfinite(value) and lo <= value <= hi


def _cases(tp: type, lo: float, hi: float, rng: random.Random) -> list:
    step = 1 if tp is int else max(1e-9, abs(hi - lo) * 1e-9)
    cases = [lo, hi, lo - step, hi + step, math.nan, math.inf, -math.inf, 2**70, -(2**70), 10**300, 1e300,
             -1e300, True, 0.5, -1]
    for _ in range(12):  # seeded draws around and far beyond the range
        span = hi - lo
        cases.append(rng.uniform(lo - span, hi + span))
        cases.append(rng.choice([-1, 1]) * 10 ** rng.uniform(0, 30))
    if tp is int:
        cases += [int(c) for c in cases[-24:]]
        cases += [lo + (hi - lo) // 2]
    return cases


def test_every_numeric_setting_declares_a_finite_range():
    expected = {"budget_labels", "seed", "batch_size", "sampler.steps", "sampler.eta", "sampler.guidance_scale",
                "sampler.micro_batch", "eval.n_images", "eval.every_labels", "eval.seed", "eval.batch_size",
                "rater.flip_rate", "rater.best_noise", "rater.port"}
    assert set(SETTINGS) == expected
    for key, (_tp, lo, hi) in SETTINGS.items():
        assert math.isfinite(lo) and math.isfinite(hi) and lo < hi, key


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_a_value_is_taken_exactly_when_it_is_inside_the_range(key):
    tp, lo, hi = SETTINGS[key]
    rng = random.Random(f"27:{key}")
    for value in _cases(tp, lo, hi, rng):
        ok = _accepted(tp, lo, hi, value)
        for how in ("table", "--set"):
            try:
                if how == "table":
                    s = from_dict(RunSettings, _nested(key, value))
                else:
                    s = settings_from_cli(overrides=[f"{k}={_literal(v)}" for k, v in BASE.items()] +
                                          [f"{key}={_literal(value)}"])
            except ConfigError as e:
                message = str(e)
                assert not ok, f"{key}={value!r} ({how}) was refused: {message}"
                assert "\n" not in message and key in message, message
                if isinstance(value, int | float) and not isinstance(value, bool) and (
                        tp is float or isinstance(value, int)):
                    assert f"[{lo}, {hi}]" in message or "finite" in message, message
                continue
            assert ok, f"{key}={value!r} ({how}) was taken"
            got = s
            for part in key.split("."):
                got = getattr(got, part)
            assert got == value


@pytest.mark.parametrize("key, value", [
    ("seed", "-1"), ("seed", "2**70"), ("budget_labels", "1e11"), ("eval.n_images", "100000000000"),
    ("sampler.steps", "100000"), ("batch_size", str(10**8)), ("sampler.guidance_scale", "nan"),
    ("sampler.guidance_scale", "inf"), ("sampler.eta", "-inf"), ("rater.flip_rate", "nan"),
    ("eval.seed", "9" * 5000),
])
def test_the_command_line_refuses_with_one_line_before_any_folder(key, value, tmp_path):
    out = tmp_path / "runs"
    res = CliRunner().invoke(main, ["run", "--task", "hand", "--method", "pretrained", "--budget", "0",
                                    "--out", str(out), "--set", f"{key}={value}"], catch_exceptions=False)
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert key in lines[0] and len(lines[0]) < 300, lines[0]
    assert not out.exists()


def test_negative_seed_flag_is_refused_before_any_folder(tmp_path):
    res = CliRunner().invoke(main, ["run", "--task", "hand", "--seed", "-1", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "seed must be >= 0 (got -1); its range is [0, 4294967295]" in res.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("toml, flags, needle", [
    ('seed = "zero"\n', ["--seed", "3"], "'seed' must be an integer"),
    ('[sampler]\nsteps = 0\n', ["--set", "sampler.steps=3"], "sampler.steps must be >= 1"),
    ('budget_labels = nan\n', ["--budget", "8"], "'budget_labels' must be an integer"),
    ('[eval]\nn_images = 100000000000\n', ["--set", "eval.n_images=8"], "eval.n_images must be in [1, 16384]"),
    ('[sampler]\nguidance_scale = inf\n', ["--set", "sampler.guidance_scale=2"], "finite"),
])
def test_a_bad_value_in_the_config_file_is_reported_even_when_a_flag_overrides_it(toml, flags, needle, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('task = "hand"\nmethod = "pretrained"\n' + toml)
    res = CliRunner().invoke(main, ["run", "--config", str(cfg), "--out", str(tmp_path / "runs"), *flags])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert str(cfg) in lines[0] and needle in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()


def test_a_huge_integer_in_a_config_file_is_one_line(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('task = "hand"\nmethod = "pretrained"\nseed = ' + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"cannot parse .*run.toml: exceeds the limit") as e:
        settings_from_cli(config_path=cfg)
    assert len(str(e.value)) < 200
