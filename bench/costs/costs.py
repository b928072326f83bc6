"""What a variant costs: the models, inputs and counters the benchmark suite (``bench/benchmarks``) uses.

Three shapes: ``synth-refcoco`` (RIS-Tiny at 128 px, the default SynthRef ladder's model),
``synth-cpu`` (RIS-Tiny at 96 px with the ClearCLIP-style value path, the first SynthRef ladder's) and
``paper-b`` (CLIP ViT-B/16 at the paper's 416 px). Weights are random: cost does not depend on them. The reference every
figure is divided by is ``clip``: the frozen CLIP alone, both towers (``encode_image`` +
``encode_text``) on the same inputs.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.utils import flop_counter as _fc
from torch.utils.flop_counter import FlopCounterMode

from risclip.backbone import create_clip
from risclip.config import LADDER, ModelConfig, TrainConfig
from risclip.engine import stage_rule
from risclip.kernels import compile_model
from risclip.losses import dice_focal_loss
from risclip.model import RISCLIP

SHAPES: dict[str, ModelConfig] = {
    "synth-refcoco": ModelConfig.tiny(image_size=128),
    "synth-cpu": ModelConfig.tiny(value_path="clearclip"),
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


# how a model is run (risclip.kernels): "eager" (the path of every run before the fused kernels), "fused" (the
# default), "compiled" (fused, then torch.compile); the frozen CLIP runs as open_clip's own forward, compiled
# for "compiled" and plain otherwise
PATHS: tuple[str, ...] = ("eager", "fused", "compiled")


def build(shape: str, variant: str, path: str = "fused", compile_mode: str = "default") -> nn.Module:
    """``variant`` is ``clip`` or component names (``adapters,cfe``, ``value+adapters``, ...); ``path`` one of
    :data:`PATHS` (``compiled`` compiles with ``compile_mode``; the first call then compiles)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape '{shape}'; valid: {', '.join(SHAPES)}")
    if path not in PATHS:
        raise ValueError(f"unknown path '{path}'; valid: {', '.join(PATHS)}")
    torch.manual_seed(0)
    cfg = SHAPES[shape]
    if variant == CLIP:
        model = FrozenCLIP(cfg).eval()
    else:
        model = RISCLIP.from_config(dataclasses.replace(cfg.with_components(variant),
                                                        kernels="eager" if path == "eager" else "fused")).eval()
    return compiled(model, compile_mode) if path == "compiled" else model


def compiled(model: nn.Module, mode: str = "default") -> nn.Module:
    """``model`` (a RISCLIP or the frozen CLIP) under ``torch.compile``, in place; the first call compiles."""
    if isinstance(model, RISCLIP):
        return compile_model(model, mode)
    model.forward = torch.compile(model.forward, mode=mode)
    return model


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


# ------------------------------------------------------------------------------------------- FLOPs
# torch's FlopCounterMode has no formula for the fused attention kernels that nn.MultiheadAttention and
# scaled_dot_product_attention dispatch to on the CPU: the "fast path" ``_native_multi_head_attention``
# (frozen CLIP blocks in eval mode: input and output projections and both matmuls in one op) and the CPU
# flash kernel ``_scaled_dot_product_flash_attention_for_cpu`` (and its backward). Uncounted, they
# drop every attention FLOP: open_clip ViT-B/16's encode_image at 224 px read 22.5 GFLOPs instead of the
# published 17.6 GMACs (35.1 GFLOPs). The formulas below count them as the matmuls they are
# (2 FLOPs per multiply-add, as torch counts every other op); soft-max, scaling and masks are not counted.

def _native_mha_flops(query_shape, key_shape, value_shape, embed_dim, num_head, *args, out_shape=None, **kwargs) -> int:
    """Fused multi-head attention: Q, K, V projections, Q K^T, attention x V, output projection."""
    e = int(embed_dim)
    if len(query_shape) == 2:  # unbatched (L, E)
        query_shape, key_shape, value_shape = (1, *query_shape), (1, *key_shape), (1, *value_shape)
    b, lq, _ = query_shape
    lk, lv = key_shape[1], value_shape[1]
    projections = 2 * b * e * e * (lq + lk + lv) + 2 * b * lq * e * e
    attention = 2 * b * lq * lk * e + 2 * b * lq * lv * e
    return projections + attention


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return _fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                             **kwargs) -> int:
    return _fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_FORMULAS = {"_native_multi_head_attention": _native_mha_flops,
             "_scaled_dot_product_flash_attention_for_cpu": _sdpa_cpu_flops,
             "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_cpu_backward_flops}
# ops this torch build has (older builds may lack one) and torch does not count already
ATTENTION_FLOPS = {getattr(torch.ops.aten, name): f for name, f in _FORMULAS.items()
                   if hasattr(torch.ops.aten, name) and getattr(torch.ops.aten, name) not in _fc.flop_registry}


def flop_counter() -> FlopCounterMode:
    """torch's FLOP counter with the fused-attention formulas above added."""
    return FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOPS)


def forward_flops(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> int:
    with torch.no_grad(), flop_counter() as counter:
        model(images, tokens)
    return int(counter.get_total_flops())


def train_step_fn(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor, stage: int | None = None):
    """A closure doing one optimiser step of ``stage`` (default: the variant's first trainable stage);
    None if the variant trains nothing in it."""
    if not isinstance(model, RISCLIP) or not model.cfg.components.trains_anything:
        return None
    stage = stage or (1 if model.cfg.components.trains_patch_level else 2)
    if not model.stage_parameters(stage):
        return None
    params = model.stage_parameters(stage)
    opt = torch.optim.AdamW(params, lr=1e-4)
    mask = torch.zeros(images.shape[0], *images.shape[-2:], device=images.device)
    mask[:, images.shape[-2] // 4: images.shape[-2] // 2, images.shape[-1] // 4: images.shape[-1] // 2] = 1
    rule = stage_rule(stage, TrainConfig())
    target = rule.target(mask, model.grid, "area")

    def step() -> float:
        model.set_stage(stage)
        loss = dice_focal_loss(rule.logits(model(images, tokens)), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def train_step_flops(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor, stage: int | None = None) -> int:
    step = train_step_fn(model, images, tokens, stage)
    if step is None:
        return 0
    with flop_counter() as counter:
        step()
    return int(counter.get_total_flops())
