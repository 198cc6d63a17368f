"""DiffusionNFT (herobench.methods.diffusion_nft): its loss against the official velocity form, the flow ↔ VP
view, the reward weights and old-model schedule on fixed numbers, and learn / resume on the tiny random SD."""

from __future__ import annotations

import json
import math

import pytest
import torch
from fixtures_sd import tiny_sd_fixture, tiny_sd_v_fixture  # noqa: F401 (pytest fixtures)
from human_client import tiny_world_dir

from herobench.config import RunSettings, from_dict
from herobench.core.generator import Generator, SamplerConfig
from herobench.core.lora import load_lora, lora_parameters, save_lora
from herobench.core.pipeline import load_components
from herobench.errors import ConfigError, HerobenchError
from herobench.harness.runlog import read_jsonl
from herobench.methods import DESCRIPTIONS, METHODS
from herobench.methods.diffusion_nft import flow_view, nft_policy_loss, nft_reward_weights, old_decay
from herobench.types import Feedback

torch.set_num_threads(1)

GOOD = (True, False, False, True)
PROMPTS = ["1 hand", "a cat", "1 hand", "a cat"]
DIMS = (1, 2, 3)


# ------------------------------------------------------------------ the official velocity form, written out


def official_velocity_loss(v_new, v_old, v_ref, x0, x_s, s, r, beta, clip):
    """NVlabs/DiffusionNFT scripts/train_nft_sd3.py:934-975 on a flow x_s = (1-s)·x0 + s·ε (per item)."""
    positive = beta * v_new + (1 - beta) * v_old
    negative = (1 + beta) * v_old - beta * v_new
    x0_pos = x_s - s * positive
    w_pos = (x0_pos.double() - x0.double()).abs().mean(dim=DIMS, keepdim=True).clip(min=1e-5)
    l_pos = ((x0_pos - x0) ** 2 / w_pos).mean(dim=DIMS)
    x0_neg = x_s - s * negative
    w_neg = (x0_neg.double() - x0.double()).abs().mean(dim=DIMS, keepdim=True).clip(min=1e-5)
    l_neg = ((x0_neg - x0) ** 2 / w_neg).mean(dim=DIMS)
    policy = (r * l_pos / beta + (1.0 - r) * l_neg / beta) * clip
    kl = ((v_new - v_ref) ** 2).mean(dim=DIMS)
    return policy, kl


def flow_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    n = 3
    x0, eps = torch.randn(n, 4, 5, 5, generator=g), torch.randn(n, 4, 5, 5, generator=g)
    s = torch.tensor([0.1, 0.5, 0.93]).reshape(-1, 1, 1, 1)
    x_s = (1 - s) * x0 + s * eps
    true_v = eps - x0
    v = {k: (true_v + 0.3 * torch.randn(true_v.shape, generator=g)).double() for k in ("new", "old", "ref")}
    return x0.double(), eps.double(), s.double(), x_s.double(), v


def vp_outputs(kind, v, x_s, s):
    """The VP point and the ε / v / x0 output that has flow velocity ``v`` at (x_s, s)."""
    norm = ((1 - s) ** 2 + s**2).sqrt()
    a, b = (1 - s) / norm, s / norm  # a² + b² = 1 and b / (a + b) = s
    x_t = (a + b) * x_s
    x0_hat = x_s - s * v
    eps_hat = v + x0_hat
    out = {"epsilon": eps_hat, "v_prediction": a * eps_hat - b * x0_hat, "sample": x0_hat}[kind]
    return out, x_t, (a**2).flatten(), a, b


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_vp_loss_equals_the_official_velocity_loss_of_the_same_flow(kind):
    x0, _, s, x_s, v = flow_case()
    r = torch.tensor([0.6, 0.4, 0.5], dtype=torch.float64)
    for beta in (1.0, 0.1):
        want_policy, want_kl = official_velocity_loss(v["new"], v["old"], v["ref"], x0, x_s, s, r, beta, 5.0)
        views = {}
        for key in ("new", "old", "ref"):
            out, x_t, alpha_bar, a, b = vp_outputs(kind, v[key], x_s, s)
            views[key] = flow_view(kind, out, x_t, alpha_bar)
        got = nft_policy_loss(views["new"].x0.double(), views["old"].x0.double(), x0, r, beta, 5.0)
        assert torch.allclose(got, want_policy, rtol=1e-5), (got, want_policy)
        got_kl = ((views["new"].velocity - views["ref"].velocity) ** 2).mean(dim=DIMS).double()
        assert torch.allclose(got_kl, want_kl, rtol=1e-4)
        assert torch.allclose(views["new"].s.double(), s, atol=1e-6)
    # the same squared difference in ε units is (a/(a+b))² times the velocity one, in x0 units s² times:
    # an ε-space KL would reweight the timesteps by those factors
    eps = {k: vp_outputs("epsilon", v[k], x_s, s)[0] for k in ("new", "ref")}
    eps_sq = ((eps["new"] - eps["ref"]) ** 2).mean(dim=DIMS)
    assert torch.allclose(eps_sq, (a / (a + b)).flatten() ** 2 * want_kl, rtol=1e-6)
    x0_sq = (((x_s - s * v["new"]) - (x_s - s * v["ref"])) ** 2).mean(dim=DIMS)
    assert torch.allclose(x0_sq, s.flatten() ** 2 * want_kl, rtol=1e-6)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_flow_view_of_the_exact_prediction_is_the_flow_state(kind):
    x0, eps, s, x_s, _ = flow_case(1)
    out, x_t, alpha_bar, a, b = vp_outputs(kind, eps - x0, x_s, s)
    # x_t is the VP forward process of the same (x0, ε)
    assert torch.allclose(x_t, a * x0 + b * eps, atol=1e-6)
    view = flow_view(kind, out.float(), x_t.float(), alpha_bar)
    assert torch.allclose(view.x0, x0.float(), atol=1e-4) and torch.allclose(view.velocity, (eps - x0).float(), atol=1e-4)


