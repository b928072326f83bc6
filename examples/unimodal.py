"""A capacity control for CFE, as a plug-in: at CFE's own fusion points, a residual bottleneck MLP on each stream
(vision tokens and text tokens apart), with as many trainable parameters as CFE has there, and no attention
between the two. ``adapters,unimodal`` against ``adapters,cfe`` then asks whether CFE's gain comes from its
cross-modal attention or from more trainable parameters in the same places.

    python -m bench.ablate --plugin examples.unimodal --components adapters,unimodal --components adapters,cfe

The bottleneck width is chosen in ``build`` from the model's widths and ``cfe_dim`` / ``cfe_heads`` (by
counting a CFE block's parameters), so the match holds for any backbone. The up-projections are
zero-initialised: the plug-in starts as the identity, as CFE does. The other control, the adapters widened to
the trainable parameters of adapters + CFE, needs no plug-in: ``python -m bench.capacity`` prints its width
and the command.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from risclip.cfe import CrossModalFusion
from risclip.registry import PATCH_STAGE, ComponentSpec, register


@dataclass(frozen=True)
class UnimodalConfig:
    width: int = 0  # the bottleneck width; 0: match CFE's trainable parameters at each fusion point


def residual_mlp(width: int, hidden: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


def matched_width(vision_width: int, text_width: int, cfe_dim: int, cfe_heads: int) -> int:
    """The bottleneck width whose two residual MLPs hold as many parameters as one CFE block."""
    target = sum(p.numel() for p in CrossModalFusion(vision_width, text_width, cfe_dim, cfe_heads).parameters())
    fixed = 2 * vision_width + 2 * text_width + vision_width + text_width  # LayerNorms and the up-biases
    per_unit = 2 * vision_width + 2 * text_width + 2  # both projections' weights and the hidden biases
    return max(1, round((target - fixed) / per_unit))


class Unimodal(nn.Module):
    """A residual MLP per stream at each fusion point in ``where`` (CFE's ``cfe_layers``; every point by default)."""

    def __init__(self, where: list[int], vision_width: int, text_width: int, hidden: int) -> None:
        super().__init__()
        self.where = {p: i for i, p in enumerate(where)}
        self.vision = nn.ModuleList(residual_mlp(vision_width, hidden) for _ in where)
        self.text = nn.ModuleList(residual_mlp(text_width, hidden) for _ in where)

    def fusion(self, k: int, v: torch.Tensor, t: torch.Tensor, ctx) -> tuple[torch.Tensor, torch.Tensor]:
        if k not in self.where:
            return v, t
        i = self.where[k]
        return v + self.vision[i](v), t + self.text[i](t)


def build(model, settings: UnimodalConfig) -> Unimodal:
    cfg = model.cfg
    hidden = settings.width or matched_width(model.vision_width, model.text_width, cfg.cfe_dim, cfg.cfe_heads)
    where = list(range(len(model.points))) if cfg.cfe_layers is None else list(cfg.cfe_layers)
    return Unimodal(where, model.vision_width, model.text_width, hidden)


register(ComponentSpec(
    name="unimodal", stage=PATCH_STAGE, acts_at="fusion", config=UnimodalConfig, build=build, origin=__name__,
    summary="capacity control for CFE: per-stream residual MLPs at the fusion points, CFE's parameter count"))
