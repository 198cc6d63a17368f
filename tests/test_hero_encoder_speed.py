"""Issue 30's faster HERO encoder step changes no number: it equals the textbook step bit for bit.

The reference below is the step as it was before issue 30 (``nn.MaxPool2d`` pools, ``torch.optim.Adam``'s
own ``step``, the all-pairs indices rebuilt every epoch). Run side by side from the same seed, the two must
leave identical weights, optimizer state, loss statistics and rewards; so must :func:`flat_adam` against
torch's Adam, and :class:`ChannelsLastMaxPool` against ``nn.MaxPool2d`` (values and gradients, ties included).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from herobench.methods.flat_adam import MAX_NUMEL, _PlainSteps, flat_adam
from herobench.methods.hero import build_representation
from herobench.methods.hero_repr import (
    ChannelsLastMaxPool,
    compute_rewards,
    train_representation,
    triplet_indices,
    triplet_loss,
)

torch.set_num_threads(1)


def _reference_fit(encoder, head, optimizer, x, n_pos, n_neg, epochs, triplets, rng):
    """The encoder loop before issue 30 (hero_repr._fit_triplets at 5fafb18), for comparison."""
    def loss_on(z, pi, ni):
        return triplet_loss(z[:1], z[1 : 1 + n_pos][pi], z[1 + n_pos :][ni], 0.5, "pairwise")

    for epoch in range(epochs):
        pi, ni = triplet_indices(n_pos, n_neg, triplets, n_pos + n_neg + 1, rng)
        loss = loss_on(head(encoder(x)), pi, ni)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if epoch == 0:
            start = float(loss.detach())
    with torch.no_grad():
        end = float(loss_on(head(encoder(x)), *triplet_indices(n_pos, n_neg, "all_pairs", 0, None)))
    return start, end


def _plain_pools(encoder):
    """A copy of ``encoder`` with ``nn.MaxPool2d(2)`` wherever it pools (the encoder before issue 30)."""
    plain = copy.deepcopy(encoder)
    for i, m in enumerate(plain.convs):
        if isinstance(m, ChannelsLastMaxPool):
            plain.convs[i] = nn.MaxPool2d(2)
    return plain


def _equal_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> bool:
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    return sa.keys() == sb.keys() and all(
        list(sa[k]) == list(sb[k]) and all(torch.equal(sa[k][n], sb[k][n]) for n in sa[k]) for k in sa
    )


@pytest.mark.parametrize("triplets", ["all_pairs", "sampled"])
def test_encoder_training_is_bit_identical_to_the_step_before_issue_30(triplets):
    encoder, head = build_representation((4, 16, 16), 0, seed=3)  # GlyphWorld's scaled encoder
    ref_encoder, ref_head = _plain_pools(encoder), copy.deepcopy(head)
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-5)
    ref_opt = torch.optim.Adam([*ref_encoder.parameters(), *ref_head.parameters()], lr=1e-5)
    g = torch.Generator().manual_seed(0)
    for iteration in range(2):  # the optimizer's state carries over, as across HERO's iterations
        latents = torch.randn(24, 4, 16, 16, generator=g)
        good = torch.rand(24, generator=g) < 0.4
        good[5] = True
        best = latents[5]
        stats = train_representation(encoder, head, opt, latents, good, best, best_index=5, epochs=40,
                                     triplets=triplets, rng=torch.Generator().manual_seed(iteration))
        pos = torch.nonzero(good & (torch.arange(24) != 5)).flatten()
        neg = torch.nonzero(~good).flatten()
        x = torch.cat([best[None], latents[torch.cat([pos, neg])]])
        ref_encoder.train(), ref_head.train()
        start, end = _reference_fit(ref_encoder, ref_head, ref_opt, x, len(pos), len(neg), 40, triplets,
                                    torch.Generator().manual_seed(iteration))
        ref_encoder.eval(), ref_head.eval()
        assert (stats["repr_loss_start"], stats["repr_loss_end"]) == (start, end)
        for p, q in zip([*encoder.parameters(), *head.parameters()],
                        [*ref_encoder.parameters(), *ref_head.parameters()], strict=True):
            assert torch.equal(p, q)
        assert _equal_state(opt, ref_opt)
        assert torch.equal(compute_rewards(encoder, latents, best), compute_rewards(ref_encoder, latents, best))
    assert stats["repr_loss_end"] != stats["repr_loss_start"]  # it did train


def test_flat_adam_equals_torch_adam_step_for_step():
    torch.manual_seed(0)
    shapes = [(8, 4, 3, 3), (8,), (33, 17), (1,), (5, 130)]  # odd sizes: vector bodies and tails move
    ours = [nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [nn.Parameter(p.detach().clone()) for p in ours]
    opt, ref = torch.optim.Adam(ours, lr=1e-3, betas=(0.8, 0.99)), torch.optim.Adam(theirs, lr=1e-3, betas=(0.8, 0.99))
    g = torch.Generator().manual_seed(1)
    for _block in range(3):  # three blocks: state written back, then picked up again
        with flat_adam(opt) as steps:
            assert not isinstance(steps, _PlainSteps)
            for _ in range(100):
                grads = [torch.randn(s, generator=g) * 10.0 ** torch.randint(-6, 2, (), generator=g) for s in shapes]
                steps.zero_grad()
                ref.zero_grad(set_to_none=True)
                for p, q, gr in zip(ours, theirs, grads):
                    p.grad, q.grad = gr.clone(), gr.clone()
                steps.step()
                ref.step()
        for p, q in zip(ours, theirs):
            assert torch.equal(p, q)
        assert _equal_state(opt, ref)


def test_flat_adam_leaves_other_optimizers_to_their_own_step():
    p = nn.Parameter(torch.randn(3))
    big = nn.Parameter(torch.zeros(MAX_NUMEL + 1))  # where the flat copies cost more than they save
    for opt in (torch.optim.Adam([p], weight_decay=0.1), torch.optim.Adam([p], amsgrad=True),
                torch.optim.Adam([p], foreach=True), torch.optim.AdamW([p]), torch.optim.SGD([p], lr=0.1),
                torch.optim.Adam([big])):
        with flat_adam(opt) as steps:
            assert isinstance(steps, _PlainSteps)


@pytest.mark.parametrize("shape", [(3, 8, 16, 16), (2, 5, 7, 9)])
def test_channels_last_pool_equals_maxpool_values_and_gradients_with_ties(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-2, 3, shape, generator=g).float()  # few distinct values: many tied maxima
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ChannelsLastMaxPool()(a), nn.MaxPool2d(2)(b)
    assert torch.equal(ya, yb) and ya.is_contiguous()
    w = torch.randn(ya.shape, generator=g)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert torch.equal(a.grad, b.grad) and a.grad.is_contiguous()
