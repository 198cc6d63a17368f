"""HERO's feedback-aligned representation learning and the reward it defines.

An encoder ``E`` maps the latent that enters the *last* denoising step (``Rollout.last_step_input``)
to a 2048-d feature; a projection head sits on top for training only. Each iteration the encoder and
head are trained with a triplet loss -- anchor = the best image, positive = a good image, negative =
a bad image, distance ``d(a, b) = (1 - cos(a, b)) / 2`` on head outputs, margin 0.5 -- for 500
epochs with Adam (lr 1e-5); both persist across iterations. The reward of an image is then
``(cos(E(x), E(x_best)) + 1) / 2`` on the encoder features (before the head).

Triplets. The official code (``TripletDataset``, sony/hero ``rl4dgm/models/dataset.py:28-67``) draws, each
epoch, as many triplets as the batch has images, with a uniformly random positive and
negative each, in one minibatch (its final encoder config has ``batch_size`` 2048 > 64), i.e. one
Adam step per epoch. Our default ``"all_pairs"`` uses every (positive, negative) pair of the batch
in that one step: the expectation of the official loss, without its sampling noise and without an
RNG. ``"sampled"`` reproduces the official draw.

Distance (``triplet_distance``). ``"pairwise"`` (default) is the paper's ``d(a, b) = (1 - cos(a, b)) / 2``
per triplet, cosine over the 512 head features. ``"official"`` is what the official trainer computes:
its distance passes ``dim=0`` to ``cosine_similarity`` (sony/hero ``rl4dgm/encoder_trainers.py:16-18``)
and ``nn.TripletMarginWithDistanceLoss`` (``:107-110``) gets ``N×512`` minibatches, so it compares each
*feature column across the N triplets* (``512`` distances) and averages the hinge over the columns; the
anchor rows are N copies of the best image (``rl4dgm/models/dataset.py:56``). We keep ``"pairwise"`` as
the default: it is the distance the paper states, and the official ``dim=0`` reads as the 1-D formula of
one triplet applied unchanged to a batch; ``"official"`` reproduces the released code. (With the official
distance the loss is not a mean over triplets, so ``"all_pairs"`` is not the expectation of ``"sampled"``;
the released code's loss is ``triplet_distance = "official"`` with ``triplet_sampling = "sampled"``.)
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from herobench.methods.flat_adam import flat_adam

TripletSampling = Literal["all_pairs", "sampled"]
TripletDistance = Literal["pairwise", "official"]


class _ChannelsLastPool2(torch.autograd.Function):
    """2×2 max-pooling of an NCHW tensor through torch's channels-last kernel, forward and backward, NCHW in
    and out (a plain ``.contiguous(channels_last)`` would hand its backward a channels-last gradient, and the
    ReLU's and convolution's backward are slower on it than the pool gains)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x_cl = x.contiguous(memory_format=torch.channels_last)
        y, indices = torch.ops.aten.max_pool2d_with_indices(x_cl, [2, 2], [2, 2])
        ctx.save_for_backward(x_cl, indices)
        ctx.mark_non_differentiable(indices)
        return y.contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x_cl, indices = ctx.saved_tensors
        grad_cl = grad.contiguous(memory_format=torch.channels_last)
        g = torch.ops.aten.max_pool2d_with_indices_backward(grad_cl, x_cl, [2, 2], [2, 2], [0, 0], [1, 1], False,
                                                            indices)
        return g.contiguous()


