"""ppo_update / dpo_update on a tiny SD: what changes, in which direction, reproducibly."""

import math

import pytest
import torch
from fixtures_sd import PROMPTS, STEPS, make_generator, seeded, tiny_sd_fixture  # noqa: F401

from herobench.core.lora import add_lora, lora_parameters
from herobench.core.policy_gradient import PGConfig, dpo_update, make_optimizer, ppo_update
from herobench.errors import ConfigError


def setup(path, lr=1e-3, seed=0):
    gen = make_generator(path)
    params = add_lora(gen.components.unet, seed=0)
    rollout = gen.sample(PROMPTS, generator=seeded(seed))
    return gen, params, rollout, make_optimizer(params, lr)


def snapshot(gen):
    c = gen.components
    return {
        f"{name}.{k}": v.detach().clone()
        for name, m in (("unet", c.unet), ("vae", c.vae), ("text_encoder", c.text_encoder))
        for k, v in m.state_dict().items()
    }


def total_log_prob(gen, rollout):
    with torch.no_grad():
        return gen.step_log_prob(rollout, torch.arange(STEPS)).sum(dim=1)


def test_ppo_update_changes_only_lora(tiny_sd_dir):
    gen, params, rollout, opt = setup(tiny_sd_dir)
    before = snapshot(gen)
    stats = ppo_update(gen, rollout, torch.tensor([1.0, -1.0, 0.5]), opt, PGConfig(), seeded(0))
    after = snapshot(gen)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".lora_" in k for k in changed)
    lora_b = [k for k in before if ".lora_B." in k]
    assert all(before[k].abs().sum() == 0 and after[k].abs().sum() > 0 for k in lora_b)
    assert stats["n_optimizer_steps"] == 1 and stats["n_items"] == 3 * 5
    assert stats["grad_norm"] > 0 and math.isfinite(stats["loss"])
    # one optimizer step after accumulating: every item saw ratio 1 -> nothing clipped, no KL
    assert stats["clipfrac"] == 0.0 and stats["approx_kl"] < 1e-10


def test_ppo_update_moves_log_probs_with_the_advantage(tiny_sd_dir):
    gen, _, rollout, opt = setup(tiny_sd_dir, lr=1e-4)
    adv = torch.tensor([1.0, -1.0, 0.0])
    start = total_log_prob(gen, rollout)
    ppo_update(gen, rollout, adv, opt, PGConfig(n_train_timesteps=STEPS, clip_range=0.2), seeded(0))
    delta = total_log_prob(gen, rollout) - start
    assert delta[0] > 0 and delta[1] < 0  # more likely where the advantage is positive