def test_policy_loss_and_gradient_by_hand():
    # one element per item: L = (x̂ - x0)² / |x̂ - x0| = |x̂ - x0| (the weight is detached)
    x0 = torch.zeros(1, 1, 1, 1)
    theta = torch.full((1, 1, 1, 1), 2.0, requires_grad=True)
    old = torch.ones(1, 1, 1, 1)
    loss = nft_policy_loss(theta, old, x0, torch.tensor([0.6]), beta=0.5, adv_clip_max=5.0)
    # x̂⁺ = 0.5·2 + 0.5·1 = 1.5, x̂⁻ = 1.5·1 - 0.5·2 = 0.5: (0.6·1.5 + 0.4·0.5) / 0.5 · 5
    assert float(loss.detach()) == pytest.approx(11.0)
    loss.sum().backward()
    # d/dθ = 5/β · (r·2·β - (1 - r)·2·β) = 5·(1.2 - 0.8); an undetached weight would give 1.0
    assert float(theta.grad) == pytest.approx(2.0)
    # at θ = old the gradient is 10·(2r - 1)·(x̂ - x₀)/|x̂ - x₀|: descent pulls x̂ to a good image's x₀
    # (r 0.6), pushes it from a bad one's (r 0.4) and leaves a neutral one (r 0.5)
    for r, want in ((0.6, 2.0), (0.4, -2.0), (0.5, 0.0)):
        at_old = torch.ones(1, 1, 1, 1, requires_grad=True)
        nft_policy_loss(at_old, old, x0, torch.tensor([r]), beta=0.5).sum().backward()
        assert float(at_old.grad) == pytest.approx(want, abs=1e-6)


def test_reward_weights_binary_and_all_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    prompts = ["a", "b", "a", "b", "c", "c"]
    # per-prompt centring: a → ±0.5, b and c → 0; binary: sign → r = 0.5 ± 0.1
    got = nft_reward_weights(rewards, prompts, 5.0, "binary")
    assert got.tolist() == pytest.approx([0.6, 0.5, 0.4, 0.5, 0.5, 0.5])
    # "all": divided by the batch's population std + 1e-4, then A/5/2 + 1/2
    std = math.sqrt(0.25) + 1e-4  # three of six are 1
    a = 0.5 / std
    assert nft_reward_weights(rewards, prompts, 5.0, "all").tolist() == pytest.approx(
        [0.5 + a / 10, 0.5, 0.5 - a / 10, 0.5, 0.5, 0.5], abs=1e-6)
    # clipped at ±adv_clip_max before the map: r stays in [0, 1]
    assert nft_reward_weights(torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0]), ["p"] * 8, 1.0, "all")[0] == 1.0


def test_old_decay_schedules():
    # decay_type 1 (the default): 0.001 per step, capped at 0.5
    assert [old_decay(k) for k in (0, 1, 10, 500, 10_000)] == pytest.approx([0, 0.001, 0.01, 0.5, 0.5])
    # decay_type 2 (OCR): flat for 75 steps, then 0.0075 per step up to 0.999
    assert [old_decay(k, 75, 0.0075, 0.999) for k in (10, 75, 100, 1000)] == pytest.approx([0, 0, 0.1875, 0.999])


# ------------------------------------------------------------------ the method on the tiny random SD


def make_gen(path) -> Generator:
    return Generator(load_components(path), SamplerConfig(steps=4))


