"""``--log-with tensorboard`` mirrors a run's logs and config into event files a reader gets back, and every
checkpoint folder has a model card whose YAML header names the base model (issue 29)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tinysd import build_tiny_sd

from herobench.config import RunSettings, from_dict
from herobench.errors import HerobenchError
from herobench.harness.runlog import read_jsonl
from herobench.harness.runner import run
from herobench.harness.tracking import check_trackers, parameters, scalars


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    path = build_tiny_sd(tmp_path_factory.mktemp("tinyworld"), prediction_type="v_prediction", seed=3)
    (path / "herobench.json").write_text(json.dumps({"backend": "glyphworld", "sampler": {"steps": 3}}))
    return path


def small(model: Path, method: str = "ddpo") -> RunSettings:
    return from_dict(RunSettings, {"task": "hand", "method": method, "budget_labels": 8, "batch_size": 4,
                                   "model": str(model), "sampler": {"steps": 3, "guidance_scale": 2.0},
                                   "eval": {"n_images": 8, "every_labels": 4, "batch_size": 8}})


def test_records_flatten_to_numeric_scalars_and_the_config_to_parameters():
    row = {"labels": 4, "success_rate": 0.25, "ok": True, "bad": float("nan"), "reason": "x",
           "reasons": {"no hand": 3}, "verdicts": [1, 0]}
    assert scalars(row, "eval/eval/") == {"eval/eval/labels": 4.0, "eval/eval/success_rate": 0.25,
                                          "eval/eval/ok": 1.0, "eval/eval/reasons/no hand": 3.0}
    params = parameters({"settings": {"seed": 0, "oracle": None, "lora_targets": ["to_q", "to_k"]}})
    assert params == {"settings.seed": 0, "settings.oracle": "None", "settings.lora_targets": "['to_q', 'to_k']"}


def test_a_tracker_without_its_package_is_one_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(HerobenchError, match=r"--log-with mlflow: the 'mlflow' package is not installed"):
        check_trackers(["mlflow"])


@pytest.mark.slow  # one tiny DDPO run (8 labels) and the event files: ~15 s on 2 loaded cores
def test_tensorboard_mirrors_train_and_eval_logs_and_the_config(tiny_world, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    path, summary = run(small(tiny_world), out=tmp_path, progress=False, log_with=("tensorboard",))
    logdir = path / "tensorboard"
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    evals = [r for r in read_jsonl(path / "evals.jsonl") if r["prompt_set"] == "eval"]
    curve = acc.Scalars("eval/eval/success_rate")
    assert [(e.step, round(e.value, 6)) for e in curve] == [(r["labels"], round(r["success_rate"], 6)) for r in evals]
    assert [e.step for e in curve] == [0, 4, 8]
    train = read_jsonl(path / "train.jsonl")
    assert [(e.step, e.value) for e in acc.Scalars("train/good")] == [(r["labels"], r["good"]) for r in train]

    # the resolved config as hyperparameters (torch's add_hparams writes them in a subfolder)
    [hp_dir] = [p for p in logdir.iterdir() if p.is_dir() and any(p.glob("events.out.tfevents.*"))]
    hp = EventAccumulator(str(hp_dir))
    hp.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        hp.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    config = json.loads((path / "config.json").read_text())
    assert start.hparams["settings.method"].string_value == "ddpo"
    assert start.hparams["settings.budget_labels"].number_value == 8
    assert start.hparams["sampler.steps"].number_value == config["sampler"]["steps"] == 3
    assert summary["labels"] == 8


@pytest.mark.slow  # one tiny DDPO run (8 labels) and a plain diffusers pipeline loading its LoRA: ~20 s
def test_the_checkpoint_card_names_the_base_model_and_the_lora_still_loads(tiny_world, tmp_path):
    from diffusers import StableDiffusionPipeline
    from huggingface_hub import ModelCard

    path, summary = run(small(tiny_world), out=tmp_path, progress=False)
    ckpt = path / "checkpoints" / "latest"
    text = (ckpt / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["library_name"] == "diffusers"
    assert header["base_model"] == tiny_world.name  # a local folder without a recorded Hub id: its name
    assert header["tags"] == ["lora", "herobench", "hand", "ddpo"]
    assert header["labels_spent"] == 8 and header["herobench_version"]
    # the success of the last evaluation, which comes after the last checkpoint was written
    assert header["success_rate"] == summary["success_end"]["eval"] and header["success_at_labels"] == 8
    assert ModelCard.load(ckpt / "README.md").data.base_model == tiny_world.name  # the Hub's own parser

    pipe = StableDiffusionPipeline.from_pretrained(tiny_world, local_files_only=True, safety_checker=None)
    pipe.load_lora_weights(ckpt / "lora")
    assert any("lora" in n for n, _ in pipe.unet.named_parameters())


def test_a_baseline_checkpoint_card_says_it_holds_no_lora(tiny_world, tmp_path):
    path, _ = run(small(tiny_world, "pretrained"), out=tmp_path, progress=False)
    text = (path / "checkpoints" / "latest" / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["tags"] == ["lora", "herobench", "hand", "pretrained"] and header["labels_spent"] == 0
    assert "holds no LoRA" in text


def test_bench_and_run_pass_log_with_to_every_run(tiny_world, tmp_path):
    pytest.importorskip("tensorboard")
    from click.testing import CliRunner
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_bench import write_grid

    from herobench.cli import main

    grid = write_grid(tmp_path, tiny_world, methods=("pretrained", "enhanced"))
    res = CliRunner().invoke(main, ["bench", str(grid), "--out", str(tmp_path / "grid"), "--no-report",
                                    "--log-with", "tensorboard"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["run", "--task", "hand", "--method", "pretrained", "--budget", "0", "--quiet",
                                    "--model", str(tiny_world), "--set", "eval.n_images=8", "--set", "sampler.steps=3",
                                    "--out", str(tmp_path / "one"), "--log-with", "tensorboard"])
    assert res.exit_code == 0, res.output
    for run_dir in (tmp_path / "grid" / "hand-pretrained-s0", tmp_path / "grid" / "hand-enhanced-s0",
                    tmp_path / "one" / "hand-pretrained-s0"):
        acc = EventAccumulator(str(run_dir / "tensorboard"))
        acc.Reload()
        [row] = [r for r in read_jsonl(run_dir / "evals.jsonl") if r["prompt_set"] == "eval"]
        assert [(e.step, round(e.value, 6)) for e in acc.Scalars("eval/eval/success_rate")] == [
            (0, round(row["success_rate"], 6))]
