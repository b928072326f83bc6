"""Dice + focal loss (paper: both training stages), on logits against {0, 1} or soft targets; and a spatial
cross-entropy that stage 1 may add (TrainConfig.spatial_ce_weight)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per sample, averaged over the batch; inputs (B, ...)."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017), mean over pixels; ``alpha < 0`` disables the class weight."""
    logits, target = logits.float(), target.float()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.mean()


def dice_focal_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0, focal_weight: float = 1.0,
                    alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    return dice_weight * dice_loss(logits, target) + focal_weight * focal_loss(logits, target, alpha, gamma)


def spatial_ce(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Cross-entropy of a softmax over each map's positions against the target normalised to sum to one,
    averaged over the samples with a non-empty target; inputs (B, ...). Unlike a per-pixel loss, the
    positions compete: probability on another object is taken from the referent as surely as probability
    on background."""
    logp = torch.log_softmax(logits.float().flatten(1), dim=1)
    t = target.float().flatten(1)
    mass = t.sum(1)
    keep = mass > eps
    if not keep.any():
        return logits.sum() * 0.0
    q = t[keep] / mass[keep, None]
    return -(q * logp[keep]).sum(1).mean()