class ChannelsLastMaxPool(nn.Module):
    """``nn.MaxPool2d(2)`` computed with torch's channels-last kernel, NCHW in and out.

    Why: torch's NCHW max-pool kernel on CPU is slow on HERO's small maps (the first layer's ``B×8×16×16``
    pool took most of the step's pooling time); the channels-last kernel, copies included, takes about
    half as long (``benchmarks/bench_encoder_step.py``). A maximum is exact, the windows do not overlap
    and the gradient goes to the same (first) maximum, so values and gradients are bit-identical to
    ``nn.MaxPool2d(2)``'s; the next convolution still sees NCHW (its rounding is unchanged).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ChannelsLastPool2.apply(x)


class HeroEncoder(nn.Module):
    """HERO's latent encoder: three 3×3 convs (4→8→16→32, padding 1), each ReLU + 2×2 max-pool, then
    flatten, linear to ``feature_dim`` and ReLU. The first two pools are :class:`ChannelsLastMaxPool`
    (the same numbers, faster); the last, on ``B×32×(h/4)×(w/4)``, is plain (the copies cost more there).

    Args:
        in_channels: latent channels ``C`` (4 for SD).
        latent_size: latent side ``h = w``, or ``(h, w)``: 64 for SD-1.5 (→ 32×8×8 = 2048 inputs to
            the linear layer), 16 for GlyphWorld (→ 32×2×2 = 128). Each side must be >= 8.
        feature_dim: output features (HERO: 2048).

    Shapes: ``B×C×h×w`` float -> ``B×feature_dim`` (non-negative, after the final ReLU).
    """

    def __init__(
        self, in_channels: int = 4, latent_size: int | tuple[int, int] = 64, feature_dim: int = 2048
    ):
        super().__init__()
        h, w = (latent_size, latent_size) if isinstance(latent_size, int) else latent_size
        if h < 8 or w < 8:
            raise ValueError(f"latent size must be at least 8×8 for three 2×2 poolings, got {h}×{w}")
        layers: list[nn.Module] = []
        channels = (in_channels, 8, 16, 32)
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            pool = ChannelsLastMaxPool() if i < 2 else nn.MaxPool2d(2)
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU(), pool]
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(32 * (h // 8) * (w // 8), feature_dim)
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.convs(x).flatten(1)))


class ProjectionHead(nn.Module):
    """MLP ``2048 → 2048 → 1024 → 512`` with ReLU between layers (none after the last); training only."""

    def __init__(self, feature_dim: int = 2048, hidden: tuple[int, ...] = (2048, 1024), out_dim: int = 512):
        super().__init__()
        dims = (feature_dim, *hidden, out_dim)
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def cosine_distance(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``(1 - cos(a, b)) / 2`` along ``dim``, in ``[0, 1]``: ``…×D, …×D -> …`` for the default last dim
    (one distance per pair); ``N×D, N×D -> D`` for ``dim=0`` (the official code's, one per feature column)."""
    return (1.0 - F.cosine_similarity(a, b, dim=dim)) / 2.0


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float = 0.5,
    distance: TripletDistance = "pairwise",
) -> torch.Tensor:
    """``mean(relu(d(a, p) - d(a, n) + margin))`` with :func:`cosine_distance`, which equals
    ``nn.TripletMarginWithDistanceLoss`` with that distance.

    Args:
        anchor: ``N×D`` or ``1×D`` (broadcast: the official anchor rows are N copies of the best image).
        positive, negative: ``N×D``.
        distance: ``"pairwise"``: one distance per triplet (cosine over the ``D`` features), the hinge
            averaged over the ``N`` triplets; ``"official"``: the official code's ``dim=0`` cosine, one
            distance per feature column (cosine over the ``N`` triplets), the hinge averaged over ``D``.
    """
    if distance == "pairwise":
        return F.relu(cosine_distance(anchor, positive) - cosine_distance(anchor, negative) + margin).mean()
    if distance == "official":
        a = anchor.expand_as(positive)
        return F.relu(cosine_distance(a, positive, 0) - cosine_distance(a, negative, 0) + margin).mean()
    raise ValueError(f"unknown triplet distance {distance!r}")


