"""A plug-in component: text-conditioned FiLM on the image tower (feature-wise linear modulation, Perez et al.,
2018, as RIS papers use it to let the sentence steer visual features).

At every fusion point k, the text tokens of that depth are pooled at each sentence's end-of-text token, a small
MLP maps the pooled vector to a scale and a shift per vision channel, and every vision token becomes
``v * (1 + gamma) + beta``. The MLP's last layer is zero-initialised, so the plug-in starts as the identity
(as the adapters and CFE do). It trains in stage 1, with the patch-level components.

    python -m bench.ablate --plugin examples.film --components adapters,film --quick
    python -m bench.ablate --plugin examples.film --components adapters,film --set film.dim=32
    python -m studies run factorial --plugin examples.film --factors adapters,cfe,film --quick

docs/extending.md explains the hook points and the registry this uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from risclip.backbone import eos_index
from risclip.registry import PATCH_STAGE, ComponentSpec, register


@dataclass(frozen=True)
class FiLMConfig:
    dim: int = 64  # hidden width of the MLP from the pooled text to the scales and shifts


class FiLM(nn.Module):
    def __init__(self, points: int, text_width: int, vision_width: int, dim: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(text_width, dim), nn.GELU(), nn.Linear(dim, 2 * vision_width))
                                   for _ in range(points))
        for head in self.heads:
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)

    def fusion(self, k: int, v: torch.Tensor, t: torch.Tensor, ctx) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = t[torch.arange(t.shape[0], device=t.device), eos_index(ctx.tokens)]  # (B, Dt)
        gamma, beta = self.heads[k](pooled).chunk(2, dim=-1)  # (B, Dv) each
        return v * (1 + gamma[:, None]) + beta[:, None], t


def build(model, settings: FiLMConfig) -> FiLM:
    return FiLM(len(model.points), model.text_width, model.vision_width, settings.dim)


register(ComponentSpec(
    name="film", stage=PATCH_STAGE, acts_at="fusion", config=FiLMConfig, build=build, origin=__name__,
    summary="text-conditioned FiLM on the vision tokens at every fusion point"))
