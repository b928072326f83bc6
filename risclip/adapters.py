"""Bottleneck adapters (paper: down-projection, non-linearity, up-projection, residually attached to
the MHSA and MLP of every block of both encoders).

Placement: on the outputs of attention and MLP, in open_clip's LayerScale slots (``ls_1``, ``ls_2``)
before each block's residual add; an adapter maps ``h -> h + up(act(down(h)))``. The up-projection is
zero-initialised, so at initialisation every adapter is the identity and the model equals frozen CLIP.
GELU is our choice of non-linearity (the paper names none).
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import PATCH_STAGE, ComponentSpec, register


class Adapter(nn.Module):
    def __init__(self, width: int, bottleneck: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.drop(self.act(self.down(h))))


class BlockAdapters(nn.Module):
    """The two adapters of one transformer block (``attn`` and ``mlp``; ``mlp`` is None for a block whose
    MLP never runs, as in the last vision block on MaskCLIP's value path)."""

    def __init__(self, width: int, bottleneck: int, dropout: float = 0.0, mlp: bool = True) -> None:
        super().__init__()
        self.attn = Adapter(width, bottleneck, dropout)
        self.mlp = Adapter(width, bottleneck, dropout) if mlp else None


def encoder_adapters(layers: int, width: int, bottleneck: int, dropout: float = 0.0,
                     last_mlp: bool = True) -> nn.ModuleList:
    return nn.ModuleList(BlockAdapters(width, bottleneck, dropout, mlp=last_mlp or i < layers - 1)
                         for i in range(layers))


# this component, declared once (risclip/registry.py)
SPEC = register(ComponentSpec(
    name="adapters", stage=PATCH_STAGE, acts_at="inside_blocks", rung=1, builtin=True, origin=__name__,
    summary="bottleneck adapters on attention and MLP of every block of both encoders",
    modules=("vision_adapters", "text_adapters"), fields=("adapter_dim", "adapter_dropout")))
