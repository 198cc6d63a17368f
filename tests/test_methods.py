"""Every method's ``learn`` end to end on a tiny random-weight SD (batch 4, 4 DDIM steps; seconds)."""

from __future__ import annotations

import math

import pytest
import torch
from fixtures_sd import tiny_sd_fixture, tiny_sd_v_fixture  # noqa: F401 (pytest fixtures)

from herobench.core.generator import Generator, SamplerConfig
from herobench.core.lora import lora_parameters
from herobench.core.pipeline import load_components
from herobench.errors import ConfigError, HerobenchError, UnknownNameError
from herobench.harness.rater import SimulatedRater
from herobench.methods import METHODS
from herobench.types import Feedback, TaskSpec, Verdict

torch.set_num_threads(1)

GOOD = (True, False, False, True)  # mixed inside each prompt and each noise pair
FAST = {  # small settings so that a learn call takes well under a second
    "hero": {"encoder_epochs": 3},
    "hero-no-fgg": {"encoder_epochs": 3},
    "hero-no-repr": {},
    "ddpo": {},
    "ddpo-5steps": {},
    "ddpo-early": {},
    "hero-early": {"encoder_epochs": 3},
    "d3po": {},
    "pretrained": {},
    "enhanced": {},
    "dreambooth": {"steps_per_iteration": 2, "train_batch": 2},
    "diffusion-nft": {},
    "diffusion-nft-8steps": {},
    "diffusion-kto": {"steps_per_iteration": 2, "train_batch": 2},
    "grpo": {},
    "reward-model": {"classifier_steps": 5},
}


@pytest.fixture(scope="module")
def model_dirs(tiny_sd_dir, tiny_sd_v_dir):
    return {"epsilon": tiny_sd_dir, "v_prediction": tiny_sd_v_dir}


def make_gen(path) -> Generator:
    """A fresh Generator (its UNet has no LoRA yet) on the tiny model: 4 DDIM steps, eta 1, CFG 5."""
    return Generator(load_components(path), SamplerConfig(steps=4))


def task() -> TaskSpec:
    return TaskSpec(
        name="toy",
        version="1.0",
        category="test",
        description="toy",
        train_prompts=("1 hand", "a cat"),
        eval_prompts=("1 hand", "a cat"),
        enhanced_prompts=("a photo of one human hand", "a photo of a cat"),
        oracles={},
        default_budget_labels=8,
        success="toy",
    )


def feedback_for(method, good=GOOD) -> Feedback:
    """What the simulated rater, speaking the method's protocol, returns for these labels."""
    verdicts = [Verdict(success=g, score=0.5 + 0.1 * i * g, reason="toy") for i, g in enumerate(good)]
    return SimulatedRater().rate(verdicts, method.protocol, groups=method.groups(len(good)))


def rollout_for(method, gen, seed=0):
    rng = torch.Generator().manual_seed(seed)
    noise = method.init_noise(len(GOOD), gen.latent_shape, rng)
    return gen.sample(method.train_prompts(task(), len(GOOD)), init_noise=noise, generator=rng)


def snapshot(unet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unet.named_parameters()}


@pytest.mark.parametrize("name", sorted(FAST))
def test_learn_changes_lora_only_for_training_methods(name, model_dirs):
    gen = make_gen(model_dirs["epsilon"])
    method = METHODS.get(name)()
    method.setup(gen, FAST[name], seed=0)
    unet = gen.components.unet
    assert bool(lora_parameters(unet)) == method.trains  # only training methods get an adapter
    rollout = rollout_for(method, gen)
    before = snapshot(unet)
    stats = method.learn(rollout, feedback_for(method), torch.Generator().manual_seed(1))
    # scalars, or lists of them (per-step diagnostics such as pg_kl_true_per_step)
    values = [x for v in stats.values() for x in (v if isinstance(v, list) else [v])]
    assert all(isinstance(x, float) and math.isfinite(x) for x in values), stats
    after = snapshot(unet)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if method.trains:
        assert changed, "a training method's learn left the LoRA unchanged"
    assert all("lora_" in k for k in changed), "only LoRA weights may change"
    if not method.trains:
        assert changed == set()