def sample(gen, seed=0):
    return gen.sample(PROMPTS, generator=torch.Generator().manual_seed(seed))


def lora_values(gen) -> list[torch.Tensor]:
    return [p.detach().clone() for p in lora_parameters(gen.components.unet)]


def test_options_are_validated():
    m = METHODS.get("diffusion-nft")()
    with pytest.raises(ConfigError, match="unknown key 'method_options.betta'"):
        m.resolve_options({"betta": 0.1})
    with pytest.raises(ConfigError, match="timestep_fraction"):
        m.resolve_options({"timestep_fraction": 0.0})
    with pytest.raises(ConfigError, match="advantages"):
        m.resolve_options({"advantages": "sign"})
    with pytest.raises(ConfigError, match="old_decay_max"):
        m.resolve_options({"old_decay_max": 1.0})
    assert m.resolve_options({}).lr == 3e-4 and m.resolve_options({}).beta == 1.0
    assert "Zheng et al., ICLR 2026" in DESCRIPTIONS["diffusion-nft"] and m.protocol == "scalar"


def test_learn_trains_theta_and_moves_the_sampled_lora_to_the_old_ema(tiny_sd_dir):
    gen = make_gen(tiny_sd_dir)
    nft = METHODS.get("diffusion-nft")()
    nft.setup(gen, {}, seed=0)
    unet = gen.components.unet
    rollout = sample(gen)
    before = {k: v.detach().clone() for k, v in unet.named_parameters()}
    calls = []
    hook = unet.register_forward_pre_hook(
        lambda m, args, kw: calls.append((args[1].clone(), kw["encoder_hidden_states"].clone())), with_kwargs=True)
    stats = nft.learn(rollout, Feedback(good=GOOD), torch.Generator().manual_seed(1))
    hook.remove()
    changed = {k for k, v in unet.named_parameters() if not torch.equal(before[k], v)}
    assert changed and all("lora_" in k for k in changed)
    # k = int(4 · 0.99) = 3 timesteps per image, each a forward of the old, reference and trained model
    assert len(calls) == 3 * 3 and stats["nft_optimizer_steps"] == 1.0 and nft.step == 1
    cond = rollout.prompt_embeds

    def which(rows: torch.Tensor) -> list[int]:
        return sorted(next(i for i in range(4) if torch.equal(row, cond[i])) for row in rows)

    for t, emb in calls:  # the conditional embeddings only (CFG-free; rows shuffled), the sampler's timesteps
        assert which(emb) == which(cond) and not any(torch.equal(row, rollout.negative_embeds[0]) for row in emb)
        assert set(t.tolist()) <= set(rollout.timesteps.tolist())
    per_image = torch.stack([calls[3 * j][0] for j in range(3)], dim=1)  # (old, ref, new) per column
    assert all(len(set(row.tolist())) == 3 for row in per_image)  # distinct timesteps per image
    # the sampled LoRA is old ← d·old + (1 - d)·θ with d = 0.001 after one step; θ is the trained one
    old0 = [before[k] for k, _ in unet.named_parameters() if "lora_" in k]
    d = stats["old_decay"]
    assert d == pytest.approx(0.001)
    for p, o, t in zip(lora_parameters(unet), old0, nft.theta):
        assert torch.allclose(p, d * o + (1 - d) * t, atol=1e-7)
    assert any(not torch.equal(o, t) for o, t in zip(old0, nft.theta))
    # labels (1, 0, 0, 1) on prompts (hand, cat, hand, cat): each prompt has one of each, r = 0.6 / 0.4
    assert stats["r_nonneutral"] == 1.0 and stats["r_mean"] == pytest.approx(0.5)


def test_no_kl_skips_the_reference_and_a_zero_decay_samples_theta(tiny_sd_v_dir):
    gen = make_gen(tiny_sd_v_dir)
    nft = METHODS.get("diffusion-nft")()
    nft.setup(gen, {"kl_beta": 0.0, "old_decay_rate": 0.0, "steps_per_batch": 2, "timestep_fraction": 0.5},
              seed=0)
    rollout, calls = sample(gen), []
    hook = gen.components.unet.register_forward_pre_hook(lambda *a: calls.append(1))
    stats = nft.learn(rollout, Feedback(good=GOOD), torch.Generator().manual_seed(1))
    hook.remove()
    # two steps of 2 images, int(4 · 0.5) = 2 timesteps each, old + trained forwards only
    assert stats["nft_optimizer_steps"] == 2.0 and nft.step == 2 and len(calls) == 2 * 2 * 2
    assert stats["old_decay"] == 0.0 and stats["nft_kl_mean"] == 0.0
    assert all(torch.equal(p, t) for p, t in zip(lora_parameters(gen.components.unet), nft.theta))


