"""The run loop (``prepare`` + ``execute``, what ``herobench run`` calls) under two processes over gloo gives
the one-process run up to float noise, and only the main process writes the run folder.

The two processes are this file run as a script (``test_data_parallel.launch``: the environment
``accelerate launch --multi_gpu --num_processes 2`` gives them); the runner sees ``WORLD_SIZE = 2`` and
builds its own ``Accelerator``. A test oracle (mean brightness above the median of the first batch's
images, so the labels are mixed) makes the labels depend on the images. Batches of 5 images split 3/2.
A second launch resumes, with two processes, a HERO run the first stopped after iteration 2 was rated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from test_data_parallel import WORLD, launch
from test_regression import BrightnessOracle
from tinysd import build_tiny_sd

from herobench.config import RunSettings, from_dict
from herobench.core.lora import lora_parameters
from herobench.harness.runlog import read_jsonl
from herobench.harness.runner import execute, prepare
from herobench.methods.hero import HeroMethod
from herobench.oracles import ORACLES

pytestmark = pytest.mark.slow  # two launches of two processes, each importing torch + diffusers: ~2 min

METHODS = ("hero", "d3po", "dreambooth")
NOISY = ("score", "reason", "image_sha256", "time", "t", "reasons", "mean_score", "chain", "scores")  # float noise shows here


def _oracle(threshold: float):
    return lambda task, profile="default", **options: BrightnessOracle(threshold)


def _settings(model: Path, method: str) -> RunSettings:
    options = {"hero": {"encoder_epochs": 3}, "dreambooth": {"steps_per_iteration": 3, "train_batch": 3}}
    return from_dict(RunSettings, {
        "task": "hand", "method": method, "budget_labels": 10, "batch_size": 5, "model": str(model),
        "oracle": "brightness", "sampler": {"steps": 3, "guidance_scale": 2.0},
        "eval": {"n_images": 8, "every_labels": 5, "batch_size": 8}, "method_options": options.get(method, {}),
    })


def _run(model: Path, method: str, out: Path) -> torch.Tensor:
    """One run, on one thread like each launched process (``launch`` sets ``OMP_NUM_THREADS=1``: results depend
    on the thread count, so a reference on the pytest process's default threads would differ by float noise of
    its own); returns its LoRA weights (flattened) before and after: ``2×P``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = prepare(_settings(model, method), out=out, progress=False)
        weights = lambda: torch.cat([p.detach().reshape(-1) for p in lora_parameters(run.gen.components.unet)])  # noqa: E731
        start = weights().clone()
        execute(run)
        return torch.stack([start, weights()])
    finally:
        torch.set_num_threads(threads)


class _Crash(Exception):
    pass


def _crash_on_second_learn(learn):
    calls = []

    def wrapped(self, *args):
        calls.append(1)
        if len(calls) == 2:  # iteration 2's labels are in the ledger; nothing learned or checkpointed yet
            raise _Crash
        return learn(self, *args)

    return wrapped


def _worker(rank: int, folder: Path) -> None:
    case = json.loads((folder / "case.json").read_text())
    ORACLES._factories["brightness"] = _oracle(case["threshold"])
    if (folder / "resume").exists():
        run = prepare(None, resume=folder / "crash" / "hand-hero-s0", progress=False)
        execute(run)
        weights = torch.cat([p.detach().reshape(-1) for p in lora_parameters(run.gen.components.unet)])
        torch.save(weights, folder / f"rank{rank}-resumed.pt")
        return
    for method in METHODS:
        torch.save(_run(Path(case["model"]), method, folder / "two"), folder / f"rank{rank}-{method}.pt")
    HeroMethod.learn = _crash_on_second_learn(HeroMethod.learn)
    with pytest.raises(_Crash):
        _run(Path(case["model"]), "hero", folder / "crash")


def _quiet(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in NOISY and not k.startswith("seconds")} for r in rows]


@pytest.fixture(scope="module")
def bright_model(tmp_path_factory) -> tuple[Path, float]:
    from herobench.core.generator import Generator, SamplerConfig
    from herobench.core.pipeline import load_components

    path = build_tiny_sd(tmp_path_factory.mktemp("dpworld"), prediction_type="v_prediction", seed=3)
    (path / "herobench.json").write_text(json.dumps({"backend": "tiny-test", "sampler": {"steps": 3}}))
    gen = Generator(load_components(path), SamplerConfig(steps=3, guidance_scale=2.0))
    means = gen.sample(["1 hand"] * 16, generator=torch.Generator().manual_seed(0)).images.mean(dim=(1, 2, 3))
    middle = means.sort().values[7:9]
    return path, float(middle.mean())  # between two images: no image sits on the threshold