def test_hero_keeps_best_and_pools_good_noises(model_dirs):
    gen = make_gen(model_dirs["epsilon"])
    hero = METHODS.get("hero")()
    hero.setup(gen, {"encoder_epochs": 3}, seed=0)
    first = hero.init_noise(4, gen.latent_shape, torch.Generator().manual_seed(0))
    assert torch.equal(first, torch.randn(4, *gen.latent_shape, generator=torch.Generator().manual_seed(0)))
    rollout = rollout_for(hero, gen)
    stats = hero.learn(rollout, Feedback(good=GOOD, best=3), torch.Generator().manual_seed(1))
    assert stats["best_updated"] == 1.0 and stats["repr_trained"] == 1.0 and stats["pg_skipped"] == 0.0
    assert torch.equal(hero.state.best_latent, rollout.last_step_input[3].float())
    assert torch.equal(hero.state.best_noise, rollout.init_noise[3].float())
    assert torch.equal(hero.state.good_noises, rollout.init_noise[[0]].float())  # good images other than the best
    # next batch: round(0.5·4) = 2 rows near the best noise, 2 near the good one (sigma 0.1)
    nxt = hero.init_noise(4, gen.latent_shape, torch.Generator().manual_seed(2))
    s = math.sqrt(1 - 0.01)
    for row, src in zip(nxt, [hero.state.best_noise] * 2 + [hero.state.good_noises[0]] * 2):
        corr = torch.corrcoef(torch.stack([row.flatten(), src.flatten()]))[0, 1]
        assert corr > 0.95
    assert not torch.allclose(nxt[0], s * hero.state.best_noise, atol=1e-3)  # perturbed, not copied

    # a batch with no good image keeps the previous best and empties the good pool
    stats = hero.learn(rollout, Feedback(good=(False,) * 4), torch.Generator().manual_seed(3))
    assert stats["best_updated"] == 0.0 and stats["repr_trained"] == 0.0  # no positive
    assert stats["pg_skipped"] == 0.0  # rewards still come from similarity to the kept best
    assert torch.equal(hero.state.best_latent, rollout.last_step_input[3].float())
    assert len(hero.state.good_noises) == 0
    nxt = hero.init_noise(4, gen.latent_shape, torch.Generator().manual_seed(4))
    for row in nxt:  # empty good pool: every row from the best noise
        assert torch.corrcoef(torch.stack([row.flatten(), hero.state.best_noise.flatten()]))[0, 1] > 0.95
    # the evaluation noise is untouched unless eval_from_pool is set
    eval_noise = torch.randn(4, *gen.latent_shape)
    assert hero.eval_noise(eval_noise) is eval_noise and hero.custom_eval_noise is False


def test_hero_edge_batches_do_not_crash(model_dirs):
    gen = make_gen(model_dirs["epsilon"])
    hero = METHODS.get("hero")()
    hero.setup(gen, {"encoder_epochs": 2}, seed=0)
    rollout = rollout_for(hero, gen)
    rng = torch.Generator().manual_seed(0)
    # nothing good and no best yet: no anchor, equal rewards -> neither learner moves
    s = hero.learn(rollout, Feedback(good=(False,) * 4), rng)
    assert (s["repr_trained"], s["pg_skipped"], s["has_best"]) == (0.0, 1.0, 0.0)
    # the only good image is the new best: no positive, empty good pool
    s = hero.learn(rollout, Feedback(good=(False, True, False, False), best=1), rng)
    assert (s["repr_trained"], s["repr_positives"], s["pool_good_noises"]) == (0.0, 0.0, 0.0)
    # every image good: no negative
    s = hero.learn(rollout, Feedback(good=(True,) * 4, best=3), rng)
    assert (s["repr_trained"], s["repr_negatives"], s["pool_good_noises"]) == (0.0, 0.0, 3.0)
    with pytest.raises(HerobenchError, match="best"):
        hero.learn(rollout, Feedback(good=(False,) * 4, best=0), rng)


