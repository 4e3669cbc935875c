"""Domain adaptation of the Epoch Adaptor: gradient reversal + per-level domain discriminator."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-coeff``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, coeff: float = 1.0) -> Tensor:
        ctx.coeff = float(coeff)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.coeff * grad, None


def grad_reverse(x: Tensor, coeff: float = 1.0) -> Tensor:
    """Apply ``GradientReversal`` to x (any shape)."""
    return GradientReversal.apply(x, coeff)


class DomainDiscriminator(nn.Module):
    """One small head per neck level: 1x1 conv -> ReLU -> 1x1 conv -> 2 logits, mean over positions.

    channels: the detector's ``feature_channels`` (C_i per level). hidden width: ``max(16, C_i // 2)``.
    """

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, max(16, c // 2), 1), nn.ReLU(inplace=True), nn.Conv2d(max(16, c // 2), 2, 1))
            for c in channels
        )

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """feats: per level (B, C_i, H_i, W_i) -> per level (B, 2) domain logits."""
        return [head(f).mean(dim=(2, 3)) for head, f in zip(self.heads, feats)]


def domain_loss(disc: DomainDiscriminator, feats_l: list[Tensor], feats_u: list[Tensor], coeff: float = 1.0) -> Tensor:
    """Cross-entropy of the discriminator behind a gradient-reversal layer, averaged over levels.

    feats_l / feats_u: per level (B_l, C_i, H_i, W_i) / (B_u, C_i, H_i, W_i) neck outputs of the
    labeled (domain 0) and unlabeled (domain 1) images (spatial sizes may differ between the two).
    The discriminator learns to tell the domains apart while the features receive
    ``-coeff`` times its gradient (they learn to confuse it). Returns a scalar (float32).
    """
    rev_l = [grad_reverse(f, coeff) for f in feats_l]
    rev_u = [grad_reverse(f, coeff) for f in feats_u]
    if all(a.shape[1:] == b.shape[1:] for a, b in zip(rev_l, rev_u)):  # one forward (DDP-friendly)
        logits = disc([torch.cat([a, b]) for a, b in zip(rev_l, rev_u)])
    else:
        logits = [torch.cat([a, b]) for a, b in zip(disc(rev_l), disc(rev_u))]
    n_l, n_u = feats_l[0].shape[0], feats_u[0].shape[0]
    dev = feats_l[0].device
    labels = torch.cat([torch.zeros(n_l, dtype=torch.long, device=dev), torch.ones(n_u, dtype=torch.long, device=dev)])
    return torch.stack([F.cross_entropy(lg.float(), labels) for lg in logits]).mean()


def da_ramp(step: int, ramp_steps: int) -> float:
    """Weight of the domain loss at SSOD iteration ``step``: linear from 0 to 1 over ``ramp_steps`` (0 = none)."""
    if ramp_steps <= 0:
        return 1.0
    return min(max(step, 0) / ramp_steps, 1.0)