def test_ppo_update_is_reproducible_and_micro_batch_invariant(tiny_sd_dir):
    results = []
    for mb in (1, 16):
        gen, params, rollout, opt = setup(tiny_sd_dir)
        stats = ppo_update(
            gen, rollout, torch.tensor([1.0, -1.0, 0.5]), opt, PGConfig(train_micro_batch=mb), seeded(7)
        )
        results.append(([p.detach().clone() for p in params], stats))
    for params, stats in results[1:]:
        for a, b in zip(params, results[0][0]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        assert stats["loss"] == pytest.approx(results[0][1]["loss"], abs=1e-6)
    gen, params, rollout, opt = setup(tiny_sd_dir)
    ppo_update(gen, rollout, torch.tensor([1.0, -1.0, 0.5]), opt, PGConfig(train_micro_batch=1), seeded(7))
    assert all(torch.equal(a, b) for a, b in zip(params, results[0][0]))


def test_ppo_update_with_accelerator_matches_plain(tiny_sd_dir):
    from accelerate import Accelerator

    outs = []
    for acc in (None, Accelerator(cpu=True)):
        gen, params, rollout, opt = setup(tiny_sd_dir)
        ppo_update(gen, rollout, torch.tensor([1.0, -1.0, 0.5]), opt, PGConfig(), seeded(1), accelerator=acc)
        outs.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_inner_epochs_and_clipping(tiny_sd_dir):
    gen, _, rollout, opt = setup(tiny_sd_dir, lr=1e-2)
    stats = ppo_update(gen, rollout, torch.tensor([1.0, -1.0, 0.5]), opt, PGConfig(inner_epochs=3), seeded(0))
    assert stats["n_optimizer_steps"] == 3
    # after the first step the policy differs from the sampling one: ratios leave 1 ± 1e-4
    assert stats["clipfrac"] > 0 and stats["approx_kl"] > 0


def test_dpo_update_prefers_the_winner(tiny_sd_dir):
    gen, params, rollout, opt = setup(tiny_sd_dir, lr=1e-4)
    before = snapshot(gen)
    cfg = PGConfig(n_train_timesteps=STEPS)
    start = total_log_prob(gen, rollout)
    stats = dpo_update(gen, rollout, [(0, 1)], opt, cfg, seeded(0))
    # reference = sampling-time log-probs = current policy before the step: loss log 2, margin 0
    assert stats["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert stats["margin"] == pytest.approx(0.0, abs=1e-5)
    assert stats["n_pairs"] == 1 and stats["n_items"] == STEPS
    delta = total_log_prob(gen, rollout) - start
    assert delta[0] - delta[1] > 0
    after = snapshot(gen)
    assert all(".lora_" in k for k in before if not torch.equal(before[k], after[k]))
    # the next update sees a positive margin and a loss below log 2
    again = dpo_update(gen, rollout, [(0, 1)], opt, cfg, seeded(1))
    assert again["margin"] > 0 and again["loss"] < math.log(2)


def test_dpo_update_edge_cases(tiny_sd_dir):
    gen, params, rollout, opt = setup(tiny_sd_dir)
    before = [p.detach().clone() for p in params]
    stats = dpo_update(gen, rollout, [], opt, PGConfig(), seeded(0))
    assert stats["n_pairs"] == 0 and all(torch.equal(a, b) for a, b in zip(before, params))
    with pytest.raises(ValueError, match="out of range"):
        dpo_update(gen, rollout, [(0, 3)], opt, PGConfig(), seeded(0))
    clipped = dpo_update(gen, rollout, [(0, 1), (2, 1)], opt, PGConfig(), seeded(0), ratio_clip=0.2)
    assert clipped["n_pairs"] == 2 and clipped["loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_pg_config_validation_and_optimizer():
    with pytest.raises(ConfigError, match="n_train_timesteps"):
        PGConfig(n_train_timesteps=0)
    with pytest.raises(ConfigError, match="clip_range"):
        PGConfig(clip_range=0.0)
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.AdamW)
    assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8 and group["weight_decay"] == 1e-4


def test_lora_parameters_are_what_the_optimizer_trains(tiny_sd_dir):
    gen, params, _, opt = setup(tiny_sd_dir)
    assert [id(p) for p in opt.param_groups[0]["params"]] == [
        id(p) for p in lora_parameters(gen.components.unet)
    ]


def test_ppo_update_steps_every_samples_per_step_trajectories(tiny_sd_dir):
    """HERO's official schedule: one optimizer step per `samples_per_step` shuffled trajectories; after the
    first step the ratio leaves 1, so later items can be clipped (clip range 1e-4)."""
    gen, params, rollout, opt = setup(tiny_sd_dir)
    before = [p.detach().clone() for p in params]
    stats = ppo_update(gen, rollout, torch.tensor([1.0, -1.0, 0.5]), opt, PGConfig(samples_per_step=1), seeded(0))
    assert stats["n_optimizer_steps"] == 3 and stats["n_items"] == 3 * 5
    assert stats["approx_kl"] > 0  # the 2nd and 3rd trajectories were scored by an updated policy
    assert any(not torch.equal(a, b) for a, b in zip(before, params))
    with pytest.raises(ConfigError, match="samples_per_step"):
        PGConfig(samples_per_step=-1)
