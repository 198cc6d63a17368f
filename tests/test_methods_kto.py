"""Diffusion-KTO (herobench.methods.diffusion_kto): its loss, reference point, sampling weights and lr warmup
on fixed numbers, and learn / resume on the tiny random SD."""

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
from herobench.methods.diffusion_kto import kto_loss, kto_sampling_weights, warmup_factor
from herobench.types import Feedback

torch.set_num_threads(1)

GOOD = (True, False, False, True)
PROMPTS = ["1 hand", "a cat", "1 hand", "a cat"]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_kto_loss_by_hand():
    model = torch.tensor([0.40, 0.60, 0.50, 0.45], requires_grad=True)
    ref = torch.tensor([0.50, 0.50, 0.50, 0.50])
    good = torch.tensor([True, False, True, False])
    loss, stats = kto_loss(model, ref, good, beta=10.0, lambda_desirable=1.0, lambda_undesirable=2.0)
    # g = ref - model = (0.1, -0.1, 0, 0.05); z0 = max(0, mean g) = 0.0125
    g, z0 = [0.1, -0.1, 0.0, 0.05], 0.0125
    sign, lam = [1, -1, 1, -1], [1.0, 2.0, 1.0, 2.0]
    u = [s * 10 * (gi - z0) for s, gi in zip(sign, g)]
    want = sum(w * (1 - sigmoid(x)) for w, x in zip(lam, u)) / 4
    assert float(loss.detach()) == pytest.approx(want, rel=1e-6)
    assert float(stats["reference_point"]) == pytest.approx(z0) and float(stats["accuracy"]) == 0.5
    loss.backward()
    # z0 is detached: d/dm_i = λ_i·σ(u_i)(1 - σ(u_i))·sign_i·β / B (with z0's gradient the grads would sum to 0)
    grad = [w * sigmoid(x) * (1 - sigmoid(x)) * s * 10 / 4 for w, x, s in zip(lam, u, sign)]
    assert model.grad.tolist() == pytest.approx(grad, rel=1e-5)


def test_reference_point_is_clamped_at_zero_and_agreement_gives_half():
    model = torch.tensor([0.6, 0.7])
    ref = torch.tensor([0.5, 0.5])  # the model denoises worse: mean g < 0, so z0 = 0
    loss, stats = kto_loss(model, ref, torch.tensor([True, False]), beta=5.0)
    assert float(stats["reference_point"]) == 0.0
    assert float(loss) == pytest.approx(((1 - sigmoid(5 * -0.1)) + (1 - sigmoid(-5 * -0.2))) / 2, rel=1e-6)
    same, _ = kto_loss(ref, ref, torch.tensor([True, False]))
    assert float(same) == 0.5


def test_sampling_weights_draw_liked_images_at_the_positive_ratio():
    w = kto_sampling_weights(torch.tensor([True, False, False, False]), 0.8)
    # make_weights_for_balanced_classes: N/count · ratio → 4·0.8 = 3.2 for the liked, 4/3·0.2 for each other
    assert w.tolist() == pytest.approx([3.2, 4 / 3 * 0.2, 4 / 3 * 0.2, 4 / 3 * 0.2], rel=1e-6)
    assert float(w[0] / w.sum()) == pytest.approx(0.8)
    only_bad = kto_sampling_weights(torch.tensor([False, False]), 0.8)
    assert only_bad.tolist() == pytest.approx([0.2, 0.2], rel=1e-6)  # one kind: drawn uniformly


def test_lr_warmup_is_diffusers_constant_with_warmup():
    assert [warmup_factor(k, 200) for k in (0, 1, 100, 200, 5000)] == pytest.approx([0, 0.005, 0.5, 1, 1])
    assert warmup_factor(0, 0) == 1.0