def test_hero_ablations(model_dirs):
    gen = make_gen(model_dirs["epsilon"])
    no_fgg = METHODS.get("hero-no-fgg")()
    no_fgg.setup(gen, {"encoder_epochs": 2}, seed=0)
    rollout = rollout_for(no_fgg, gen)
    no_fgg.learn(rollout, Feedback(good=GOOD, best=0), torch.Generator().manual_seed(1))
    assert no_fgg.state.best_noise is not None  # it still tracks the best ...
    x = no_fgg.init_noise(4, gen.latent_shape, torch.Generator().manual_seed(5))
    # ... but samples N(0, I)
    assert torch.equal(x, torch.randn(4, *gen.latent_shape, generator=torch.Generator().manual_seed(5)))

    gen = make_gen(model_dirs["epsilon"])
    no_repr = METHODS.get("hero-no-repr")()
    no_repr.setup(gen, {}, seed=0)
    before = [p.detach().clone() for p in no_repr.encoder.parameters()]
    rollout = rollout_for(no_repr, gen)
    s = no_repr.learn(rollout, Feedback(good=GOOD, best=0), torch.Generator().manual_seed(1))
    assert "repr_trained" not in s and s["reward_good_minus_bad"] == 1.0  # reward = label
    assert all(torch.equal(a, b) for a, b in zip(before, no_repr.encoder.parameters()))
    with pytest.raises(ConfigError, match="hero-no-repr"):
        METHODS.get("hero-no-repr")().setup(
            make_gen(model_dirs["epsilon"]), {"representation_learning": True}, 0
        )


def test_hero_eval_from_pool_is_recorded(model_dirs):
    gen = make_gen(model_dirs["epsilon"])
    hero = METHODS.get("hero")()
    hero.setup(gen, {"encoder_epochs": 2, "eval_from_pool": True}, seed=0)
    assert hero.custom_eval_noise is True
    noise = torch.randn(4, *gen.latent_shape)
    assert torch.equal(hero.eval_noise(noise), noise)  # no best yet
    hero.learn(rollout_for(hero, gen), Feedback(good=GOOD, best=0), torch.Generator().manual_seed(1))
    assert not torch.equal(hero.eval_noise(noise), noise)
    assert torch.equal(hero.eval_noise(noise), hero.eval_noise(noise))


def test_hero_state_round_trip(model_dirs):
    gen = make_gen(model_dirs["epsilon"])
    hero = METHODS.get("hero")()
    hero.setup(gen, {"encoder_epochs": 3}, seed=0)
    rollout = rollout_for(hero, gen)
    hero.learn(rollout, Feedback(good=GOOD, best=0), torch.Generator().manual_seed(1))
    state = hero.state_dict()

    resumed = METHODS.get("hero")()
    resumed.setup(make_gen(model_dirs["epsilon"]), {"encoder_epochs": 3}, seed=0)
    resumed.load_state_dict(state)
    x = rollout.last_step_input
    assert torch.equal(resumed.encoder(x), hero.encoder(x))
    assert torch.equal(resumed.state.good_noises, hero.state.good_noises) and torch.equal(
        resumed.state.best_noise, hero.state.best_noise
    )
    rng_a, rng_b = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(
        resumed.init_noise(4, gen.latent_shape, rng_a), hero.init_noise(4, gen.latent_shape, rng_b)
    )
    assert resumed.optimizer.state_dict()["state"].keys() == hero.optimizer.state_dict()["state"].keys()

    other = METHODS.get("hero")()
    other.setup(make_gen(model_dirs["epsilon"]), {"encoder_epochs": 4}, seed=0)
    with pytest.raises(HerobenchError, match="options"):
        other.load_state_dict(state)


