"""GRPO (Flow-GRPO / DanceGRPO; docs/FIDELITY.md (GRPO, reward model) has one row per mechanism): group advantages
and the KL term against hand values, the KL in the update against an independent computation with the adapter
disabled, which steps and rows are trained, what one optimizer step changes, shared noise, options, and a run
through the runner that resumes as an uninterrupted run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from fixtures_sd import tiny_sd_fixture  # noqa: F401 (pytest fixture)
from test_regression import BrightnessOracle
from tinysd import build_tiny_sd

from herobench.config import RunSettings, from_dict
from herobench.core.generator import Generator, SamplerConfig
from herobench.core.lora import lora_parameters, reference_policy
from herobench.core.losses import normalize_advantages
from herobench.core.pipeline import load_components
from herobench.errors import ConfigError, HerobenchError
from herobench.harness.runlog import read_jsonl
from herobench.harness.runner import execute, prepare
from herobench.methods import METHODS
from herobench.methods.grpo import GRPOMethod, group_advantages, grpo_loss, grpo_update, step_kl
from herobench.oracles import ORACLES
from herobench.types import Feedback

torch.set_num_threads(1)
STEPS = 4
PROMPTS = ["1 hand", "a cat", "1 hand", "a cat"]


# ------------------------------------------------------------------ advantages and loss (pure)


def test_group_advantages_match_hand_values():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    prompts = ["a", "a", "a", "b", "b", "c"]
    # global std (Flow-GRPO's sample.global_std = True): population std of all six rewards = 0.5
    s = 0.5 + 1e-4
    expected = [1 / 3 / s, -2 / 3 / s, 1 / 3 / s, 0.5 / s, -0.5 / s, 0.0]  # group means 2/3, 1/2, 0
    assert group_advantages(rewards, prompts).tolist() == pytest.approx(expected, rel=1e-6)
    # the group's own std: sqrt(2)/3 for a, 1/2 for b; the single image of c gets 0 / eps = 0
    sa, sb = math.sqrt(2) / 3 + 1e-4, 0.5 + 1e-4
    expected = [1 / 3 / sa, -2 / 3 / sa, 1 / 3 / sa, 0.5 / sb, -0.5 / sb, 0.0]
    assert group_advantages(rewards, prompts, std="group").tolist() == pytest.approx(expected, rel=1e-6)
    # a group with one label for all gets exactly 0 (and is then left out of the update)
    adv = group_advantages(torch.tensor([1.0, 1.0, 0.0, 1.0]), ["a", "a", "b", "b"])
    assert adv[:2].tolist() == [0.0, 0.0] and adv[2] < 0 < adv[3]
    with pytest.raises(ValueError, match="prompts"):
        group_advantages(rewards, prompts[:2])


def test_one_prompt_is_one_group_and_gives_ddpos_batch_advantage():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    grpo = group_advantages(rewards, ["p"] * 5)
    ddpo = normalize_advantages(rewards)  # eps 1e-8 instead of 1e-4: the only difference
    assert torch.allclose(grpo, ddpo, rtol=3e-4) and not torch.equal(grpo, ddpo)


def test_step_kl_is_the_exact_per_element_gaussian_kl_and_the_official_expression():
    mean = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 0.0]]], [[[5.0, 5.0]]]])  # 3×1×1×2
    mean_ref = torch.tensor([[[[0.0, 0.0]]], [[[0.0, 3.0]]], [[[0.0, 0.0]]]])
    std = torch.tensor([0.5, 2.0, 0.0]).reshape(3, 1, 1, 1)
    # by hand: (1 + 4)/2 / (2·0.25) = 5; (0 + 9)/2 / (2·4) = 0.5625; a deterministic step counts 0
    assert step_kl(mean, mean_ref, std).tolist() == pytest.approx([5.0, 0.5625, 0.0])
    # flow_grpo train_sd3.py:895 with the step's std in place of std_dev_t (on the stochastic items)
    official = ((mean - mean_ref) ** 2).mean(dim=(1, 2, 3), keepdim=True) / (2 * std**2)
    assert step_kl(mean, mean_ref, std)[:2].tolist() == pytest.approx(official.flatten()[:2].tolist())
    # = KL(N(μ, σ²) || N(μ_ref, σ²)) of the whole step divided by its D = 2 elements
    exact = torch.distributions.kl_divergence(torch.distributions.Normal(mean[:2], std[:2]),
                                              torch.distributions.Normal(mean_ref[:2], std[:2]))
    assert step_kl(mean, mean_ref, std)[:2].tolist() == pytest.approx((exact.flatten(1).sum(1) / 2).tolist())


def test_grpo_loss_matches_hand_values_and_gradients():
    log_prob = torch.tensor([-1.0, -2.0], requires_grad=True)
    old = torch.tensor([-1.1, -2.0])
    adv = torch.tensor([2.0, -1.0])
    mean = torch.tensor([[[[1.0, 3.0]]], [[[0.0, 0.0]]]], requires_grad=True)
    mean_ref = torch.zeros(2, 1, 1, 2)
    std = torch.tensor([1.0, 1.0]).reshape(2, 1, 1, 1)
    clip, beta = 0.05, 0.1
    r0 = math.exp(0.1)  # item 0: ratio 1.105 > 1 + ε, A > 0 -> the clipped term 2·1.05 is the minimum
    policy = (-min(2 * r0, 2 * 1.05) + 1.0) / 2  # item 1: ratio 1, loss -(-1)·1 = 1
    kl = ((1 + 9) / 2 / 2 + 0.0) / 2
    loss, stats = grpo_loss(log_prob, old, adv, mean, mean_ref, std, clip, beta)
    assert float(loss.detach()) == pytest.approx(policy + beta * kl, rel=1e-6)
    assert float(stats["policy_loss"]) == pytest.approx(policy, rel=1e-6) and float(stats["kl"]) == pytest.approx(kl)
    loss.backward()
    # d/dμ of β·mean_n mean_d (μ - μ_ref)² / 2σ² = β (μ - μ_ref) / (N·D·σ²)
    assert mean.grad.flatten().tolist() == pytest.approx([beta * 1 / 4, beta * 3 / 4, 0.0, 0.0])
    assert log_prob.grad.tolist() == pytest.approx([0.0, 0.5])  # the clipped item gives no gradient


# ------------------------------------------------------------------ the update on a tiny SD


def make_gen(path) -> Generator:
    return Generator(load_components(path), SamplerConfig(steps=STEPS))


def setup_grpo(path, **options) -> GRPOMethod:
    method = METHODS.get("grpo")()
    method.setup(make_gen(path), options, seed=0)
    return method


def rollout_for(method, seed=0):
    rng = torch.Generator().manual_seed(seed)
    noise = method.init_noise(len(PROMPTS), method.gen.latent_shape, rng)
    return method.gen.sample(PROMPTS, init_noise=noise, generator=rng)


def snapshot(unet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unet.named_parameters()}


def test_listed_with_its_paper():
    from herobench.catalog import listing

    line = dict(listing("methods")["methods"])["grpo"]
    assert "Flow-GRPO, Liu et al. 2025" in line and "protocol scalar" in line


def test_defaults_are_the_official_configs(tiny_sd_dir):
    m = setup_grpo(tiny_sd_dir)
    o = m.options
    assert (o.lr, o.beta, o.clip_range, o.adv_clip, o.max_grad_norm) == (3e-4, 0.04, 1e-4, 5.0, 1.0)
    assert (o.timestep_fraction, o.std, o.steps_per_batch, o.shared_noise) == (0.99, "global", 2, False)
    assert m.pg.n_train_timesteps == 3 and m.pg.cfg_in_training  # int(4 · 0.99): every step but the last
    assert m.options.train_timesteps(20) == 19 and m.options.train_timesteps(10) == 9
    assert m.protocol == "scalar" and m.groups(4) is None


def test_learn_trains_the_first_steps_of_mixed_groups_and_changes_only_the_lora(tiny_sd_dir):
    m = setup_grpo(tiny_sd_dir)
    rollout = rollout_for(m)
    seen: list[tuple[list[int], list[int]]] = []
    real = m.gen._stored_steps

    def record(r, step_idx, batch_idx, use_cfg):
        if torch.is_grad_enabled():  # the trained items (the diagnostics' passes run without gradients)
            seen.append((torch.as_tensor(batch_idx).tolist(), torch.as_tensor(step_idx).flatten().tolist()))
        return real(r, step_idx, batch_idx, use_cfg)

    m.gen._stored_steps = record
    unet = m.gen.components.unet
    before = snapshot(unet)
    # "1 hand" (rows 0, 2) all good: advantage 0, left out; "a cat" (rows 1, 3) mixed
    s = m.learn(rollout, Feedback(good=(True, True, True, False)), torch.Generator().manual_seed(1))
    assert (s["n_groups"], s["n_groups_mixed"], s["pg_skipped"]) == (2.0, 1.0, 0.0)
    assert (s["pg_n_rows"], s["pg_n_items"], s["pg_n_optimizer_steps"]) == (2.0, 6.0, 2.0)
    trained = {(r, st) for rows, steps in seen for r, st in zip(rows, steps)}
    assert trained == {(r, st) for r in (1, 3) for st in (0, 1, 2)}  # never the last step, never rows 0, 2
    changed = {k for k, v in snapshot(unet).items() if not torch.equal(before[k], v)}
    assert changed and all("lora_" in k for k in changed)
    # every group uniform: no signal, nothing changes
    before = snapshot(unet)
    s = m.learn(rollout, Feedback(good=(True, False, True, False)), torch.Generator())
    assert s["pg_skipped"] == 1.0 and all(torch.equal(before[k], v) for k, v in snapshot(unet).items())


def test_the_kl_term_is_to_the_adapter_disabled_unet(tiny_sd_dir):
    m = setup_grpo(tiny_sd_dir, lr=3e-2, steps_per_batch=1)
    rollout = rollout_for(m)
    fb = Feedback(good=(True, False, False, True))
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), PROMPTS)
    # the adapter starts as a no-op: the first update's items see policy = reference
    s = grpo_update(m.gen, rollout, adv, m.optimizer, m.pg, torch.Generator().manual_seed(1), beta=0.04,
                    steps_per_batch=1)
    assert s["kl"] == 0.0 and s["n_optimizer_steps"] == 1.0
    # after it, the KL term the update reports equals one computed here: the current UNet's step means vs the
    # adapter-disabled UNet's, with the DDIM step std, over the trained (row, step) items
    gen, k = m.gen, m.pg.n_train_timesteps
    rows = torch.arange(4).repeat_interleave(k)
    steps = torch.arange(k).repeat(4)
    with torch.no_grad():
        mean, _ = gen.step_means(rollout, steps[:, None], batch_idx=rows)
        with reference_policy(gen.components.unet):
            mean_ref, _ = gen.step_means(rollout, steps[:, None], batch_idx=rows)
    # σ_t(η) of DDIM eq. (16), from the scheduler's ᾱ
    acp = gen.scheduler.alphas_cumprod.double()
    t = rollout.timesteps[steps]
    prev = t - gen.scheduler.config.num_train_timesteps // STEPS
    a_t = acp[t]
    a_prev = torch.where(prev >= 0, acp[prev.clamp(min=0)], gen.scheduler.final_alpha_cumprod.double())
    var = gen.sampler.eta**2 * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    by_hand = ((mean - mean_ref) ** 2).mean(dim=(1, 2, 3)).double() / (2 * var)
    assert float(by_hand.mean()) > 0
    s = m.learn(rollout, fb, torch.Generator().manual_seed(2))
    assert s["pg_kl"] == pytest.approx(float(by_hand.mean()), rel=1e-4)


def test_beta_changes_the_update(tiny_sd_dir):
    weights = {}
    for beta in (0.0, 1e4):
        m = setup_grpo(tiny_sd_dir, lr=3e-2, beta=beta)
        rollout = rollout_for(m)
        for it in range(2):  # the second update sees a policy away from the reference
            m.learn(rollout, Feedback(good=(True, False, False, True)), torch.Generator().manual_seed(it))
        weights[beta] = torch.cat([p.detach().flatten() for p in lora_parameters(m.gen.components.unet)])
    assert not torch.allclose(weights[0.0], weights[1e4])


def test_shared_noise_is_one_draw_for_the_batch(tiny_sd_dir):
    shape = (4, 16, 16)
    plain = setup_grpo(tiny_sd_dir)
    x = plain.init_noise(3, shape, torch.Generator().manual_seed(5))
    assert torch.equal(x, torch.randn(3, *shape, generator=torch.Generator().manual_seed(5)))
    shared = setup_grpo(tiny_sd_dir, shared_noise=True)
    x = shared.init_noise(3, shape, torch.Generator().manual_seed(5))
    first = torch.randn(1, *shape, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(row, first[0]) for row in x)


def test_options_are_validated(tiny_sd_dir):
    method = METHODS.get("grpo")()
    with pytest.raises(ConfigError, match="method_options.*kl_beta"):
        method.resolve_options({"kl_beta": 0.1})
    with pytest.raises(ConfigError, match="method_options.std"):
        method.resolve_options({"std": "batch"})
    with pytest.raises(ConfigError, match="method_options.beta"):
        method.resolve_options({"beta": -1.0})
    with pytest.raises(ConfigError, match="timestep_fraction"):
        METHODS.get("grpo")().setup(Generator(load_components(tiny_sd_dir), SamplerConfig(steps=1)), {}, 0)
    with pytest.raises(ConfigError, match="lora_targets"):
        method.resolve_options({"lora_targets": []})


def test_state_round_trip_and_options_check(tiny_sd_dir):
    m = setup_grpo(tiny_sd_dir)
    m.learn(rollout_for(m), Feedback(good=(True, False, False, True)), torch.Generator().manual_seed(1))
    state = m.state_dict()
    other = setup_grpo(tiny_sd_dir)
    other.load_state_dict(state)
    assert other.optimizer.state_dict()["state"].keys() == m.optimizer.state_dict()["state"].keys()
    with pytest.raises(HerobenchError, match="options"):
        setup_grpo(tiny_sd_dir, beta=0.01).load_state_dict(state)


# ------------------------------------------------------------------ the run loop: train.jsonl and resume


@pytest.fixture(scope="module")
def bright_world(tmp_path_factory) -> tuple[Path, float]:
    """A tiny random model and a brightness threshold between two of its images (mixed labels)."""
    path = build_tiny_sd(tmp_path_factory.mktemp("grpoworld"), prediction_type="v_prediction", seed=3)
    (path / "herobench.json").write_text(json.dumps({"backend": "tiny-test", "sampler": {"steps": 3}}))
    gen = Generator(load_components(path), SamplerConfig(steps=3, guidance_scale=2.0))
    means = gen.sample(["1 hand"] * 16, generator=torch.Generator().manual_seed(0)).images.mean(dim=(1, 2, 3))
    return path, float(means.sort().values[7:9].mean())


def _settings(model: Path) -> RunSettings:
    return from_dict(RunSettings, {
        "task": "hand", "method": "grpo", "budget_labels": 12, "batch_size": 4, "model": str(model),
        "oracle": "brightness", "sampler": {"steps": 3, "guidance_scale": 2.0},
        "eval": {"n_images": 4, "every_labels": 8, "batch_size": 4},
        "method_options": {"lr": 1e-2},
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
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    trained = [r for r in rows if r["pg_skipped"] == 0.0]
    assert len(trained) >= 2, "fewer than two batches with mixed labels: the threshold does not split the images"
    for r in trained:  # one prompt, one group: int(3 · 0.99) = 2 steps of every image, 2 optimizer steps
        assert r["n_groups"] == 1.0 and r["pg_n_items"] == 2 * r["pg_n_rows"] and r["pg_n_optimizer_steps"] == 2
    # the same run, killed while learning from iteration 3 (after two trained iterations), then resumed
    real_learn = GRPOMethod.learn
    calls = []

    def crash_on_third(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise _Crash
        return real_learn(self, *args)

    monkeypatch.setattr(GRPOMethod, "learn", crash_on_third)
    crashed = prepare(_settings(model), out=tmp_path / "crash", progress=False)
    with pytest.raises(_Crash):
        execute(crashed)
    crashed.close()
    monkeypatch.setattr(GRPOMethod, "learn", real_learn)
    resumed = prepare(None, resume=crashed.dir.path, progress=False)
    execute(resumed)
    assert torch.equal(_weights(resumed), _weights(ref))
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith(("seconds", "time"))} for r in rs]  # noqa: E731
    assert strip(read_jsonl(resumed.dir.train_log)) == strip(rows)
    ref.close()
    resumed.close()
