"""What a variant costs: the models, inputs and counters the benchmark suite (``bench/benchmarks``) uses.

Two shapes: ``synth-cpu`` (RIS-Tiny at 96 px, the SynthRef ladder's model) and ``paper-b`` (CLIP
ViT-B/16 at the paper's 416 px). Weights are random: cost does not depend on them. The reference every
figure is divided by is ``clip``: the frozen CLIP alone, both towers (``encode_image`` +
``encode_text``) on the same inputs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from risclip.backbone import create_clip
from risclip.config import LADDER, ModelConfig
from risclip.engine import patch_target
from risclip.losses import dice_focal_loss
from risclip.model import RISCLIP

SHAPES: dict[str, ModelConfig] = {
    "synth-cpu": ModelConfig.tiny(),
    "paper-b": ModelConfig(clip_model="ViT-B-16", pretrained=None, image_size=416),
}
CLIP = "clip"
RUNG_VARIANTS: tuple[str, ...] = tuple(str(c) for c in LADDER)


class FrozenCLIP(nn.Module):
    """The frozen CLIP forward every ratio is measured against: image and text embeddings."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.clip = create_clip(cfg.clip_model, cfg.pretrained, cfg.image_size)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.clip.encode_image(images), self.clip.encode_text(tokens)


def build(shape: str, variant: str) -> nn.Module:
    """``variant`` is ``clip`` or component names (``adapters,cfe``, ``value+adapters``, ...)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape '{shape}'; valid: {', '.join(SHAPES)}")
    torch.manual_seed(0)
    cfg = SHAPES[shape]
    if variant == CLIP:
        return FrozenCLIP(cfg).eval()
    return RISCLIP.from_config(cfg.with_components(variant)).eval()


def inputs(shape: str, batch: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    return random_inputs(SHAPES[shape], batch, device)


def random_inputs(cfg: ModelConfig, batch: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random images and token ids (start, eight words, end) of ``cfg``'s input shape."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=g)
    tokens = torch.zeros(batch, cfg.context_length, dtype=torch.long)
    tokens[:, 0] = 49406
    tokens[:, 1:9] = torch.randint(300, 40000, (batch, 8), generator=g)
    tokens[:, 9] = 49407
    return images.to(device), tokens.to(device)


def param_counts(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameters; for RISCLIP, trainable means trained in stage 1 or 2."""
    total = sum(p.numel() for p in model.parameters())
    if isinstance(model, RISCLIP):
        trainable = sum(p.numel() for s in (1, 2) for p in model.stage_parameters(s))
    else:
        trainable = 0
    return total, trainable


def forward_flops(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(images, tokens)
    return int(counter.get_total_flops())


def train_step_fn(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor):
    """A closure doing one optimiser step of the variant's first trainable stage (None if it trains nothing)."""
    if not isinstance(model, RISCLIP) or not model.cfg.components.trains_anything:
        return None
    stage = 1 if model.cfg.components.trains_patch_level else 2
    params = model.stage_parameters(stage)
    opt = torch.optim.AdamW(params, lr=1e-4)
    mask = torch.zeros(images.shape[0], *images.shape[-2:], device=images.device)
    mask[:, images.shape[-2] // 4: images.shape[-2] // 2, images.shape[-1] // 4: images.shape[-1] // 2] = 1
    target = patch_target(mask, model.grid, "area")

    def step() -> float:
        model.set_stage(stage)
        out = model(images, tokens)
        loss = dice_focal_loss(out.patch_logits, target) if stage == 1 else dice_focal_loss(out.mask_logits, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def train_step_flops(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> int:
    step = train_step_fn(model, images, tokens)
    if step is None:
        return 0
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())
