"""``precision = "bf16"`` (issue 30): an opt-in fast path that runs, is recorded, is reported apart from fp32
runs and is refused against the fp32 regression reference; a bad value is one line."""

# ruff: noqa: F811 - the tests take test_runner's tiny_world fixture as an argument
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_runner import TINY, _cli, settings, tiny_world  # noqa: F401 - fixture

from herobench.config import RunSettings, from_dict, recorded_settings
from herobench.core.generator import Generator
from herobench.errors import ConfigError, HerobenchError
from herobench.harness.report import write_report
from herobench.harness.runlog import read_jsonl
from herobench.harness.runner import run

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def both_runs(tiny_world, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("precision")
    return {p: run(settings(tiny_world, precision=p), out=out / p, progress=False)[0] for p in ("fp32", "bf16")}


def test_a_bf16_run_is_deterministic_within_its_class(both_runs, tiny_world, tmp_path):
    again, _ = run(settings(tiny_world, precision="bf16"), out=tmp_path, progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time", "t")} for r in rows]  # noqa: E731
    for name in ("labels.jsonl", "evals.jsonl"):
        assert strip(read_jsonl(again / name)) == strip(read_jsonl(both_runs["bf16"] / name))


def test_a_bf16_run_works_and_records_its_precision(both_runs):
    fp32, bf16 = both_runs["fp32"], both_runs["bf16"]
    assert json.loads((bf16 / "config.json").read_text())["settings"]["precision"] == "bf16"
    assert json.loads((fp32 / "config.json").read_text())["settings"]["precision"] == "fp32"
    assert (bf16 / "summary.json").is_file() and len(read_jsonl(bf16 / "evals.jsonl")) == 3
    hashes = [[r["image_sha256"] for r in read_jsonl(p / "labels.jsonl") if "good" in r] for p in (fp32, bf16)]
    assert hashes[0] != hashes[1]  # another determinism class: the images differ


def test_bf16_changes_the_unet_output_and_fp32_changes_nothing(tiny_world):
    from herobench.core.pipeline import load_components

    comps = load_components(tiny_world, device="cpu", dtype=torch.float32)
    x, t = torch.randn(2, *Generator(comps).latent_shape), torch.tensor([500, 500])
    emb = torch.randn(2, 77, comps.text_encoder.config.hidden_size)
    plain = comps.unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]
    fp32, bf16 = (Generator(comps, precision=p)._unet(x, t, emb) for p in ("fp32", "bf16"))
    assert torch.equal(fp32, plain) and bf16.dtype == torch.float32
    assert not torch.equal(bf16, plain) and torch.allclose(bf16, plain, atol=0.1)


def test_a_bad_precision_is_one_line():
    with pytest.raises(ConfigError, match="'precision' must be one of 'fp32', 'bf16', got 'fp16'"):
        from_dict(RunSettings, {"task": "hand", "method": "hero", "budget_labels": 8, "precision": "fp16"})
    code, out = _cli("run", "--task", "hand", "--set", "precision=fp16")
    assert code == 2 and "'precision' must be one of 'fp32', 'bf16'" in out and len(out.strip().splitlines()) == 1


def test_the_report_keeps_bf16_runs_apart(both_runs, tmp_path):
    write_report(list(both_runs.values()), tmp_path / "report", echo=lambda _line: None)
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert set(zip(runs["method"], runs["precision"])) == {("hero", "fp32"), ("hero [bf16]", "bf16")}
    curves = pd.read_csv(tmp_path / "report" / "curves.csv")
    assert set(curves["method"]) == {"hero", "hero [bf16]"} and (curves["n_runs"] == 1).all()  # not averaged
    paired = pd.read_csv(tmp_path / "report" / "paired.csv")
    bf16 = paired[paired["method"] == "hero [bf16]"]
    assert not bf16.empty and set(bf16["reference"]) == {"start"}  # never paired with the fp32 HERO
    assert "hero [bf16]" in (tmp_path / "report" / "tables.md").read_text()
    from herobench.harness.report import labels_ratio, load_runs

    runs = load_runs(list(both_runs.values()))
    assert labels_ratio(runs, 0.5).empty  # each class holds only its own HERO: no cross-class ratio
    bf16_twin = runs[runs["method"] == "hero [bf16]"].assign(method="ddpo [bf16]", path=lambda d: d["path"] + "-2")
    ratios = labels_ratio(pd.concat([runs, bf16_twin]), 0.5)
    assert list(zip(ratios["method"], ratios["reference"])) == [("ddpo [bf16]", "hero [bf16]")]


def test_runs_recorded_before_precision_read_as_fp32():
    old = {"task": "hand", "method": "hero", "budget_labels": 8}  # a config.json written before issue 30
    assert recorded_settings(old)["precision"] == "fp32"
    assert recorded_settings({**old, "nope": 1}) == {**old, "nope": 1}  # unparseable: left as it was


def test_regression_refuses_bf16_against_the_fp32_reference(tmp_path):
    from herobench.harness.bench import load_grid
    from herobench.regression import _default_grid, _default_reference, check, load_reference

    reference = load_reference(_default_reference())
    with pytest.raises(HerobenchError, match="precision bf16 against a fp32 reference.*determinism class"):
        check(load_grid(_default_grid(), ["precision=bf16"]), reference, tmp_path, 1)
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_the_committed_fp32_reference_still_matches_its_grid():
    from herobench.harness.bench import cells, load_grid
    from herobench.regression import (
        _default_grid,
        _default_reference,
        _reference_settings,
        _settings_without_seed,
        cell_key,
        load_reference,
    )

    reference = load_reference(_default_reference())
    for cell in cells(load_grid(_default_grid(), [])):
        stored = dict(reference["cells"][cell_key(cell.settings)]["settings"])
        stored.pop("precision", None)  # as a reference made before issue 30 stores it ...
        assert _reference_settings(stored) == _settings_without_seed(cell.settings)  # ... it is still accepted