@pytest.fixture(scope="module")
def two_processes(bright_model, tmp_path_factory) -> Path:
    """The runs of two processes: ``two/`` (every method) and ``crash/`` (HERO, stopped in iteration 2)."""
    model, threshold = bright_model
    folder = tmp_path_factory.mktemp("dp")
    (folder / "case.json").write_text(json.dumps({"model": str(model), "threshold": threshold}))
    launch(__file__, folder)
    return folder


def test_two_process_runs_give_the_one_process_runs(bright_model, two_processes, tmp_path, monkeypatch):
    model, threshold = bright_model
    monkeypatch.setitem(ORACLES._factories, "brightness", _oracle(threshold))
    for method in METHODS:
        one = _run(model, method, tmp_path / "one")
        a, b = (tmp_path / "one" / f"hand-{method}-s0"), (two_processes / "two" / f"hand-{method}-s0")
        ranks = [torch.load(two_processes / f"rank{r}-{method}.pt") for r in range(WORLD)]
        assert torch.equal(ranks[0], ranks[1]) and torch.equal(ranks[0][0], one[0]), method  # same model everywhere
        diff, moved = (ranks[0][1] - one[1]).abs(), float((one[1] - one[0]).abs().max())
        print(f"{method}: LoRA weights moved {moved:.2e}; two processes vs one {float(diff.max()):.2e}")
        # float noise: 1e-3 of the largest change (AdamW's lr·m/(√v + ε) turns float noise in an entry's tiny
        # gradient into ~1 % of that entry's change: measured 1.8e-4 for D3PO), plus a few float32 ulps of
        # the weight itself (LoRA A is O(1)); a wrong update is off by the order of the change itself
        assert moved > 0 and bool((diff <= 1e-3 * moved + 4 * torch.finfo().eps * one[1].abs()).all()), method
        labels_a, labels_b = read_jsonl(a / "labels.jsonl"), read_jsonl(b / "labels.jsonl")
        assert sum(r.get("good", False) for r in labels_a) not in (0, 10), method  # mixed labels: a real test
        assert _quiet(labels_b) == _quiet(labels_a), method  # same good/bad, best picks, pairs, groups
        evals_a, evals_b = read_jsonl(a / "evals.jsonl"), read_jsonl(b / "evals.jsonl")
        assert _quiet(evals_b) == _quiet(evals_a), method  # same success rates at the same points
        assert [r["mean_score"] for r in evals_b] == pytest.approx([r["mean_score"] for r in evals_a], abs=1e-6)
        train_a, train_b = _quiet(read_jsonl(a / "train.jsonl")), _quiet(read_jsonl(b / "train.jsonl"))
        assert [r.keys() for r in train_b] == [r.keys() for r in train_a]
        for ra, rb in zip(train_a, train_b):
            for key, value in ra.items():
                assert rb[key] == pytest.approx(value, rel=1e-3, abs=1e-6), (method, key)
        assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in a.iterdir())
    # one folder per run: the second process wrote none of its own
    assert sorted(p.name for p in (two_processes / "two").iterdir()) == sorted(f"hand-{m}-s0" for m in METHODS)


def test_two_processes_resume_a_crashed_run(two_processes):
    """Resumed by two processes, a run stopped after iteration 2 was rated ends as the uninterrupted one:
    the recorded labels are replayed (never asked twice), and every process loaded the checkpoint."""
    crashed, full = two_processes / "crash" / "hand-hero-s0", two_processes / "two" / "hand-hero-s0"
    assert [r["iteration"] for r in read_jsonl(crashed / "train.jsonl")] == [1]
    (two_processes / "resume").touch()
    launch(__file__, two_processes)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time", "t")} for r in rows]  # noqa: E731
    for name in ("labels.jsonl", "evals.jsonl"):  # the same process count: the same bits, hashes included
        assert strip(read_jsonl(crashed / name)) == strip(read_jsonl(full / name)), name
    uninterrupted = torch.load(two_processes / "rank0-hero.pt")[1]
    for rank in range(WORLD):
        assert torch.equal(torch.load(two_processes / f"rank{rank}-resumed.pt"), uninterrupted)


if __name__ == "__main__":
    _worker(int(sys.argv[1]), Path(sys.argv[2]))
