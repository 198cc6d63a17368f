"""The learned-reward-model baseline (docs/FIDELITY.md (GRPO, reward model)): the classifier's loss against hand
values, its fit, the replay buffer of every label, the reward and advantages handed to the PPO update, what one
update changes, options, state, and a run through the runner that resumes as an uninterrupted run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from fixtures_sd import tiny_sd_fixture  # noqa: F401 (pytest fixture)
from test_regression import BrightnessOracle
from tinysd import build_tiny_sd

import herobench.methods.reward_model as rm
from herobench.config import RunSettings, from_dict
from herobench.core.generator import Generator, SamplerConfig
from herobench.core.lora import lora_parameters
from herobench.core.pipeline import load_components
from herobench.errors import ConfigError, HerobenchError
from herobench.harness.runlog import read_jsonl
from herobench.harness.runner import execute, prepare
from herobench.methods import METHODS
from herobench.methods.hero_repr import HeroEncoder
from herobench.methods.reward_model import (
    RewardModelMethod,
    build_classifier,
    classifier_loss,
    fit_classifier,
)
from herobench.oracles import ORACLES
from herobench.types import Feedback

torch.set_num_threads(1)
PROMPTS = ["1 hand", "a cat", "1 hand", "a cat"]
GOOD = (True, False, False, True)
FAST = {"classifier_steps": 5}


def test_classifier_loss_is_binary_cross_entropy_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.0])
    good = torch.tensor([True, False, True])
    # -log σ(2), -log(1 - σ(-1)) = -log σ(1), -log σ(0)
    by_hand = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0)) + math.log(2.0)) / 3
    assert float(classifier_loss(logits, good)) == pytest.approx(by_hand, rel=1e-6)


def test_the_classifier_is_heros_encoder_and_a_logit():
    model = build_classifier((4, 16, 16), 0, seed=3)
    assert isinstance(model.encoder, HeroEncoder) and model.encoder.feature_dim == 32 * 2 * 2
    assert build_classifier((4, 64, 64), 0, seed=3).encoder.feature_dim == 2048  # SD-1.5: HERO's 2048
    x = torch.randn(5, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    by_hand = model.logit(torch.relu(model.encoder.fc(model.encoder.convs(x).flatten(1)))).squeeze(1)
    assert torch.allclose(model(x), by_hand)
    assert torch.equal(build_classifier((4, 16, 16), 0, seed=3)(x), model(x))  # seeded


def test_fit_learns_a_separable_rule_on_the_whole_buffer_and_on_minibatches():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, 16, 16, generator=g)
    good = x[:, 0].mean(dim=(1, 2)) > 0
    x[good, 0] += 1.0  # separable in channel 0
    for batch in (64, 16):  # the whole buffer per step; 16 random rows per step
        model = build_classifier((4, 16, 16), 0, seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        s = fit_classifier(model, opt, x, good, steps=60, batch=batch, rng=torch.Generator().manual_seed(1))
        assert s["rm_loss_end"] < 0.5 * s["rm_loss_start"] and s["rm_accuracy"] == 1.0
    # the minibatches are drawn with the rng: the same rng, the same fit; another rng, another fit
    fits = []
    for seed in (7, 7, 8):
        model = build_classifier((4, 16, 16), 0, seed=0)
        fit_classifier(model, torch.optim.Adam(model.parameters(), lr=1e-3), x, good, 5, 16,
                       torch.Generator().manual_seed(seed))
        fits.append(model(x).detach())
    assert torch.equal(fits[0], fits[1]) and not torch.equal(fits[0], fits[2])


# ------------------------------------------------------------------ the method on a tiny SD


def setup_rm(path, **options) -> RewardModelMethod:
    method = METHODS.get("reward-model")()
    method.setup(Generator(load_components(path), SamplerConfig(steps=4)), {**FAST, **options}, seed=0)
    return method


def rollout_for(method, seed=0):
    rng = torch.Generator().manual_seed(seed)
    return method.gen.sample(PROMPTS, init_noise=method.init_noise(4, method.gen.latent_shape, rng), generator=rng)


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_listed_with_its_paper():
    from herobench.catalog import listing

    line = dict(listing("methods")["methods"])["reward-model"]
    assert "Lee et al. 2023" in line and "protocol scalar" in line


def test_defaults(tiny_sd_dir):
    m = METHODS.get("reward-model")()
    m.setup(Generator(load_components(tiny_sd_dir), SamplerConfig(steps=4)), {}, seed=0)
    o = m.options
    assert (o.classifier_lr, o.classifier_steps, o.classifier_batch) == (1e-4, 500, 64)
    # HERO's PPO settings
    assert (m.pg.lr, m.pg.n_train_timesteps, m.pg.clip_range, m.pg.adv_clip, m.pg.samples_per_step) == (
        1e-3, 5, 1e-4, 5.0, 8)
    assert m.protocol == "scalar" and m.trains


def test_buffer_keeps_every_label_and_one_class_trains_nothing(tiny_sd_dir):
    m = setup_rm(tiny_sd_dir)
    rollout = rollout_for(m)
    unet_before, clf_before = snapshot(m.gen.components.unet), snapshot(m.classifier)
    s = m.learn(rollout, Feedback(good=(False,) * 4), torch.Generator().manual_seed(1))
    assert (s["rm_trained"], s["pg_skipped"], s["rm_buffer"]) == (0.0, 1.0, 4.0)
    assert all(torch.equal(unet_before[k], v) for k, v in snapshot(m.gen.components.unet).items())
    assert all(torch.equal(clf_before[k], v) for k, v in snapshot(m.classifier).items())
    # the next batch brings the second class: the classifier is fit on all 8 labels
    s = m.learn(rollout, Feedback(good=GOOD), torch.Generator().manual_seed(2))
    assert (s["rm_trained"], s["rm_buffer"]) == (1.0, 8.0) and "rm_accuracy_unseen" not in s
    assert m.buffer_latents.dtype == torch.float32 and m.buffer_latents.device.type == "cpu"
    assert torch.equal(m.buffer_latents, torch.cat([rollout.last_step_input] * 2).float())
    assert m.buffer_good.tolist() == [False] * 4 + list(GOOD)
    s = m.learn(rollout, Feedback(good=GOOD), torch.Generator().manual_seed(3))
    assert s["rm_buffer"] == 12.0 and 0.0 <= s["rm_accuracy_unseen"] <= 1.0


def test_the_reward_is_the_fit_classifiers_probability_and_advantages_are_batch_normalised(tiny_sd_dir, monkeypatch):
    m = setup_rm(tiny_sd_dir, classifier_lr=1e-3, classifier_steps=20)
    rollout = rollout_for(m)
    seen = {}
    real = rm.ppo_update

    def spy(gen, r, advantages, *args, **kwargs):
        seen["advantages"] = advantages.clone()
        return real(gen, r, advantages, *args, **kwargs)

    monkeypatch.setattr(rm, "ppo_update", spy)
    unet_before, clf_before = snapshot(m.gen.components.unet), snapshot(m.classifier)
    s = m.learn(rollout, Feedback(good=GOOD), torch.Generator().manual_seed(1))
    assert s["rm_trained"] == 1.0 and s["pg_skipped"] == 0.0 and s["rm_loss_end"] < s["rm_loss_start"]
    assert any(not torch.equal(clf_before[k], v) for k, v in snapshot(m.classifier).items())
    # independently: σ of the fit classifier's logits on the last-step inputs, standardised over the batch
    with torch.no_grad():
        p = torch.sigmoid(m.classifier(rollout.last_step_input.float()))
    expected = (p - p.mean()) / (p.std(unbiased=False) + 1e-8)
    assert torch.allclose(seen["advantages"], expected.clamp(-5, 5), atol=1e-5)
    assert not torch.allclose(seen["advantages"], expected.sign(), atol=1e-4)  # not standardised labels
    assert s["reward_mean"] == pytest.approx(float(p.mean()), rel=1e-6)
    assert s["reward_good_minus_bad"] > 0  # it learned to separate its training labels
    changed = {k for k, v in snapshot(m.gen.components.unet).items() if not torch.equal(unet_before[k], v)}
    assert changed and all("lora_" in k for k in changed)


def test_options_are_validated():
    method = METHODS.get("reward-model")()
    with pytest.raises(ConfigError, match="method_options.*encoder_lr"):
        method.resolve_options({"encoder_lr": 1e-3})
    with pytest.raises(ConfigError, match="method_options.classifier_lr"):
        method.resolve_options({"classifier_lr": 0.0})
    with pytest.raises(ConfigError, match="method_options.feature_dim"):
        method.resolve_options({"feature_dim": 2})
    with pytest.raises(ConfigError, match="method_options.n_train_timesteps"):
        method.resolve_options({"n_train_timesteps": 0})


def test_state_round_trip(tiny_sd_dir):
    m = setup_rm(tiny_sd_dir)
    rollout = rollout_for(m)
    m.learn(rollout, Feedback(good=GOOD), torch.Generator().manual_seed(1))
    state = m.state_dict()
    other = setup_rm(tiny_sd_dir)
    assert not torch.equal(other.rewards(rollout.last_step_input), m.rewards(rollout.last_step_input))
    other.load_state_dict(state)
    assert torch.equal(other.rewards(rollout.last_step_input), m.rewards(rollout.last_step_input))
    assert torch.equal(other.buffer_latents, m.buffer_latents) and torch.equal(other.buffer_good, m.buffer_good)
    assert other.classifier_optimizer.state_dict()["state"].keys() == m.classifier_optimizer.state_dict()["state"].keys()
    with pytest.raises(HerobenchError, match="options"):
        setup_rm(tiny_sd_dir, classifier_steps=6).load_state_dict(state)


# ------------------------------------------------------------------ the run loop: train.jsonl and resume


@pytest.fixture(scope="module")
def bright_world(tmp_path_factory) -> tuple[Path, float]:
    """A tiny random model and a brightness threshold between two of its images (mixed labels)."""
    path = build_tiny_sd(tmp_path_factory.mktemp("rmworld"), prediction_type="v_prediction", seed=3)
    (path / "herobench.json").write_text(json.dumps({"backend": "tiny-test", "sampler": {"steps": 3}}))
    gen = Generator(load_components(path), SamplerConfig(steps=3, guidance_scale=2.0))
    means = gen.sample(["1 hand"] * 16, generator=torch.Generator().manual_seed(0)).images.mean(dim=(1, 2, 3))
    return path, float(means.sort().values[7:9].mean())


def _settings(model: Path) -> RunSettings:
    return from_dict(RunSettings, {
        "task": "hand", "method": "reward-model", "budget_labels": 12, "batch_size": 4, "model": str(model),
        "oracle": "brightness", "sampler": {"steps": 3, "guidance_scale": 2.0},
        "eval": {"n_images": 4, "every_labels": 8, "batch_size": 4},
        "method_options": {"classifier_steps": 10, "classifier_batch": 6, "lr": 1e-2},
    })


def _weights(run) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in lora_parameters(run.gen.components.unet)]).clone()


class _Crash(Exception):
    pass


def test_run_through_the_runner_and_resume_equals_an_uninterrupted_run(bright_world, tmp_path, monkeypatch):
    model, threshold = bright_world
    monkeypatch.setitem(ORACLES._factories, "brightness", lambda task, profile="default": BrightnessOracle(threshold))
    ref = prepare(_settings(model), out=tmp_path / "ref", progress=False)
    execute(ref)
    rows = read_jsonl(ref.dir.train_log)
    assert [r["iteration"] for r in rows] == [1, 2, 3] and [r["rm_buffer"] for r in rows] == [4.0, 8.0, 12.0]
    assert rows[-1]["rm_trained"] == 1.0, "the threshold does not split the images"
    # the same run, killed while learning from iteration 3, then resumed: buffer (8 rows > the classifier's
    # batch of 6, so its minibatches are drawn), classifier and optimizers come from the checkpoint
    real_learn = RewardModelMethod.learn
    calls = []

    def crash_on_third(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise _Crash
        return real_learn(self, *args)

    monkeypatch.setattr(RewardModelMethod, "learn", crash_on_third)
    crashed = prepare(_settings(model), out=tmp_path / "crash", progress=False)
    with pytest.raises(_Crash):
        execute(crashed)
    crashed.close()
    monkeypatch.setattr(RewardModelMethod, "learn", real_learn)
    resumed = prepare(None, resume=crashed.dir.path, progress=False)
    execute(resumed)
    assert torch.equal(_weights(resumed), _weights(ref))
    assert torch.equal(resumed.method.buffer_latents, ref.method.buffer_latents)
    clf_ref, clf_res = ref.method.classifier.state_dict(), resumed.method.classifier.state_dict()
    assert all(torch.equal(clf_ref[k], clf_res[k]) for k in clf_ref)
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith(("seconds", "time"))} for r in rs]  # noqa: E731
    assert strip(read_jsonl(resumed.dir.train_log)) == strip(rows)
    ref.close()
    resumed.close()