def test_ddpo_skips_uniform_labels_and_normalises_per_prompt(model_dirs):
    gen = make_gen(model_dirs["epsilon"])
    ddpo = METHODS.get("ddpo")()
    ddpo.setup(gen, {}, seed=0)
    assert ddpo.pg.n_train_timesteps == 4 and ddpo.pg.lr == 3e-4  # every step (timestep_fraction 1.0)
    rollout = rollout_for(ddpo, gen)
    before = snapshot(gen.components.unet)
    s = ddpo.learn(rollout, Feedback(good=(True,) * 4), torch.Generator().manual_seed(1))
    assert s["pg_skipped"] == 1.0 and all(
        torch.equal(before[k], v) for k, v in snapshot(gen.components.unet).items()
    )
    # per prompt: "1 hand" images are all good, so only the "a cat" pair carries signal
    assert rollout.prompts == ["1 hand", "a cat", "1 hand", "a cat"]
    s = ddpo.learn(rollout, Feedback(good=(True, True, True, False)), torch.Generator().manual_seed(1))
    assert s["pg_skipped"] == 0.0
    # prompts all good / all bad: no signal per prompt, but a batch-normalised signal
    uniform_per_prompt = Feedback(good=(True, False, True, False))
    assert ddpo.learn(rollout, uniform_per_prompt, torch.Generator())["pg_skipped"] == 1.0
    batch = METHODS.get("ddpo")()
    batch.setup(make_gen(model_dirs["epsilon"]), {"advantages": "batch"}, 0)
    assert batch.learn(rollout, uniform_per_prompt, torch.Generator())["pg_skipped"] == 0.0


def test_d3po_steps_once_per_pair_per_pass_and_rejects_cross_group_pairs(model_dirs):
    gen = make_gen(model_dirs["epsilon"])
    d3po = METHODS.get("d3po")()
    d3po.setup(gen, {"images_per_noise": 2, "passes": 3}, seed=0)  # two groups of 2 in a batch of 4
    rollout = rollout_for(d3po, gen)
    assert (
        torch.equal(rollout.init_noise[0], rollout.init_noise[1]) and rollout.prompts[0] == rollout.prompts[1]
    )
    s = d3po.learn(rollout, Feedback(good=GOOD, pairs=((0, 1), (3, 2))), torch.Generator().manual_seed(1))
    assert s["n_pairs"] == 2.0 and s["dpo_n_optimizer_steps"] == 3 * 2.0
    assert s["dpo_loss_first_pass"] == pytest.approx(math.log(2), abs=1e-3)  # first steps: policy = reference
    s = d3po.learn(rollout, Feedback(good=(True,) * 4), torch.Generator().manual_seed(1))
    assert s["dpo_skipped"] == 1.0
    with pytest.raises(HerobenchError, match="crosses"):
        d3po.learn(rollout, Feedback(good=GOOD, pairs=((0, 2),)), torch.Generator())
    # both pairs in one optimizer step, with another ratio clamp
    batched = METHODS.get("d3po")()
    batched.setup(make_gen(model_dirs["epsilon"]), {"pairs_per_step": 2, "ratio_clip": 0.2, "passes": 1}, seed=0)
    s = batched.learn(rollout, Feedback(good=GOOD, pairs=((0, 1), (3, 2))), torch.Generator().manual_seed(1))
    assert s["dpo_n_optimizer_steps"] == 1.0 and batched.options.ratio_clip == 0.2


def test_enhanced_maps_eval_prompts_by_index():
    m = METHODS.get("enhanced")()
    m.setup(None, {}, 0)
    t = task()
    assert m.eval_prompts(["a cat", "1 hand", "unseen"], t) == [
        "a photo of a cat",
        "a photo of one human hand",
        "unseen",
    ]
    assert METHODS.get("pretrained")().eval_prompts(["a cat"], t) == ["a cat"]
    with pytest.raises(ConfigError, match="method_options"):
        METHODS.get("pretrained")().setup(None, {"lr": 1.0}, 0)


def test_dreambooth_buffers_good_images_and_trains_v_prediction(model_dirs):
    gen = make_gen(model_dirs["v_prediction"])
    db = METHODS.get("dreambooth")()
    db.setup(gen, {"steps_per_iteration": 2, "train_batch": 2}, seed=0)
    rollout = rollout_for(db, gen)
    s = db.learn(rollout, Feedback(good=(False,) * 4), torch.Generator().manual_seed(1))
    assert s["sft_skipped"] == 1.0
    s = db.learn(rollout, Feedback(good=GOOD, best=0), torch.Generator().manual_seed(1))
    assert s["buffer_images"] == 2.0 and s["sft_skipped"] == 0.0
    assert torch.equal(db.buffer_latents, rollout.latents[[0, 3], -1].float())
    assert db.buffer_prompts == [rollout.prompts[0], rollout.prompts[3]]