def test_the_8steps_variant_is_the_officials_steps_per_batch_knob(tiny_sd_dir):
    variant = METHODS.get("diffusion-nft-8steps")()
    assert variant.resolve_options({}).steps_per_batch == 8
    assert variant.resolve_options({}) == METHODS.get("diffusion-nft")().resolve_options({"steps_per_batch": 8})
    gen = make_gen(tiny_sd_dir)
    variant.setup(gen, {"kl_beta": 0.0, "timestep_fraction": 0.25}, seed=0)
    stats = variant.learn(sample(gen), Feedback(good=GOOD), torch.Generator().manual_seed(1))
    # 4 images split 8 ways: 4 non-empty steps of one image each (an empty split takes no step)
    assert stats["nft_optimizer_steps"] == 4.0 and variant.step == 4


def test_resume_from_state_equals_uninterrupted_learning(tiny_sd_dir, tmp_path):
    batches = [(sample(make_gen(tiny_sd_dir), seed), Feedback(good=g)) for seed, g in
               ((0, GOOD), (1, (False, False, True, True)))]
    gen = make_gen(tiny_sd_dir)
    ref = METHODS.get("diffusion-nft")()
    ref.setup(gen, {}, seed=0)
    for i, (rollout, fb) in enumerate(batches):
        ref.learn(rollout, fb, torch.Generator().manual_seed(10 + i))

    first_gen = make_gen(tiny_sd_dir)
    first = METHODS.get("diffusion-nft")()
    first.setup(first_gen, {}, seed=0)
    first.learn(*batches[0], torch.Generator().manual_seed(10))
    save_lora(first_gen.components.unet, tmp_path / "lora")
    torch.save(first.state_dict(), tmp_path / "state.pt")

    resumed_gen = make_gen(tiny_sd_dir)
    resumed = METHODS.get("diffusion-nft")()
    resumed.setup(resumed_gen, {}, seed=0)  # as the runner does: setup, LoRA in place, then the state
    load_lora(resumed_gen.components.unet, tmp_path / "lora")
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    resumed.learn(*batches[1], torch.Generator().manual_seed(11))
    assert all(torch.equal(a, b) for a, b in zip(lora_values(resumed_gen), lora_values(gen)))
    assert all(torch.equal(a, b) for a, b in zip(resumed.theta, ref.theta)) and resumed.step == ref.step == 2

    other = METHODS.get("diffusion-nft")()
    other.setup(make_gen(tiny_sd_dir), {"beta": 0.1}, seed=0)
    with pytest.raises(HerobenchError, match="options"):
        other.load_state_dict(first.state_dict())


# ------------------------------------------------------------------ through the runner


def world_settings(world, **kw) -> RunSettings:
    data = {"task": "hand", "method": "diffusion-nft", "budget_labels": 8, "model": str(world), "batch_size": 4,
            "sampler": {"steps": 3, "guidance_scale": 2.0}, "eval": {"n_images": 2, "every_labels": 4, "batch_size": 2},
            "method_options": {}, **kw}
    return from_dict(RunSettings, data)


def test_two_iterations_through_the_runner(tmp_path_factory, tmp_path):
    from herobench.harness.runner import run

    path, summary = run(world_settings(tiny_world_dir(tmp_path_factory)), out=tmp_path, progress=False)
    assert summary["labels"] == 8 and summary["iterations"] == 2
    train = read_jsonl(path / "train.jsonl")
    assert [r["iteration"] for r in train] == [1, 2]
    assert json.loads((path / "config.json").read_text())["settings"]["method"] == "diffusion-nft"
    assert (path / "checkpoints" / "latest" / "lora").exists()


def test_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path_factory, tmp_path):
    from test_reliability_resume import _kill_at_nth, _run_dir, assert_same_run, fresh, in_child, resume

    world = tiny_world_dir(tmp_path_factory)
    settings = world_settings(world, budget_labels=12)
    state, _ = in_child(fresh(settings, tmp_path / "ref"))
    assert state == "done"
    ref = _run_dir(tmp_path / "ref")
    # killed while iteration 2's checkpoint is written (each writes two folders named latest.tmp): the resume
    # starts from iteration 1's state (θ, the old LoRA, AdamW's moments, the step count) and redoes 2 and 3
    state, _ = in_child(fresh(settings, tmp_path / "k"), _kill_at_nth("mkdir", "latest.tmp", 3))
    assert state == "killed"
    path = _run_dir(tmp_path / "k")
    assert json.loads((path / "checkpoints" / "latest" / "harness.json").read_text())["iteration"] == 1
    assert in_child(resume(path))[0] == "done"
    assert_same_run(path, ref)
