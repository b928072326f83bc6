"""LAVT-style decoder (paper: four layers, each {3x3 conv -> ReLU -> BN} x2 then x2 upsampling)::

    d_4 = D_4([v_4; map_patch]),   d_i = D_i([d_{i+1}; u(v_i)]),  i = 3, 2, 1

``v_1..v_4`` are the tokens of four CLIP vision blocks (evenly spaced by default) as grids; ``u``
resizes ``v_i`` to ``d_{i+1}``'s resolution. Choices where the paper is silent: a 1x1 lateral
projection of each ``v_i`` to the stage's width; upsampling stops at the output size (a patch-8
backbone reaches it after three stages, so the fourth keeps its resolution); a final 1x1 classifier
and a bilinear resize to the exact output size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import PIXEL_STAGE, ComponentSpec, register


def conv_relu_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.ReLU(inplace=True), nn.BatchNorm2d(cout),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.ReLU(inplace=True), nn.BatchNorm2d(cout),
    )


class LAVTDecoder(nn.Module):
    def __init__(self, vision_width: int, dims: tuple[int, int, int, int], channels_last: bool = False) -> None:
        super().__init__()
        # channels-last layout (NHWC) for every conv, the one cuDNN and oneDNN prefer under bf16 autocast;
        # the same arithmetic as the default layout (risclip.kernels)
        self.channels_last = channels_last
        d4, d3, d2, d1 = dims
        self.lateral = nn.ModuleList(nn.Conv2d(vision_width, d, 1) for d in (d4, d3, d2, d1))
        self.stages = nn.ModuleList([
            conv_relu_bn(d4 + 1, d4),
            conv_relu_bn(d4 + d3, d3),
            conv_relu_bn(d3 + d2, d2),
            conv_relu_bn(d2 + d1, d1),
        ])
        self.classifier = nn.Conv2d(d1, 1, 1)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, feats: list[torch.Tensor], patch_map: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """``feats`` = [v_1, v_2, v_3, v_4], each (B, Dv, h, w); ``patch_map`` (B, h, w). Returns (B, H, W)."""
        if self.channels_last:
            feats = [f.contiguous(memory_format=torch.channels_last) for f in feats]
        v1, v2, v3, v4 = feats
        d = torch.cat([self.lateral[0](v4), patch_map[:, None].to(v4.dtype)], dim=1)
        for k, v in enumerate((None, v3, v2, v1)):
            if v is not None:
                lat = F.interpolate(self.lateral[k](v), size=d.shape[-2:], mode="bilinear", align_corners=False)
                d = torch.cat([d, lat], dim=1)
            d = self.stages[k](d)
            size = (min(2 * d.shape[-2], out_size[0]), min(2 * d.shape[-1], out_size[1]))
            if size != tuple(d.shape[-2:]):
                d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
        logits = self.classifier(d)
        if tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits[:, 0]


# this component, declared once (risclip/registry.py)
SPEC = register(ComponentSpec(
    name="decoder", stage=PIXEL_STAGE, acts_at="decoder", rung=4, builtin=True, origin=__name__,
    summary="LAVT-style pixel decoder over four vision blocks and the patch map",
    modules=("decoder",), fields=("decoder_dims", "decoder_layers")))
