"""open_clip backbones: loading (by name, tag, local file), freezing, and per-block forward functions.

RISCLIP runs the blocks of both CLIP encoders itself (rather than calling ``encode_image``) so that
adapters, CFE and the value path can sit inside them; the functions here reproduce one open_clip
``ResidualAttentionBlock`` forward exactly, with optional adapters in the ``ls_1``/``ls_2`` slots.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from . import kernels as K

_CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(_CONFIG_DIR)  # registers our small configs (RIS-Tiny) with open_clip
OUR_MODELS: tuple[str, ...] = tuple(sorted(p.stem for p in _CONFIG_DIR.glob("*.json")))


class BackboneError(ValueError):
    """A backbone that cannot be built or loaded; the message says what to do instead."""


def _looks_like_path(s: str) -> bool:
    return os.sep in s or s.startswith(("~", ".")) or s.endswith((".pt", ".pth", ".bin", ".safetensors"))


def create_clip(name: str, pretrained: str | None = None, image_size: int | None = None,
                pos_embed_resize: str = "open_clip") -> open_clip.CLIP:
    """Build an open_clip CLIP ViT, frozen and in eval mode.

    ``pretrained``: None (random init), a local checkpoint path (open_clip's own loader), or an open_clip tag
    such as ``laion2b_s34b_b88k``. Offline, a tag that cannot be fetched raises :class:`BackboneError` saying
    how to pass a file. Where the checkpoint's position-embedding grid differs from ``image_size``'s,
    ``pos_embed_resize`` (``ModelConfig.pos_embed_resize``) says how it is resized: ``"open_clip"`` keeps the
    loader's antialiased bicubic resize, ``"maskclip"`` resizes the checkpoint's grid again with plain
    bicubic interpolation, as MaskCLIP does (:func:`resize_position_grid`).
    """
    if name not in open_clip.list_models():
        raise BackboneError(f"unknown open_clip model '{name}'; ours: {', '.join(OUR_MODELS)}; "
                            f"see open_clip.list_models() for the rest")
    kwargs = {"force_image_size": image_size} if image_size else {}
    if pretrained is None:
        # random init is deliberate here: silence open_clip's "no pretrained weights" warning
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            model = open_clip.create_model(name, **kwargs)
        finally:
            root.setLevel(level)
    elif Path(pretrained).expanduser().is_file():
        try:
            model = open_clip.create_model(name, pretrained=str(Path(pretrained).expanduser()), **kwargs)
        except Exception as e:  # wrong architecture, corrupt file
            raise BackboneError(f"{pretrained}: cannot load as a {name} checkpoint ({type(e).__name__}: {e})") from None
    elif _looks_like_path(pretrained):
        raise BackboneError(f"{pretrained}: checkpoint file not found")
    else:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            known = ", ".join(tags) if tags else "none"
            raise BackboneError(f"'{pretrained}' is neither a file nor a known open_clip tag for {name} "
                                f"(known tags: {known})")
        try:
            model = open_clip.create_model(name, pretrained=pretrained, **kwargs)
        except Exception as e:
            raise BackboneError(
                f"could not fetch open_clip weights '{pretrained}' for {name} ({type(e).__name__}); this machine "
                f"may be offline: download the checkpoint where there is a network and pass its local path as "
                f"pretrained=/path/to/open_clip_model.safetensors") from None
    if not isinstance(model, open_clip.CLIP) or not hasattr(model.visual, "transformer"):
        raise BackboneError(f"{name}: only open_clip CLIP models with a ViT image tower are supported")
    if pos_embed_resize == "maskclip" and pretrained is not None:
        _maskclip_position_grid(model, name, pretrained)
    elif pos_embed_resize not in ("open_clip", "maskclip"):
        raise BackboneError(f"unknown pos_embed_resize '{pos_embed_resize}'; valid: open_clip, maskclip")
    model.requires_grad_(False)
    model.eval()
    return model


def resize_position_grid(pos: torch.Tensor, grid: tuple[int, int], antialias: bool) -> torch.Tensor:
    """A (1 + n*n, D) position embedding (class token first) with its n x n grid resized to ``grid`` by
    bicubic interpolation (``align_corners=False``), antialiased (open_clip's loader) or not (MaskCLIP)."""
    cls_tok, cells = pos[:1], pos[1:]
    n = int(round(len(cells) ** 0.5))
    if n * n != len(cells):
        raise BackboneError(f"position embedding of {len(cells)} cells is not a square grid")
    if (n, n) == tuple(grid):
        return pos
    img = cells.reshape(1, n, n, -1).permute(0, 3, 1, 2).float()
    out = F.interpolate(img, size=tuple(grid), mode="bicubic", align_corners=False, antialias=antialias)
    return torch.cat([cls_tok, out.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(pos.dtype)], 0)


def _checkpoint_file(name: str, pretrained: str) -> str:
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path)
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    return download_pretrained(get_pretrained_cfg(name, pretrained))  # the cached file open_clip just loaded


def _maskclip_position_grid(model: open_clip.CLIP, name: str, pretrained: str) -> None:
    """Replace the loader's resized image position embedding by the checkpoint's own, resized MaskCLIP's way."""
    from open_clip.factory import load_state_dict

    state = load_state_dict(_checkpoint_file(name, pretrained))
    pos = state.get("visual.positional_embedding")
    if pos is None:
        raise BackboneError(f"{pretrained}: no visual.positional_embedding in the checkpoint, so pos_embed_resize="
                            f"'maskclip' cannot resize it; use 'open_clip'")
    with torch.no_grad():
        model.visual.positional_embedding.copy_(resize_position_grid(pos, tuple(model.visual.grid_size), antialias=False))


def patch_size(name: str) -> int:
    """The vision tower's patch size of open_clip model ``name`` (ours included), read from its config;
    a BackboneError for a name open_clip does not know."""
    cfg = open_clip.get_model_config(name)
    if not cfg or "patch_size" not in cfg.get("vision_cfg", {}):
        raise BackboneError(f"unknown open_clip ViT '{name}'; ours: {', '.join(OUR_MODELS)}")
    return int(cfg["vision_cfg"]["patch_size"])


def apply_adapter(adapter: nn.Module | None, h: torch.Tensor) -> torch.Tensor:
    return h if adapter is None else adapter(h)


def fusable(block: nn.Module) -> bool:
    """Whether the fused kernels can run ``block``'s attention: a batch-first packed nn.MultiheadAttention
    without open_clip's separate key-value norm."""
    attn = getattr(block, "attn", None)
    return isinstance(attn, nn.MultiheadAttention) and attn.batch_first and not hasattr(block, "ln_1_kv")


def block_forward(block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                  adapters: nn.Module | None = None, fused: bool = False, causal: bool = False) -> torch.Tensor:
    """One open_clip ResidualAttentionBlock; adapters (if any) act on the attention and MLP outputs.
    ``fused``: the attention as one ``scaled_dot_product_attention`` call (:mod:`risclip.kernels`), with
    ``causal`` standing for ``attn_mask`` when that is the causal mask."""
    h = block.ln_1(x)
    if fused and fusable(block):
        mask = None if causal or attn_mask is None else attn_mask.to(h.dtype)
        a = block.ls_1(K.self_attention(block.attn, h, causal=causal, mask=mask))
    else:
        a = block.ls_1(block.attention(h, attn_mask=attn_mask))
    a = apply_adapter(getattr(adapters, "attn", None), a)
    x = x + a
    m = block.ls_2(block.mlp(block.ln_2(x)))
    m = apply_adapter(getattr(adapters, "mlp", None), m)
    return x + m


def value_block_forward(block: nn.Module, x: torch.Tensor, adapters: nn.Module | None = None,
                        residual: bool = False, mlp: bool = False,
                        fused_projection: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """MaskCLIP's value path through the last vision block: out_proj(value_proj(ln_1(x))), no query-key
    attention; the block's residual and MLP are kept only when ``residual`` / ``mlp`` say so.
    ``fused_projection``: (W_o W_v, W_o b_v + b_o), :func:`risclip.kernels.fused_value_projection`, one
    product instead of slicing W_v and applying W_o after it."""
    if fused_projection is not None:
        a = block.ls_1(F.linear(block.ln_1(x), *fused_projection))
    else:
        attn: nn.MultiheadAttention = block.attn
        d = x.shape[-1]
        w_v = attn.in_proj_weight[2 * d:]
        b_v = attn.in_proj_bias[2 * d:] if attn.in_proj_bias is not None else None
        a = block.ls_1(attn.out_proj(F.linear(block.ln_1(x), w_v, b_v)))
    a = apply_adapter(getattr(adapters, "attn", None), a)
    y = x + a if residual else a
    if mlp:
        m = block.ls_2(block.mlp(block.ln_2(y)))
        y = y + apply_adapter(getattr(adapters, "mlp", None), m)
    return y


def vision_embed(clip: open_clip.CLIP, images: torch.Tensor) -> torch.Tensor:
    """Patch + class tokens with position embeddings and ln_pre: (B, 1 + N, Dv)."""
    visual = clip.visual
    expected = visual.conv1.stride[0] * visual.grid_size[0]
    if images.shape[-1] != expected or images.shape[-2] != visual.conv1.stride[0] * visual.grid_size[1]:
        raise ValueError(f"images are {tuple(images.shape[-2:])} but the backbone was built for {expected} px")
    return visual._embeds(images)


def text_embed(clip: open_clip.CLIP, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token + position embeddings (B, T, Dt) and the causal attention mask for T tokens."""
    t = tokens.shape[1]
    if t > clip.positional_embedding.shape[0]:
        raise ValueError(f"{t} tokens exceed the text tower's context length {clip.positional_embedding.shape[0]}")
    cast = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast) + clip.positional_embedding[:t].to(cast)
    mask = clip.attn_mask[:t, :t] if clip.attn_mask is not None else None
    return x, mask


def eos_index(tokens: torch.Tensor) -> torch.Tensor:
    """Position of the end-of-text token (the largest id in CLIP's vocabulary)."""
    return tokens.argmax(dim=-1)


def sentence_embedding(clip: open_clip.CLIP, text_tokens: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """EOS token through ln_final and text_projection: (B, E)."""
    x = clip.ln_final(text_tokens)
    x = x[torch.arange(x.shape[0], device=x.device), eos_index(tokens)]
    proj = clip.text_projection
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def to_text_space(clip: open_clip.CLIP, text_tokens: torch.Tensor) -> torch.Tensor:
    """Every text token through ln_final and text_projection into the shared space: (B, T, E). The EOS
    token's row equals :func:`sentence_embedding`."""
    x = clip.ln_final(text_tokens)
    proj = clip.text_projection
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def to_shared_space(clip: open_clip.CLIP, vision_tokens: torch.Tensor) -> torch.Tensor:
    """Vision tokens through CLIP's frozen ln_post and proj into the shared space: (..., E)."""
    x = clip.visual.ln_post(vision_tokens)
    return x @ clip.visual.proj if clip.visual.proj is not None else x
