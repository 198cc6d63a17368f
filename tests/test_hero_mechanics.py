"""HERO's mechanics, one paper point per test (pure functions, milliseconds to a second each)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from herobench.config import from_dict
from herobench.errors import ConfigError
from herobench.harness.rater import SimulatedRater
from herobench.methods.base import cycle_prompts, merge_fixed
from herobench.methods.baselines import denoising_loss, denoising_target
from herobench.methods.d3po import D3POMethod, D3POOptions, noise_groups
from herobench.methods.hero import HeroOptions
from herobench.methods.hero_repr import (
    HeroEncoder,
    ProjectionHead,
    compute_rewards,
    cosine_distance,
    train_representation,
    triplet_loss,
)
from herobench.methods.noise_pool import n_from_best, next_noise, pool_eval_noise
from herobench.types import Verdict

torch.set_num_threads(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ encoder, distance, loss, reward


@pytest.mark.parametrize("size, flat", [(16, 32 * 2 * 2), (64, 32 * 8 * 8)])
def test_encoder_shapes_scale_with_the_latent(size, flat):
    enc = HeroEncoder(4, size)
    assert enc.fc.in_features == flat  # three 2x2 poolings: size / 8 per side, 32 channels
    x = torch.randn(3, 4, size, size)
    feats = enc(x)
    assert feats.shape == (3, 2048)
    assert (feats >= 0).all()  # final ReLU
    assert ProjectionHead()(feats).shape == (3, 512)
    convs = [m for m in enc.convs if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (4, 8, (3, 3), (1, 1)),
        (8, 16, (3, 3), (1, 1)),
        (16, 32, (3, 3), (1, 1)),
    ]
    head_dims = [(m.in_features, m.out_features) for m in ProjectionHead().mlp if isinstance(m, nn.Linear)]
    assert head_dims == [(2048, 2048), (2048, 1024), (1024, 512)]


def test_encoder_rejects_latents_too_small_to_pool():
    with pytest.raises(ValueError):
        HeroEncoder(4, 4)


def test_triplet_loss_exact_value():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # d = 0.5, 0, (1 - 1/sqrt2)/2
    n = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])  # d = 0, 1, 0.5
    expected = (1.0 + 0.0 + (1 - 1 / math.sqrt(2)) / 2) / 3  # relu(d_ap - d_an + 0.5), mean
    assert triplet_loss(a, p, n, margin=0.5).item() == pytest.approx(expected, abs=1e-6)
    reference = nn.TripletMarginWithDistanceLoss(
        distance_function=lambda x, y: (1 - nn.functional.cosine_similarity(x, y, dim=-1)) / 2, margin=0.5
    )
    assert triplet_loss(a, p, n).item() == pytest.approx(reference(a, p, n).item(), abs=1e-6)


def test_cosine_distance_is_in_unit_interval():
    x = torch.randn(500, 16)
    y = torch.randn(500, 16)
    d = cosine_distance(x, y)
    assert (d >= 0).all() and (d <= 1).all()
    assert cosine_distance(x, x) == pytest.approx(torch.zeros(500), abs=1e-6)
    assert cosine_distance(x, -x) == pytest.approx(torch.ones(500), abs=1e-6)
    assert cosine_distance(x, 3 * x) == pytest.approx(torch.zeros(500), abs=1e-6)  # scale-free


def test_reward_in_unit_interval_and_one_for_the_best():
    torch.manual_seed(0)
    enc = HeroEncoder(4, 16)
    latents = torch.randn(8, 4, 16, 16)
    r = compute_rewards(enc, latents, latents[3])
    assert r.shape == (8,)
    assert ((r >= 0) & (r <= 1)).all()
    assert r[3].item() == pytest.approx(1.0, abs=1e-5)
    assert (r[torch.arange(8) != 3] < 1 - 1e-6).all()
    # mean-good mode: the mean of the per-good similarities; one good image = "best" mode
    rg = compute_rewards(enc, latents, latents[3], mode="mean_good", good_latents=latents[[1, 5]])
    per_good = [compute_rewards(enc, latents, latents[i]) for i in (1, 5)]
    assert rg == pytest.approx((per_good[0] + per_good[1]) / 2, abs=1e-5)
    assert compute_rewards(enc, latents, latents[3], "mean_good", latents[[3]]) == pytest.approx(r, abs=1e-6)
    # no good image: falls back to the best
    empty = latents[:0]
    assert compute_rewards(enc, latents, latents[3], "mean_good", empty) == pytest.approx(r, abs=1e-6)
    with pytest.raises(ValueError):
        compute_rewards(enc, latents, latents[3], mode="median")


# ------------------------------------------------------------------ representation learning


def _toy_batch(n_good: int, n_bad: int, seed: int = 0):
    """Latents 4×8×8 whose first channel is +1 (good) or -1 (bad), plus noise: separable."""
    g = _gen(seed)
    noise = 0.3 * torch.randn(n_good + n_bad, 4, 8, 8, generator=g)
    sign = torch.tensor([1.0] * n_good + [-1.0] * n_bad)
    latents = noise.clone()
    latents[:, 0] += sign[:, None, None]
    good = sign > 0
    return latents, good


def _learner(seed: int = 0, lr: float = 1e-3):
    """A narrow encoder + head (same architecture, 64-d features) so that training takes milliseconds."""
    torch.manual_seed(seed)
    enc, head = HeroEncoder(4, 8, feature_dim=64), ProjectionHead(64, (64,), 32)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=lr)
    return enc, head, opt


def _params(*modules) -> list[torch.Tensor]:
    return [p.detach().clone() for m in modules for p in m.parameters()]


@pytest.mark.parametrize("triplets", ["all_pairs", "sampled"])
def test_representation_training_reduces_triplet_loss(triplets):
    latents, good = _toy_batch(5, 5)
    enc, head, opt = _learner()
    stats = train_representation(
        enc, head, opt, latents, good, latents[0], best_index=0, epochs=60, triplets=triplets, rng=_gen(1)
    )
    assert stats["repr_trained"] == 1.0
    # the best is the anchor, not also a positive
    assert stats["repr_positives"] == 4 and stats["repr_negatives"] == 5
    assert stats["repr_loss_end"] < 0.5 * stats["repr_loss_start"]
    # the reward it defines now ranks good above bad
    r = compute_rewards(enc, latents, latents[0])
    assert r[good].min() > r[~good].max()


@pytest.mark.parametrize(
    "good, best_index, positives, negatives",
    [
        ([True] * 6, 2, 5, 0),  # every image good: no negative
        ([False] * 6, None, 0, 6),  # no good image (the previous best stays the anchor): no positive
        ([False, False, True, False, False, False], 2, 0, 5),  # the new best was the only good image
    ],
)
def test_representation_training_skips_without_triplets(good, best_index, positives, negatives):
    latents, _ = _toy_batch(3, 3)
    enc, head, opt = _learner()
    before = _params(enc, head)
    stats = train_representation(
        enc, head, opt, latents, torch.tensor(good), latents[1], best_index=best_index, epochs=5
    )
    assert stats == {"repr_trained": 0.0, "repr_positives": positives, "repr_negatives": negatives}
    assert all(torch.equal(a, b) for a, b in zip(before, _params(enc, head)))


def test_representation_training_skips_without_anchor():
    latents, good = _toy_batch(3, 3)
    enc, head, opt = _learner()
    before = _params(enc, head)
    assert train_representation(enc, head, opt, latents, good, None, epochs=5)["repr_trained"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, _params(enc, head)))


# ------------------------------------------------------------------ noise pool


def test_pool_fractions_from_best_and_good():
    best = torch.randn(4, 8, 8, generator=_gen(0))
    good = torch.randn(3, 4, 8, 8, generator=_gen(1))
    for n, beta in [(64, 0.5), (64, 0.25), (10, 0.5), (7, 0.5), (5, 1.0), (5, 0.0)]:
        out = next_noise(best, good, n, beta=beta, sigma=0.0, rng=_gen(2))  # sigma 0: exact copies
        from_best = [torch.equal(row, best) for row in out]
        k = int(math.floor(beta * n + 0.5))
        assert sum(from_best) == k == n_from_best(n, beta)
        assert all(from_best[:k])
        assert all(any(torch.equal(row, g) for g in good) for row in out[k:])
    # the good noises are chosen uniformly (with replacement)
    out = next_noise(best, good, 3000, beta=0.0, sigma=0.0, rng=_gen(3))
    counts = [sum(torch.equal(row, g) for row in out) for g in good]
    assert all(abs(c - 1000) < 120 for c in counts)


def test_pool_perturbation_keeps_unit_variance():
    best = torch.randn(4, 32, 32, generator=_gen(0))
    good = torch.randn(5, 4, 32, 32, generator=_gen(1))
    out = next_noise(best, good, 256, beta=0.5, sigma=0.1, rng=_gen(2))
    assert out.var().item() == pytest.approx(1.0, abs=0.02)
    assert out.mean().item() == pytest.approx(0.0, abs=0.02)
    # each row stays close to its source: correlation sqrt(1 - sigma^2) ≈ 0.995
    corr = torch.corrcoef(torch.stack([out[0].flatten(), best.flatten()]))[0, 1]
    assert corr.item() == pytest.approx(math.sqrt(1 - 0.01), abs=0.005)
    # a large sigma keeps unit variance too (the mix is variance-preserving)
    out = next_noise(best, good, 256, beta=0.5, sigma=0.8, rng=_gen(2))
    assert out.var().item() == pytest.approx(1.0, abs=0.02)


def test_pool_is_deterministic_per_generator():
    best = torch.randn(4, 8, 8, generator=_gen(0))
    good = torch.randn(3, 4, 8, 8, generator=_gen(1))
    a = next_noise(best, good, 16, rng=_gen(5))
    b = next_noise(best, good, 16, rng=_gen(5))
    c = next_noise(best, good, 16, rng=_gen(6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_pool_edge_cases():
    best = torch.randn(4, 8, 8, generator=_gen(0))
    empty = torch.zeros(0, 4, 8, 8)
    # empty good pool: everything from the best noise
    out = next_noise(best, empty, 6, beta=0.5, sigma=0.0, rng=_gen(1))
    assert all(torch.equal(row, best) for row in out)
    # no best: plain N(0, I), the same draw as torch.randn from that generator
    out = next_noise(None, empty, 6, rng=_gen(1))
    assert torch.equal(out, torch.randn(6, 4, 8, 8, generator=_gen(1)))


def test_pool_eval_noise_is_deterministic_and_optional():
    best = torch.randn(4, 8, 8, generator=_gen(0))
    good = torch.randn(2, 4, 8, 8, generator=_gen(1))
    eps = torch.randn(6, 4, 8, 8, generator=_gen(2))
    out = pool_eval_noise(best, good, eps, beta=0.5, sigma=0.1)
    s = math.sqrt(1 - 0.01)
    assert torch.allclose(out[:3], s * best + 0.1 * eps[:3])
    assert torch.allclose(out[3:], s * good[[0, 1, 0]] + 0.1 * eps[3:])
    assert torch.equal(pool_eval_noise(None, good[:0], eps), eps)


# ------------------------------------------------------------------ options


def test_hero_defaults_are_the_papers():
    o = HeroOptions()
    assert (o.beta, o.sigma, o.encoder_epochs, o.encoder_lr, o.triplet_margin) == (0.5, 0.1, 500, 1e-5, 0.5)
    pg = o.pg_config(20)
    assert (o.lora_rank, pg.lr, pg.n_train_timesteps, pg.clip_range, pg.adv_clip, pg.max_grad_norm) == (
        4,
        1e-3,
        5,
        1e-4,
        5.0,
        1.0,
    )
    assert o.feedback_guided_generation and o.representation_learning and not o.eval_from_pool


def test_hero_options_are_validated():
    with pytest.raises(ConfigError, match="method_options.bta"):
        from_dict(HeroOptions, {"bta": 0.5}, "method_options")
    with pytest.raises(ConfigError, match="method_options.beta"):
        from_dict(HeroOptions, {"beta": 1.5}, "method_options")
    with pytest.raises(ConfigError, match="method_options.reward_mode"):
        from_dict(HeroOptions, {"reward_mode": "median"}, "method_options")
    with pytest.raises(ConfigError, match="method_options.n_train_timesteps"):
        from_dict(HeroOptions, {"n_train_timesteps": 0}, "method_options")
    # an ablation variant fixes its switch; contradicting it is an error, repeating it is fine
    fixed = {"feedback_guided_generation": False}
    assert merge_fixed({"beta": 0.3}, fixed, "hero-no-fgg") == {
        "beta": 0.3,
        "feedback_guided_generation": False,
    }
    assert merge_fixed({"feedback_guided_generation": False}, fixed, "hero-no-fgg") == fixed
    with pytest.raises(ConfigError, match="hero-no-fgg"):
        merge_fixed({"feedback_guided_generation": True}, fixed, "hero-no-fgg")


# ------------------------------------------------------------------ D3PO groups and pairs


def test_d3po_groups_share_initial_noise_and_prompt():
    m = D3POMethod()
    m.options = D3POOptions(images_per_noise=3)  # what setup would resolve
    x = m.init_noise(8, (4, 8, 8), _gen(0))
    groups = m.groups(8)
    assert groups == noise_groups(8, 3) == [0, 0, 0, 1, 1, 1, 2, 2]
    for i in range(8):
        for j in range(8):
            assert torch.equal(x[i], x[j]) == (groups[i] == groups[j])

    class Task:
        train_prompts = ("a", "b")

    prompts = m.train_prompts(Task, 8)
    assert prompts == ["a", "a", "a", "b", "b", "b", "a", "a"]
    assert cycle_prompts(("a", "b", "c"), 5) == ["a", "b", "c", "a", "b"]

    # the rater compares only images of a group: same prompt, same x_T, one good and one bad
    good = [True, False, False, True, True, False, True, True]
    verdicts = [Verdict(success=g, score=float(g), reason="toy") for g in good]
    pairs = SimulatedRater().rate(verdicts, m.protocol, groups=groups).pairs
    assert pairs == ((0, 1), (0, 2), (3, 5), (4, 5))  # group 2 is all good: no comparison
    for w, lose in pairs:
        assert torch.equal(x[w], x[lose]) and prompts[w] == prompts[lose] and good[w] and not good[lose]


# ------------------------------------------------------------------ DreamBooth target


def test_denoising_target_matches_diffusers_per_prediction_type():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x0 = torch.randn(3, 4, 8, 8, generator=_gen(0))
    noise = torch.randn(3, 4, 8, 8, generator=_gen(1))
    t = torch.tensor([10, 500, 990])
    ab = sched.alphas_cumprod[t]
    x_t, eps_target = denoising_target("epsilon", x0, noise, ab)
    assert torch.allclose(x_t, sched.add_noise(x0, noise, t), atol=1e-6)
    assert torch.equal(eps_target, noise)
    x_t_v, v_target = denoising_target("v_prediction", x0, noise, ab)
    assert torch.equal(x_t_v, x_t)
    assert torch.allclose(v_target, sched.get_velocity(x0, noise, t), atol=1e-6)
    assert torch.equal(denoising_target("sample", x0, noise, ab)[1], x0)
    with pytest.raises(ValueError):
        denoising_target("flow", x0, noise, ab)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_denoising_loss_is_zero_for_the_right_target_only(prediction_type):
    """A UNet that knows x_0 and predicts the right kind of target has zero loss; others do not."""
    from diffusers import DDIMScheduler

    x0 = torch.randn(4, 4, 8, 8, generator=_gen(0))

    class Oracle(nn.Module):
        dtype = torch.float32

        def __init__(self, kind, sched):
            super().__init__()
            self.kind, self.sched = kind, sched

        def forward(self, x_t, t, encoder_hidden_states=None, return_dict=False):
            a = self.sched.alphas_cumprod[t].reshape(-1, 1, 1, 1)
            eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
            out = {"epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0, "sample": x0}[
                self.kind
            ]
            return (out,)

    sched = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=prediction_type
    )
    for kind in ("epsilon", "v_prediction", "sample"):
        loss = denoising_loss(Oracle(kind, sched), sched, x0, torch.zeros(4, 1, 1), _gen(3)).item()
        assert (loss < 1e-8) == (kind == prediction_type), (kind, loss)



@pytest.mark.parametrize("size, f", [(64, 2048), (16, 128)])
def test_scaled_feature_dim_is_the_paper_at_sd_size(size, f):
    """HeroOptions.feature_dim=0 scales encoder and head with the latent: SD-1.5's 4×64×64 gives exactly
    the paper's 2048 features and 2048→2048→1024→512 head; GlyphWorld's 4×16×16 gives 128→128→64→32."""
    from herobench.methods.hero import build_representation

    enc, head = build_representation((4, size, size), feature_dim=0, seed=0)
    z = enc(torch.zeros(2, 4, size, size))
    assert z.shape == (2, f) and head(z).shape == (2, f // 4)
    assert [m.out_features for m in head.modules() if isinstance(m, torch.nn.Linear)] == [f, f // 2, f // 4]