def test_registry_suggests_names():
    assert set(METHODS.names()) == set(FAST)
    with pytest.raises(UnknownNameError, match="did you mean 'hero'"):
        METHODS.get("hreo")


@pytest.mark.parametrize("name", ["hero", "ddpo", "d3po", "dreambooth"])
def test_lora_targets_option_adapts_convolutions_too(name, model_dirs, tmp_path):
    from herobench.core.lora import load_lora, save_lora

    gen = make_gen(model_dirs["epsilon"])
    method = METHODS.get(name)()
    method.setup(gen, {**FAST[name], "lora_targets": ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"]}, seed=0)
    unet = gen.components.unet
    adapted = {n.rsplit(".lora_", 1)[0] for n, _ in unet.named_parameters() if "lora_" in n}
    convs = {n for n in adapted if n.endswith(("conv1", "conv2"))}
    assert convs and all(isinstance(unet.get_submodule(n).base_layer, torch.nn.Conv2d) for n in convs)
    before = snapshot(unet)
    method.learn(rollout_for(method, gen), feedback_for(method), torch.Generator().manual_seed(1))
    changed = {k for k, v in snapshot(unet).items() if not torch.equal(before[k], v)}
    assert any("conv" in k for k in changed) and all("lora_" in k for k in changed)
    # the checkpoint round trip keeps the convolution adapters
    save_lora(unet, tmp_path / "lora")
    fresh = make_gen(model_dirs["epsilon"])
    METHODS.get(name)().setup(fresh, {**FAST[name], "lora_targets": ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"]}, seed=5)
    load_lora(fresh.components.unet, tmp_path / "lora")
    trained = {k: v for k, v in snapshot(unet).items() if "lora_" in k}
    loaded = snapshot(fresh.components.unet)
    assert all(torch.equal(trained[k], loaded[k]) for k in trained)
    with pytest.raises(ConfigError, match="lora_targets"):
        METHODS.get(name)().setup(make_gen(model_dirs["epsilon"]), {**FAST[name], "lora_targets": []}, seed=0)


class _OneProcess:
    """Stands in for an ``accelerate.Accelerator`` of one process (what the update loops read of it)."""

    num_processes = 1
    process_index = 0
    gradient_accumulation_steps = 1


@pytest.mark.parametrize("name", ["ddpo", "pretrained"])
def test_setup_takes_the_accelerator(name, model_dirs):
    """The runner hands the accelerator to ``setup`` (no attribute set after it); without one it is None."""
    acc = _OneProcess()
    method = METHODS.get(name)()
    method.setup(make_gen(model_dirs["epsilon"]), FAST[name], seed=0, accelerator=acc)
    assert method.accelerator is acc
    plain = METHODS.get(name)()
    plain.setup(make_gen(model_dirs["epsilon"]), FAST[name], seed=0)
    assert plain.accelerator is None


def test_a_checkpoint_without_a_newer_option_loads_at_its_default(model_dirs):
    """An option added after a checkpoint was written (DDPO's ``early_fraction``) was at its default then:
    the checkpoint loads into a run at the default, and is refused by a run that sets it otherwise."""
    ddpo = METHODS.get("ddpo")()
    ddpo.setup(make_gen(model_dirs["epsilon"]), {}, seed=0)
    old = ddpo.state_dict()
    del old["options"]["early_fraction"]
    again = METHODS.get("ddpo")()
    again.setup(make_gen(model_dirs["epsilon"]), {}, seed=0)
    again.load_state_dict(old)
    early = METHODS.get("ddpo-early")()
    early.setup(make_gen(model_dirs["epsilon"]), {}, seed=0)
    with pytest.raises(HerobenchError, match="other DDPO options"):
        early.load_state_dict(old)
