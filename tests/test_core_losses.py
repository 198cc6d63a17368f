"""Exact values of the advantage and loss functions on hand-computed inputs."""

import math

import pytest
import torch

from herobench.core.losses import PerPromptStatTracker, d3po_loss, normalize_advantages, ppo_clip_loss


def close(a, b, tol=1e-6):
    torch.testing.assert_close(
        torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), rtol=0, atol=tol
    )


def test_batch_normalisation_uses_population_std():
    adv = normalize_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    s = math.sqrt(1.25)  # population std of 1..4
    close(adv, [-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s])


def test_advantages_are_clipped():
    # one success among 37: its advantage is sqrt(36) = 6 before clipping, the others -1/6
    r = torch.tensor([0.0] * 36 + [1.0])
    adv = normalize_advantages(r, clip=5.0)
    close(adv[-1], 5.0)
    close(adv[:-1], torch.full((36,), -1 / 6))
    close(normalize_advantages(r, clip=100.0)[-1], 6.0, tol=1e-5)


def test_per_prompt_normalisation():
    prompts = ["a", "b", "a", "b", "c"]
    r = torch.tensor([1.0, 10.0, 3.0, 30.0, 7.0])
    close(normalize_advantages(r, prompts), [-1.0, -1.0, 1.0, 1.0, 0.0])  # "c" seen once -> 0
    assert not torch.allclose(normalize_advantages(r), normalize_advantages(r, prompts))
    with pytest.raises(ValueError):
        normalize_advantages(r, prompts[:2])


def test_equal_rewards_give_zero_advantages():
    close(normalize_advantages(torch.ones(4)), torch.zeros(4))


def test_stat_tracker_uses_buffer_once_it_has_min_count():
    tr = PerPromptStatTracker(buffer_size=4, min_count=3, eps=0.0)
    # 2 buffered < min_count: batch statistics (mean 2, std 1)
    close(tr.update(["a", "a"], torch.tensor([1.0, 3.0])), [-1.0, 1.0])
    # buffer [1, 3, 5, 7]: mean 4, population std sqrt(5)
    close(tr.update(["a", "a"], torch.tensor([5.0, 7.0])), [1 / math.sqrt(5), 3 / math.sqrt(5)])
    # buffer keeps the last 4: [5, 7, 9, 11] -> mean 8, std sqrt(5)
    close(tr.update(["a", "a"], torch.tensor([9.0, 11.0])), [1 / math.sqrt(5), 3 / math.sqrt(5)])
    state = tr.state_dict()
    again = PerPromptStatTracker(buffer_size=4, min_count=3, eps=0.0)
    again.load_state_dict(state)
    close(again.update(["a"], torch.tensor([8.0])), tr.update(["a"], torch.tensor([8.0])))


def test_ppo_clip_loss_values_and_gradient():
    ratio = torch.tensor([1.0, 1.5, 0.5])
    log_prob = ratio.log().requires_grad_(True)
    old = torch.zeros(3)
    adv = torch.tensor([1.0, 2.0, -1.0])
    loss, stats = ppo_clip_loss(log_prob, old, adv, clip_range=0.2)
    # per item -min(A r, A clip(r)): -min(1, 1) = -1; -min(3, 2.4) = -2.4; -min(-0.5, -0.8) = 0.8
    close(loss, (-1.0 - 2.4 + 0.8) / 3)
    close(stats["clipfrac"], 2 / 3)
    close(stats["approx_kl"], 0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2) / 3)
    loss.backward()
    # only the unclipped item carries gradient: d(-A r)/d log r = -A r = -1, divided by N
    close(log_prob.grad, [-1 / 3, 0.0, 0.0])


def test_ppo_clip_loss_at_ratio_one_is_the_policy_gradient():
    log_prob = torch.zeros(4, requires_grad=True)
    adv = torch.tensor([2.0, -1.0, 0.5, 0.0])
    loss, stats = ppo_clip_loss(log_prob, torch.zeros(4), adv, clip_range=1e-4)
    close(loss, -adv.mean())
    close(stats["clipfrac"], 0.0)
    loss.backward()
    close(log_prob.grad, -adv / 4)


def test_d3po_loss_value_and_sign():
    z = torch.zeros(2)
    close(d3po_loss(z, z, z, z), math.log(2))  # policy == reference
    lw = torch.tensor([1.0, 1.0], requires_grad=True)
    ll = torch.tensor([-1.0, -1.0], requires_grad=True)
    loss = d3po_loss(lw, ll, z, z, beta=0.5)
    close(loss, math.log1p(math.exp(-1.0)))  # -logsigmoid(0.5 * (1 - (-1)))
    loss.backward()
    assert (lw.grad < 0).all() and (ll.grad > 0).all()  # raise the winner, lower the loser
    # the reference enters with the opposite sign
    close(d3po_loss(z, z, lw.detach(), ll.detach(), beta=0.5), math.log1p(math.exp(1.0)))
    # preferring the loser costs more than log 2
    assert d3po_loss(ll.detach(), lw.detach(), z, z) > math.log(2)


def test_d3po_ratio_clip():
    z = torch.zeros(1)
    lw, ll = torch.tensor([1.0], requires_grad=True), torch.tensor([-1.0])
    loss = d3po_loss(lw, ll, z, z, beta=0.5, ratio_clip=0.1)  # the official 1 ± 0.1 (config/base.py:103)
    close(loss, -torch.nn.functional.logsigmoid(torch.tensor(0.5 * (math.log(1.1) - math.log(0.9)))))
    loss.backward()
    close(lw.grad, [0.0])  # clamped: no gradient, as in the official D3PO code
