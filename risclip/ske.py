"""Shared-space Knowledge Exploitation (SKE).

The paper's module uses CLIP's image-text shared embedding space to discern the referent. Its exact
form is not in the material this project started from, so this is a **reconstruction** (docs/design.md, "SKE"):

1. at each vision block in ``ske_layers``, the patch tokens go through CLIP's own frozen ``ln_post``
   and ``proj`` into the shared space, and their cosine with the sentence embedding gives one map per
   layer (CLIP's alignment knowledge at several depths, as MaskCLIP-style grounding at each layer);
2. a small head fuses the stack of maps, the current patch logits and the final patch features
   modulated by the sentence embedding (``P * s``, a 1x1 conv to ``ske_dim``) with two 3x3 convs;
3. its output is added to the patch logits. The last conv is zero-initialised: SKE starts as the identity.

If the paper's SKE differs (e.g. attention over the shared space rather than convolutions over maps),
only this module changes; its inputs (multi-layer shared-space maps, patch and sentence embeddings)
and its output (refined patch logits) stay.
"""

from __future__ import annotations

import torch
from torch import nn


class SharedSpaceKnowledge(nn.Module):
    def __init__(self, n_maps: int, embed_dim: int, dim: int) -> None:
        super().__init__()
        self.feat = nn.Conv2d(embed_dim, dim, kernel_size=1)
        self.fuse = nn.Sequential(
            nn.Conv2d(dim + n_maps + 1, dim, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(dim, 1, kernel_size=3, padding=1),
        )
        nn.init.zeros_(self.fuse[-1].weight)
        nn.init.zeros_(self.fuse[-1].bias)

    def forward(self, layer_maps: torch.Tensor, patch: torch.Tensor, sentence: torch.Tensor,
                logits: torch.Tensor) -> torch.Tensor:
        """``layer_maps`` (B, K, h, w) cosines; ``patch`` (B, E, h, w) and ``sentence`` (B, E), both
        L2-normalised; ``logits`` (B, h, w). Returns refined logits (B, h, w)."""
        f = self.feat(patch * sentence[:, :, None, None])
        x = torch.cat([f, layer_maps, logits[:, None]], dim=1)
        return logits + self.fuse(x)[:, 0]