def triplet_indices(
    n_pos: int, n_neg: int, mode: TripletSampling, n_draws: int, rng: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(pos, neg)`` of one epoch's triplets: all ``n_pos·n_neg`` pairs, or ``n_draws``
    uniform draws with replacement (the official code's ``random.choice`` per item)."""
    if mode == "all_pairs":
        return torch.arange(n_pos).repeat_interleave(n_neg), torch.arange(n_neg).repeat(n_pos)
    if mode == "sampled":
        return (
            torch.randint(n_pos, (n_draws,), generator=rng),
            torch.randint(n_neg, (n_draws,), generator=rng),
        )
    raise ValueError(f"unknown triplet sampling {mode!r}")


def train_representation(
    encoder: HeroEncoder,
    head: ProjectionHead,
    optimizer: torch.optim.Optimizer,
    latents: torch.Tensor,
    good: torch.Tensor,
    best_latent: torch.Tensor | None,
    *,
    best_index: int | None = None,
    epochs: int = 500,
    margin: float = 0.5,
    triplets: TripletSampling = "all_pairs",
    distance: TripletDistance = "pairwise",
    rng: torch.Generator | None = None,
) -> dict[str, float]:
    """Train ``encoder`` + ``head`` on this batch's triplets, one optimizer step per epoch.

    Args:
        latents: ``B×C×h×w`` latents entering the last denoising step (``rollout.last_step_input``).
        good: ``B`` bools, the rater's labels.
        best_latent: ``C×h×w`` anchor (the current best image's latent), or None when there is none.
        best_index: the best image's row in this batch when it was picked from this batch; it is
            the anchor and so is not also used as a positive.
        epochs: optimizer steps (HERO: 500).
        margin: triplet margin (HERO: 0.5).
        triplets: ``"all_pairs"`` (default) or ``"sampled"`` (official code; ``B`` random triplets per
            epoch, needs ``rng``). See the module docstring.
        distance: ``"pairwise"`` (default, the paper's) or ``"official"`` (the official code's ``dim=0``
            cosine); see :func:`triplet_loss`.
        rng: CPU generator for ``"sampled"``.

    Returns:
        ``repr_trained`` (1/0), ``repr_positives``, ``repr_negatives`` and, when trained,
        ``repr_loss_start`` (first epoch) and ``repr_loss_end`` (all pairs, after the last step).
        Training is skipped -- nothing changes -- without an anchor, without a positive (no good
        image, or the only good image is the new best) or without a negative (every image good).
    """
    pos, neg = _positives_negatives(good, latents.shape[0], best_index)
    stats = {"repr_trained": 0.0, "repr_positives": float(len(pos)), "repr_negatives": float(len(neg))}
    if best_latent is None or len(pos) == 0 or len(neg) == 0 or epochs == 0:
        return stats
    if triplets == "sampled" and rng is None:
        raise ValueError("triplets='sampled' needs an rng")
    device = next(encoder.parameters()).device
    rows = latents.to(device)[torch.cat([pos, neg]).to(device)]
    x = torch.cat([best_latent.to(device)[None], rows]).to(torch.float32)
    fit = _fit_triplets(encoder, head, optimizer, x, len(pos), len(neg), epochs, margin, triplets, distance, rng,
                        n_draws=latents.shape[0])  # the official code draws B triplets per epoch
    return stats | fit | {"repr_trained": 1.0}


def _positives_negatives(good, n: int, best_index: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of the positives (good, except the new best, which is the anchor) and negatives."""
    good = torch.as_tensor(good, dtype=torch.bool).cpu()
    if good.numel() != n:
        raise ValueError(f"{good.numel()} labels for {n} latents")
    is_pos = good.clone()
    if best_index is not None:
        is_pos[best_index] = False
    return torch.nonzero(is_pos).flatten(), torch.nonzero(~good).flatten()


def _fit_triplets(encoder, head, optimizer, x: torch.Tensor, n_pos: int, n_neg: int, epochs: int, margin: float,
                  triplets: TripletSampling, distance: TripletDistance, rng, n_draws: int) -> dict[str, float]:
    """``epochs`` optimizer steps on ``x`` = [anchor, positives…, negatives…]; the first epoch's loss and the
    all-pairs loss after the last step."""
    device = x.device
    stats = {}

    def loss_on(z: torch.Tensor, pi: torch.Tensor, ni: torch.Tensor) -> torch.Tensor:
        anchor, p, n = z[:1], z[1 : 1 + n_pos], z[1 + n_pos :]
        return triplet_loss(anchor, p[pi], n[ni], margin, distance)

    def on_device(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return pair[0].to(device), pair[1].to(device)

    # all pairs are the same every epoch: built once (a step is overhead-bound, issue 30); "sampled" draws
    # each epoch's from ``rng``, in the same order as before
    all_pairs = on_device(triplet_indices(n_pos, n_neg, "all_pairs", 0, None))
    encoder.train()
    head.train()
    with flat_adam(optimizer) as steps:  # torch's CPU Adam on one flat tensor: the same numbers, faster
        for epoch in range(epochs):
            if triplets == "all_pairs":
                pi, ni = all_pairs
            else:
                pi, ni = on_device(triplet_indices(n_pos, n_neg, triplets, n_draws, rng))
            loss = loss_on(head(encoder(x)), pi, ni)
            steps.zero_grad()
            loss.backward()
            steps.step()
            if epoch == 0:
                stats["repr_loss_start"] = float(loss.detach())
    encoder.eval()
    head.eval()
    with torch.no_grad():
        stats["repr_loss_end"] = float(loss_on(head(encoder(x)), *all_pairs))
    return stats


@torch.no_grad()
def compute_rewards(
    encoder: HeroEncoder,
    latents: torch.Tensor,
    best_latent: torch.Tensor,
    mode: Literal["best", "mean_good"] = "best",
    good_latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """HERO's reward: ``(cos(E(x), E(x_best)) + 1) / 2`` on encoder features.

    Args:
        latents: ``B×C×h×w`` latents entering the last denoising step.
        best_latent: ``C×h×w`` the best image's latent.
        mode: ``"best"`` (HERO's default) or ``"mean_good"``: the mean of that similarity over
            ``good_latents`` (``G×C×h×w``); with no good latent it falls back to ``"best"``.

    Returns:
        ``B`` float32 rewards in ``[0, 1]`` on the encoder's device (the best image itself gets 1).
    """
    if mode not in ("best", "mean_good"):
        raise ValueError(f"unknown reward mode {mode!r}")
    device = next(encoder.parameters()).device
    feats = encoder(latents.to(device, torch.float32))
    if mode == "mean_good" and good_latents is not None and len(good_latents) > 0:
        refs = encoder(good_latents.to(device, torch.float32))
        sim = F.cosine_similarity(feats[:, None], refs[None], dim=-1).mean(dim=1)
    else:
        ref = encoder(best_latent.to(device, torch.float32)[None])
        sim = F.cosine_similarity(feats, ref, dim=-1)
    return ((sim + 1.0) / 2.0).clamp(0.0, 1.0)