def test_options_are_validated():
    m = METHODS.get("diffusion-kto")()
    with pytest.raises(ConfigError, match="unknown key 'method_options.betaa'"):
        m.resolve_options({"betaa": 1.0})
    with pytest.raises(ConfigError, match="positive_ratio"):
        m.resolve_options({"positive_ratio": 1.5})
    with pytest.raises(ConfigError, match="train_batch"):
        m.resolve_options({"train_batch": 0})
    o = m.resolve_options({})
    assert (o.beta, o.lr, o.train_batch, o.positive_ratio, o.empty_prompt_prob) == (1000.0, 5e-4, 8, 0.8, 0.2)
    assert "Li et al., NeurIPS 2024" in DESCRIPTIONS["diffusion-kto"] and m.protocol == "scalar"


# ------------------------------------------------------------------ the method on the tiny random SD


def make_gen(path) -> Generator:
    return Generator(load_components(path), SamplerConfig(steps=4))


def sample(gen, seed=0):
    return gen.sample(PROMPTS, generator=torch.Generator().manual_seed(seed))


FAST = {"steps_per_iteration": 3, "train_batch": 2, "lr_warmup_steps": 2}


@pytest.mark.parametrize("model", ["tiny_sd_dir", "tiny_sd_v_dir"])
def test_learn_buffers_every_label_and_changes_only_the_lora(model, request):
    gen = make_gen(request.getfixturevalue(model))
    kto = METHODS.get("diffusion-kto")()
    kto.setup(gen, FAST, seed=0)
    unet = gen.components.unet
    rollout = sample(gen)
    before = {k: v.detach().clone() for k, v in unet.named_parameters()}
    stats = kto.learn(rollout, Feedback(good=GOOD), torch.Generator().manual_seed(1))
    changed = {k for k, v in unet.named_parameters() if not torch.equal(before[k], v)}
    assert changed and all("lora_" in k for k in changed)
    # the reference is the initial model (adapter disabled): at the first step model = reference, loss ½
    assert stats["kto_loss_first"] == pytest.approx(0.5, abs=1e-6)
    # warmup over 2 steps: lr 0, ½, 1 times 5e-4
    assert stats["kto_lr"] == pytest.approx(5e-4) and kto.step == 3
    assert torch.equal(kto.buffer_latents, rollout.latents[:, -1].float())
    assert kto.buffer_prompts == PROMPTS and kto.buffer_good.tolist() == list(GOOD)
    stats = kto.learn(rollout, Feedback(good=(False,) * 4), torch.Generator().manual_seed(2))  # no liked image
    assert stats["buffer_images"] == 8.0 and kto.buffer_good.tolist() == list(GOOD) + [False] * 4
    # ... and stays the initial model once the LoRA has moved (a reference that followed the LoRA would keep ½)
    assert abs(stats["kto_loss_first"] - 0.5) > 1e-6


def test_empty_prompts_and_timesteps_are_drawn_from_rng(tiny_sd_dir):
    gen = make_gen(tiny_sd_dir)
    empty = gen.encode_prompts([""])[0][0]
    for prob, want_empty in ((1.0, True), (0.0, False)):
        kto = METHODS.get("diffusion-kto")()
        kto.setup(make_gen(tiny_sd_dir), {**FAST, "empty_prompt_prob": prob}, seed=0)
        rollout = sample(kto.gen)
        calls = []
        hook = kto.gen.components.unet.register_forward_pre_hook(
            lambda m, a, kw, calls=calls: calls.append((a[1].clone(), kw["encoder_hidden_states"].clone())),
            with_kwargs=True)
        kto.learn(rollout, Feedback(good=GOOD), torch.Generator().manual_seed(1))
        hook.remove()
        assert len(calls) == 2 * 3  # trained and reference forward per step
        for t, emb in calls:
            assert all(torch.equal(row, empty) == want_empty for row in emb)
            assert t.min() >= 0 and t.max() < 1000
    # the same rng gives the same update
    a, b = (METHODS.get("diffusion-kto")() for _ in range(2))
    for m in (a, b):
        m.setup(make_gen(tiny_sd_dir), FAST, seed=0)
        m.learn(sample(m.gen), Feedback(good=GOOD), torch.Generator().manual_seed(5))
    assert all(torch.equal(p, q) for p, q in zip(lora_parameters(a.gen.components.unet),
                                                 lora_parameters(b.gen.components.unet)))


