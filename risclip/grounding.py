"""The patch-level grounding map: cosine of patch and sentence embeddings in CLIP's shared space.

m = scale * cos(P, s) + bias, with P the patch embeddings (value tokens when the ``value`` flag is
on, MaskCLIP) and s the sentence (EOS) embedding. Zero-shot (nothing trained) the map is binarised by
min-max normalising each map and thresholding at ``tau`` (the paper does not say how; docs/design.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import ComponentSpec, register


def patch_cosine(patch: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
    """``patch`` (B, N, E), ``sentence`` (B, E) -> cosine similarities (B, N)."""
    return torch.einsum("bne,be->bn", F.normalize(patch.float(), dim=-1), F.normalize(sentence.float(), dim=-1))


def minmax_normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each map (leading dim = batch) scaled to [0, 1]; a constant map becomes all zeros."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(maps)


def zero_shot_mask(cosine_map: torch.Tensor, size: tuple[int, int], tau: float) -> torch.Tensor:
    """One (h, w) cosine map -> boolean mask at ``size``: bilinear resize, min-max normalise, > tau."""
    up = F.interpolate(cosine_map[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    return minmax_normalise(up[None])[0] > tau


# this component, declared once (risclip/registry.py)
SPEC = register(ComponentSpec(
    name="value", stage=None, acts_at="value_path", rung=0, builtin=True, origin=__name__,
    summary="MaskCLIP's value-token grounding in the last vision block (rung 0)",
    modules=(), fields=("value_path", "tau", "map_scale_init", "map_bias_init")))
