"""docs/FIDELITY.md, HERO rows: each mechanism against a value computed by hand or by the official
formula (sony/hero @6770c7e), not by re-running herobench's own code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fixtures_sd import tiny_sd_fixture  # noqa: F401 (pytest fixture)
from torch import nn

from herobench.config import from_dict
from herobench.core.generator import Generator, SamplerConfig
from herobench.core.pipeline import load_components
from herobench.errors import ConfigError, HerobenchError
from herobench.harness.rater import SimulatedRater
from herobench.methods.hero import HeroMethod, HeroOptions
from herobench.methods.hero_repr import (
    HeroEncoder,
    ProjectionHead,
    compute_rewards,
    train_representation,
    triplet_loss,
)
from herobench.methods.noise_pool import n_from_best, perturb
from herobench.types import Rollout, Verdict

torch.set_num_threads(1)

# ------------------------------------------------------------------ triplet loss and distance
# Fixed triplets, N = 2, D = 2; the anchor is the best image, repeated per triplet as the official
# DataLoader stacks it (rl4dgm/models/dataset.py:56).
A = torch.tensor([[1.0, -1.0]])
P = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
NEG = torch.tensor([[0.0, 1.0], [-1.0, 1.0]])


def test_pairwise_triplet_distance_by_hand():
    # per triplet, d = (1 - cos(a, x)) / 2 over the D features:
    #   triplet 1: cos(a, p) = -1/sqrt(10), cos(a, n) = -1/sqrt(2)  -> relu(d_p - d_n + 0.5)
    #   triplet 2: cos(a, p) = 1/sqrt(2),   cos(a, n) = -1           -> relu(0.1464 - 1 + 0.5) = 0
    d_p1, d_n1 = (1 + 1 / math.sqrt(10)) / 2, (1 + 1 / math.sqrt(2)) / 2
    expected = (max(d_p1 - d_n1 + 0.5, 0.0) + 0.0) / 2  # 0.152281
    assert triplet_loss(A, P, NEG, 0.5, "pairwise").item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.1522805, abs=1e-6)


def test_official_triplet_distance_by_hand_and_by_the_official_formula():
    # dim=0: per feature column, the cosine over the N = 2 triplets (anchor column = a_j repeated):
    #   column 0: cos((1,1), (1,3)) = 2/sqrt(5), cos((1,1), (0,-1)) = -1/sqrt(2) -> hinge 0
    #   column 1: cos((-1,-1), (2,0)) = -1/sqrt(2), cos((-1,-1), (1,1)) = -1  -> hinge 1/(2 sqrt 2)
    d = [((1 - 2 / math.sqrt(5)) / 2, (1 + 1 / math.sqrt(2)) / 2), ((1 + 1 / math.sqrt(2)) / 2, 1.0)]
    expected = sum(max(dp - dn + 0.5, 0.0) for dp, dn in d) / 2
    assert expected == pytest.approx(1 / (4 * math.sqrt(2)), abs=1e-9)
    assert triplet_loss(A, P, NEG, 0.5, "official").item() == pytest.approx(expected, abs=1e-6)
    # the official criterion (rl4dgm/encoder_trainers.py:16-18, 107-110) on the repeated anchor rows
    official = nn.TripletMarginWithDistanceLoss(
        distance_function=lambda x1, x2: 1 - (nn.functional.cosine_similarity(x1, x2, dim=0) + 1) / 2,
        margin=0.5,
    )
    anchors = A.expand(2, -1)
    assert triplet_loss(A, P, NEG, 0.5, "official").item() == pytest.approx(official(anchors, P, NEG).item(), abs=1e-6)
    # and it is not the paper's per-pair loss on the same triplets
    assert abs(triplet_loss(A, P, NEG, 0.5, "official").item() - triplet_loss(A, P, NEG, 0.5).item()) > 0.02
    with pytest.raises(ValueError, match="triplet distance"):
        triplet_loss(A, P, NEG, 0.5, "euclid")


# ------------------------------------------------------------------ encoder input, reward, noise pool


def test_encoder_input_is_the_official_last_step_input():
    # official: latents[:, :-1] are the latents *before* each step (ddpo_trainer.py:389-391) and the
    # encoder reads its last entry (train_hero.py:185), i.e. x entering the last denoising step
    b, t = 2, 4
    latents = torch.arange(b * (t + 1), dtype=torch.float32).reshape(b, t + 1, 1, 1, 1).expand(-1, -1, 4, 2, 2)
    r = Rollout(prompts=["p"] * b, latents=latents, log_probs=torch.zeros(b, t), timesteps=torch.arange(t),
                prompt_embeds=torch.zeros(b, 1, 1), negative_embeds=torch.zeros(b, 1, 1), images=torch.zeros(b, 3, 2, 2))
    official = latents[:, :-1][:, -1]
    assert torch.equal(r.last_step_input, official)
    assert r.last_step_input[:, 0, 0, 0].tolist() == [3.0, 8.0]  # rows 0..4 and 5..9: step T-1 = index 3
    assert torch.equal(r.init_noise, latents[:, 0])  # official sd_noises = all_latents[:, 0] (train_hero.py:186)


def _identity_encoder() -> nn.Module:
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(2))
    return nn.Sequential(nn.Flatten(), lin)


def test_reward_is_the_official_cosine_to_the_best_by_hand():
    # official: (cos(E(x), E(x_best)) + 1) / 2 on encoder features (train_hero.py:303-306)
    enc = _identity_encoder()
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0]]).reshape(3, 2, 1, 1)
    best = torch.tensor([1.0, 1.0]).reshape(2, 1, 1)
    c = 1 / math.sqrt(2)
    expected = [(1 + c) / 2, (1 - c) / 2, (1 + c) / 2]
    assert compute_rewards(enc, x, best).tolist() == pytest.approx(expected, abs=1e-6)
    # "similarity-to-all-positive" (train_hero.py:313-320): mean cosine over the good ones, then (.+1)/2
    good = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 2, 1, 1)
    expected_mean = [(1 + (1 + 0) / 2) / 2, (1 + (-1 + 0) / 2) / 2, (1 + (0 + 1) / 2) / 2]
    assert compute_rewards(enc, x, best, "mean_good", good).tolist() == pytest.approx(expected_mean, abs=1e-6)


@pytest.mark.parametrize("n", range(1, 70))
def test_noise_pool_best_count_is_the_official_one_at_beta_half(n):
    # official: rows with sample_index < n · best_latent_ratio start from the best (ddpo_trainer.py:341-344)
    assert n_from_best(n, 0.5) == sum(1 for i in range(n) if i < n * 0.5)


def test_noise_pool_perturbation_by_hand():
    # official: sqrt(1 - 0.1²)·z + 0.1·ε (ddpo_trainer.py:354-356; latent_noise 0.1, ddpo_train.py:30)
    z, eps = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, 0.0, -1.0])
    expected = [0.99498744 * 1.0 + 0.03, 0.99498744 * -2.0, 0.99498744 * 0.5 - 0.1]
    assert perturb(z, eps, 0.1).tolist() == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------ best pick, HERO level


def _verdicts(good) -> list[Verdict]:
    return [Verdict(success=bool(g), score=1.0 if g else 0.0, reason="pass/fail") for g in good]


def test_hero_anchor_stays_put_when_no_new_image_is_strictly_better(tiny_sd_dir):
    """Three HERO iterations on the tiny SD with a pass/fail rater (every success scores 1.0, as on
    GlyphWorld): the first best is kept as the anchor (latent, noise, half of the next batch), as a person
    keeps it (user_feedback_interface.py:675-698), instead of being redrawn among tied successes."""
    gen = Generator(load_components(tiny_sd_dir), SamplerConfig(steps=3))
    hero = HeroMethod()
    hero.setup(gen, {"encoder_epochs": 2, "n_train_timesteps": 1}, seed=0)
    rater = SimulatedRater()
    prompts = ["1 hand"] * 4
    labels = [(True, False, True, True), (True, True, False, True), (False, True, True, True)]
    anchors = []
    for it, good in enumerate(labels):
        rng = torch.Generator().manual_seed(it)
        noise = hero.init_noise(4, gen.latent_shape, rng)
        if it > 0:  # rows 0..1 (beta 0.5) start from the kept best noise
            for row in noise[:2]:
                assert torch.corrcoef(torch.stack([row.flatten(), anchors[0][1].flatten()]))[0, 1] > 0.95
        rollout = gen.sample(prompts, init_noise=noise, generator=rng)
        fb = rater.rate(_verdicts(good), "hero", rng=np.random.default_rng([0, it]))  # the rater keeps its best's score
        stats = hero.learn(rollout, fb, torch.Generator().manual_seed(10 + it))
        anchors.append((hero.state.best_latent.clone(), hero.state.best_noise.clone()))
        assert stats["best_updated"] == float(it == 0)
    for latent, noise in anchors[1:]:
        assert torch.equal(latent, anchors[0][0]) and torch.equal(noise, anchors[0][1])


def test_triplet_distance_option_trains_and_resumes_old_checkpoints(tiny_sd_dir):
    assert HeroOptions().triplet_distance == "pairwise"
    with pytest.raises(ConfigError, match="triplet_distance"):
        from_dict(HeroOptions, {"triplet_distance": "cosine"}, "method_options")
    # the official distance trains the encoder through the same loop
    g = torch.Generator().manual_seed(0)
    latents = 0.3 * torch.randn(10, 4, 8, 8, generator=g)
    latents[:5, 0] += 1.0
    good = torch.arange(10) < 5
    torch.manual_seed(0)
    enc, head = HeroEncoder(4, 8, feature_dim=64), ProjectionHead(64, (64,), 32)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=1e-3)
    stats = train_representation(enc, head, opt, latents, good, latents[0], best_index=0, epochs=40,
                                 triplets="sampled", distance="official", rng=torch.Generator().manual_seed(1))
    assert stats["repr_trained"] == 1.0 and stats["repr_loss_end"] < stats["repr_loss_start"]
    # a checkpoint written before the option existed resumes (it ran the default)
    gen = Generator(load_components(tiny_sd_dir), SamplerConfig(steps=2))
    hero = HeroMethod()
    hero.setup(gen, {"encoder_epochs": 1}, seed=0)
    state = hero.state_dict()
    del state["options"]["triplet_distance"]
    again = HeroMethod()
    again.setup(Generator(load_components(tiny_sd_dir), SamplerConfig(steps=2)), {"encoder_epochs": 1}, seed=0)
    again.load_state_dict(state)
    official = HeroMethod()
    official.setup(Generator(load_components(tiny_sd_dir), SamplerConfig(steps=2)),
                   {"encoder_epochs": 1, "triplet_distance": "official"}, seed=0)
    with pytest.raises(HerobenchError, match="other HERO options"):
        official.load_state_dict(state)
