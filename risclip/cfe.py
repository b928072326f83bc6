"""Cross-modal Feature Extraction (paper eqs. 1-3).

At a fusion point, both streams are projected into a shared width, each cross-attends to the other
and the result is projected back and added residually::

    t_s = W_t2s t,  v_s = W_v2s v                       (1)
    t_m = MHCA(t_s, v_s, v_s),  v_m = MHCA(v_s, t_s, t_s)  (2)
    t'  = t + W_s2t t_m,        v'  = v + W_s2v v_m       (3)

Choices where the paper is silent (config fields): a LayerNorm before W_t2s / W_v2s (``cfe_norm``),
both directions computed from the same pre-fusion tokens, padding tokens of the text masked out as
keys. W_s2t and W_s2v are zero-initialised, so CFE starts as the identity. With ``cfe_gate`` the
projections keep their default initialisation and each direction is instead scaled by tanh of a
zero-initialised learned scalar (gated cross-attention as in Flamingo), which also starts as the
identity but bounds how fast the fused signal can grow.

Fusion points pair a block of the shallower tower with the block of the deeper tower at the same
relative depth (:func:`fusion_points`); for ViT-B/16 (12 and 12 blocks) that is block l with block l.
"""

from __future__ import annotations

import torch
from torch import nn

from .kernels import attention
from .registry import PATCH_STAGE, ComponentSpec, register


def fusion_points(vision_layers: int, text_layers: int) -> list[tuple[int, int]]:
    """(vision block, text block) pairs after which a CFE may act, one per block of the shallower tower."""
    shallow, deep = min(vision_layers, text_layers), max(vision_layers, text_layers)
    pairs = []
    for i in range(shallow):
        j = round((i + 1) * deep / shallow) - 1
        pairs.append((j, i) if vision_layers >= text_layers else (i, j))
    return pairs


class CrossModalFusion(nn.Module):
    def __init__(self, vision_width: int, text_width: int, dim: int, heads: int, norm: bool = True,
                 gate: bool = False, fused: bool = True) -> None:
        super().__init__()
        self.fused = fused  # attention by one SDPA call per direction (risclip.kernels), or nn.MultiheadAttention's
        self.norm_v = nn.LayerNorm(vision_width) if norm else nn.Identity()
        self.norm_t = nn.LayerNorm(text_width) if norm else nn.Identity()
        self.v2s = nn.Linear(vision_width, dim)
        self.t2s = nn.Linear(text_width, dim)
        self.text_queries_image = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.image_queries_text = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.s2t = nn.Linear(dim, text_width)
        self.s2v = nn.Linear(dim, vision_width)
        self.gate_v = self.gate_t = None
        if gate:
            self.gate_v = nn.Parameter(torch.zeros(()))
            self.gate_t = nn.Parameter(torch.zeros(()))
        else:
            for lin in (self.s2t, self.s2v):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(self, v: torch.Tensor, t: torch.Tensor,
                text_padding: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``v`` (B, Nv, Dv), ``t`` (B, T, Dt), ``text_padding`` (B, T) True where a token is padding."""
        vs = self.v2s(self.norm_v(v))
        ts = self.t2s(self.norm_t(t))
        tm = attention(self.text_queries_image, ts, vs, None, self.fused)
        vm = attention(self.image_queries_text, vs, ts, text_padding, self.fused)
        dv, dt = self.s2v(vm), self.s2t(tm)
        if self.gate_v is not None:
            dv, dt = torch.tanh(self.gate_v) * dv, torch.tanh(self.gate_t) * dt
        return v + dv, t + dt


# this component, declared once (risclip/registry.py)
SPEC = register(ComponentSpec(
    name="cfe", stage=PATCH_STAGE, acts_at="fusion_points", rung=2, builtin=True, origin=__name__,
    summary="cross-modal feature extraction: image and text tokens cross-attend at the fusion points",
    modules=("cfe",), fields=("cfe_dim", "cfe_heads", "cfe_layers", "cfe_norm", "cfe_gate")))
