"""Shared-space Knowledge Exploitation (SKE): two reconstructions, chosen by ``model.ske_form``.

The paper's module uses CLIP's image-text shared embedding space to discern the referent. Its exact
form is not in the material this project started from, so both forms here are readings
(docs/design.md, "SKE"); the ladder report scores both at rung 3 and val chooses.

``maps`` (:class:`SharedSpaceKnowledge`, the first reconstruction):

1. at each vision block in ``ske_layers``, the patch tokens go through CLIP's own frozen ``ln_post``
   and ``proj`` into the shared space, and their cosine with the sentence embedding gives one map per
   layer (CLIP's alignment knowledge at several depths, as MaskCLIP-style grounding at each layer);
2. a small head fuses the stack of maps, the current patch logits and the final patch features
   modulated by the sentence embedding (``P * s``, a 1x1 conv to ``ske_dim``) with two 3x3 convs;
3. its output is added to the patch logits. The last conv is zero-initialised: SKE starts as the identity.

``joint`` (:class:`JointSpaceSKE`, read from a third-party reimplementation of the paper's first arXiv
version): a few transformer blocks after both encoders over every token already mapped into CLIP's
joint space (patch tokens through ``ln_post`` and ``proj``, text tokens through ``ln_final`` and
``text_projection``). Each block adds, residually: cross-attention from patches to text, cross-attention
from text to patches, self-attention over patches and text together, and an MLP, each after a
LayerNorm. The output projections are zero-initialised, so at step 0 the blocks are the identity and
the map equals CLIP's own cosine map. The map is the cosine of the refined patch tokens with the
refined sentence (EOS) token. It alone among the components gives trainable image-to-image attention
steered by the text, which position and relation expressions need. Our choices (the reading does not
fix them): ``ske_blocks`` blocks (default 2), ``embed_dim // 64`` heads (at least 1), an MLP of twice
the width, GELU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import attention
from .registry import PATCH_STAGE, ComponentSpec, register


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


def _zero(linear: nn.Linear) -> nn.Linear:
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class JointSpaceBlock(nn.Module):
    """One block of :class:`JointSpaceSKE`: patch->text and text->patch cross-attention, joint
    self-attention, MLP; each residual, pre-LayerNorm, with a zero-initialised output projection."""

    def __init__(self, dim: int, heads: int, fused: bool = True) -> None:
        super().__init__()
        self.fused = fused  # attention by SDPA (risclip.kernels) or nn.MultiheadAttention's own path
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(6)])
        self.patch_reads_text = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.text_reads_patch = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.joint = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), _zero(nn.Linear(2 * dim, dim)))
        for attn in (self.patch_reads_text, self.text_reads_patch, self.joint):
            _zero(attn.out_proj)

    def forward(self, p: torch.Tensor, t: torch.Tensor, text_padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_p, n_t, n_j, n_tt, n_m, n_mt = self.norms
        pn, tn = n_p(p), n_t(t)
        p = p + attention(self.patch_reads_text, pn, tn, text_padding, self.fused)
        t = t + attention(self.text_reads_patch, tn, pn, None, self.fused)
        x = torch.cat([n_j(p), n_tt(t)], dim=1)
        pad = torch.cat([torch.zeros_like(text_padding[:, :1]).expand(-1, p.shape[1]), text_padding], dim=1)
        x = attention(self.joint, x, x, pad, self.fused)
        p, t = p + x[:, : p.shape[1]], t + x[:, p.shape[1]:]
        p = p + self.mlp(n_m(p))
        t = t + self.mlp(n_mt(t))
        return p, t


class JointSpaceSKE(nn.Module):
    def __init__(self, embed_dim: int, blocks: int = 2, fused: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([JointSpaceBlock(embed_dim, max(1, embed_dim // 64), fused) for _ in range(blocks)])

    def forward(self, patch: torch.Tensor, text: torch.Tensor, text_padding: torch.Tensor,
                eos: torch.Tensor) -> torch.Tensor:
        """``patch`` (B, N, E) and ``text`` (B, T, E) in the joint space, ``text_padding`` (B, T) True on
        padding, ``eos`` (B,) the sentence token's position. Returns the cosine map (B, N)."""
        p, t = patch.float(), text.float()
        for block in self.blocks:
            p, t = block(p, t, text_padding)
        sentence = t[torch.arange(t.shape[0], device=t.device), eos]
        return torch.einsum("bne,be->bn", F.normalize(p, dim=-1), F.normalize(sentence, dim=-1))


# this component, declared once (risclip/registry.py)
SPEC = register(ComponentSpec(
    name="ske", stage=PATCH_STAGE, acts_at="patch_map", rung=3, builtin=True, origin=__name__,
    summary="shared-space knowledge exploitation: refines the patch map from CLIP's shared space",
    modules=("ske",), fields=("ske_form", "ske_layers", "ske_dim", "ske_blocks")))