def test_resume_from_state_equals_uninterrupted_learning(tiny_sd_dir, tmp_path):
    batches = [(sample(make_gen(tiny_sd_dir), seed), Feedback(good=g)) for seed, g in
               ((0, GOOD), (1, (False, False, True, True)))]
    ref = METHODS.get("diffusion-kto")()
    ref.setup(make_gen(tiny_sd_dir), FAST, seed=0)
    for i, (rollout, fb) in enumerate(batches):
        ref.learn(rollout, fb, torch.Generator().manual_seed(10 + i))

    first = METHODS.get("diffusion-kto")()
    first.setup(make_gen(tiny_sd_dir), FAST, seed=0)
    first.learn(*batches[0], torch.Generator().manual_seed(10))
    save_lora(first.gen.components.unet, tmp_path / "lora")
    torch.save(first.state_dict(), tmp_path / "state.pt")

    resumed = METHODS.get("diffusion-kto")()
    resumed.setup(make_gen(tiny_sd_dir), FAST, seed=0)
    load_lora(resumed.gen.components.unet, tmp_path / "lora")
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    resumed.learn(*batches[1], torch.Generator().manual_seed(11))
    assert all(torch.equal(p, q) for p, q in zip(lora_parameters(resumed.gen.components.unet),
                                                 lora_parameters(ref.gen.components.unet)))
    assert resumed.step == ref.step == 6 and torch.equal(resumed.buffer_good, ref.buffer_good)

    other = METHODS.get("diffusion-kto")()
    other.setup(make_gen(tiny_sd_dir), {**FAST, "beta": 10.0}, seed=0)
    with pytest.raises(HerobenchError, match="options"):
        other.load_state_dict(first.state_dict())


# ------------------------------------------------------------------ through the runner


def world_settings(world, **kw) -> RunSettings:
    data = {"task": "hand", "method": "diffusion-kto", "budget_labels": 8, "model": str(world), "batch_size": 4,
            "sampler": {"steps": 3, "guidance_scale": 2.0}, "eval": {"n_images": 2, "every_labels": 4, "batch_size": 2},
            "method_options": {"steps_per_iteration": 3, "train_batch": 4, "lr_warmup_steps": 4}, **kw}
    return from_dict(RunSettings, data)


def test_two_iterations_through_the_runner(tmp_path_factory, tmp_path):
    from herobench.harness.runner import run

    path, summary = run(world_settings(tiny_world_dir(tmp_path_factory)), out=tmp_path, progress=False)
    assert summary["labels"] == 8 and summary["iterations"] == 2
    train = read_jsonl(path / "train.jsonl")
    assert [r["iteration"] for r in train] == [1, 2]
    assert json.loads((path / "config.json").read_text())["settings"]["method"] == "diffusion-kto"


def test_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path_factory, tmp_path):
    from test_reliability_resume import _kill_at_nth, _run_dir, assert_same_run, fresh, in_child, resume

    settings = world_settings(tiny_world_dir(tmp_path_factory), budget_labels=12)
    state, _ = in_child(fresh(settings, tmp_path / "ref"))
    assert state == "done"
    ref = _run_dir(tmp_path / "ref")
    # killed while iteration 2's checkpoint is written: the resume restores iteration 1's buffer, AdamW's
    # moments and the warmup's step count
    state, _ = in_child(fresh(settings, tmp_path / "k"), _kill_at_nth("mkdir", "latest.tmp", 3))
    assert state == "killed"
    path = _run_dir(tmp_path / "k")
    assert json.loads((path / "checkpoints" / "latest" / "harness.json").read_text())["iteration"] == 1
    assert in_child(resume(path))[0] == "done"
    assert_same_run(path, ref)
