"""Fast paths for the forward pass (``ModelConfig.kernels``): the same arithmetic as the eager path in
fewer, fused kernels, so that a latency measures the method rather than our block-by-block loop.

``"fused"`` (the default):

* every attention we run (the CLIP blocks of both towers, CFE's two cross-attentions with the text's
  padding mask, the joint-space SKE) is one ``F.scaled_dot_product_attention`` call on views of one
  packed projection, instead of ``nn.MultiheadAttention``'s general path (which checks its arguments,
  re-slices its packed weights and, with a padding mask or in training, leaves its fused kernel);
  the text tower's causal mask becomes ``is_causal``;
* MaskCLIP's value path multiplies by one frozen matrix, ``W_o W_v`` (and bias ``W_o b_v + b_o``),
  computed when the model is built (a non-persistent buffer, never in checkpoints) and recomputed where it
  is read whenever any of its source weights has changed since, by whatever means) instead of slicing ``W_v`` from the packed in-projection
  and applying ``W_o`` after it on every call: one matrix product instead of two;
* the SKE's per-layer shared-space maps go through ``ln_post`` and ``proj`` in one batched call;
* the decoder runs channels-last (``torch.channels_last``), the layout cuDNN's and oneDNN's
  convolutions prefer under bf16 autocast.

``"eager"`` is the path every run before this module used, kept selectable so that one benchmark run can
set both side by side. Both give the same outputs up to float rounding (tests/test_kernels.py checks
every one of the 32 variants at 1e-4, compiled and not). Trainable cross-attention weights (CFE, SKE)
are still taken as views of their packed projection per call: a view costs no kernel, and keeping the
packed parameter keeps checkpoints of both paths interchangeable.

:func:`compile_model` is the opt-in ``torch.compile`` of the two halves of the forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import COMPILE_MODES, KERNELS  # noqa: F401  (KERNELS re-exported: the names of the paths)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, H, N, D/H)."""
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, Dh) -> (B, N, H * Dh)."""
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)


def mixed_precision(device: torch.device | str, *, cuda_amp: bool = False, cpu_amp: bool = False):
    """The autocast every training and evaluation step runs under: bf16 on CUDA where ``cuda_amp``, bf16 on a
    CPU where ``cpu_amp`` (its attention kernels then stay in float32, see :func:`sdpa`), float32 otherwise.
    ``TrainConfig`` (``amp``, ``cpu_amp``) and ``ReferenceConfig`` (``cpu_amp``) both go through here."""
    kind = torch.device(device).type
    if kind == "cuda" and cuda_amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if kind == "cpu" and cpu_amp:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, except on a CPU under bf16 autocast (``TrainConfig.cpu_amp``),
    where the attention itself runs in float32 and only its output returns to bf16: the CPU's fused attention
    kernel is slower in bf16 than in float32 at every shape we run (forward and backward, one thread, batch 32:
    vision self-attention 126 against 82 ms, CFE's image-to-text cross-attention with the padding mask 58
    against 8 ms), while the linear layers around it gain about twice."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


def self_attention(attn: nn.MultiheadAttention, x: torch.Tensor, causal: bool = False,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """``attn`` (batch-first, packed in-projection) over ``x`` (B, N, D) with one fused kernel. ``causal``
    masks the future (the text tower); ``mask`` is an additive float or boolean (True: attend) mask."""
    b, n, d = x.shape
    h = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
    drop = attn.dropout if attn.training else 0.0
    o = sdpa(qkv[0], qkv[1], qkv[2], attn_mask=mask, dropout_p=drop, is_causal=causal)
    return F.linear(_merge(o), attn.out_proj.weight, attn.out_proj.bias)


def cross_attention(attn: nn.MultiheadAttention, q: torch.Tensor, kv: torch.Tensor,
                    key_padding: torch.Tensor | None = None) -> torch.Tensor:
    """``attn`` with queries from ``q`` (B, Nq, D) and keys and values from ``kv`` (B, Nk, D);
    ``key_padding`` (B, Nk) True where a key is padding, as ``nn.MultiheadAttention``'s argument."""
    d, h = attn.embed_dim, attn.num_heads
    w, bias = attn.in_proj_weight, attn.in_proj_bias
    qh = _heads(F.linear(q, w[:d], None if bias is None else bias[:d]), h)
    b, nk, _ = kv.shape
    kvh = F.linear(kv, w[d:], None if bias is None else bias[d:]).view(b, nk, 2, h, d // h).permute(2, 0, 3, 1, 4)
    mask = None if key_padding is None else ~key_padding[:, None, None, :]
    drop = attn.dropout if attn.training else 0.0
    o = sdpa(qh, kvh[0], kvh[1], attn_mask=mask, dropout_p=drop)
    return F.linear(_merge(o), attn.out_proj.weight, attn.out_proj.bias)


def attention(attn: nn.MultiheadAttention, q: torch.Tensor, kv: torch.Tensor, key_padding: torch.Tensor | None,
              fused: bool) -> torch.Tensor:
    """``attn(q, kv, kv)`` by the fused path or by ``nn.MultiheadAttention`` itself (the eager path)."""
    if fused:
        if q is kv:
            mask = None if key_padding is None else ~key_padding[:, None, None, :]
            return self_attention(attn, q, mask=mask)
        return cross_attention(attn, q, kv, key_padding)
    return attn(q, kv, kv, key_padding_mask=key_padding, need_weights=False)[0]


def fused_value_projection(block: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The value path's two frozen projections as one: (W_o W_v, W_o b_v + b_o) of ``block.attn``."""
    attn: nn.MultiheadAttention = block.attn
    d = attn.embed_dim
    with torch.no_grad():
        w_v = attn.in_proj_weight[2 * d:].double()
        b_v = attn.in_proj_bias[2 * d:].double() if attn.in_proj_bias is not None else torch.zeros(d, dtype=torch.double, device=attn.out_proj.weight.device)
        w_o = attn.out_proj.weight.double()
        b_o = attn.out_proj.bias.double() if attn.out_proj.bias is not None else torch.zeros(d, dtype=torch.double, device=attn.out_proj.weight.device)
        dtype = attn.out_proj.weight.dtype
        return (w_o @ w_v).to(dtype), (w_o @ b_v + b_o).to(dtype)


def is_causal_mask(mask: torch.Tensor | None) -> bool:
    """True when ``mask`` (T, T) is the additive causal mask (-inf strictly above the diagonal, 0 elsewhere)."""
    if mask is None or mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        return False
    upper = torch.ones_like(mask, dtype=torch.bool).triu(1)
    return bool(torch.isneginf(mask[upper]).all() and (mask[~upper] == 0).all())


def compile_model(model: nn.Module, mode: str = "default", backend: str = "inductor") -> nn.Module:
    """Compile ``model.patch_level`` and ``model.pixel_level`` (the engine calls the two halves apart, and
    stage 2 reuses cached patch-level results) with ``torch.compile`` in ``mode`` (``reduce-overhead``
    adds CUDA graphs, for batch-1 inference on CUDA) by ``backend`` (inductor; the tests also use
    ``eager``, which captures the same graphs with dynamo and runs them without generating code). In place; returns the model. The first call of each
    new input shape pays the compile time; callers that report latency time it apart."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode '{mode}'; valid: {', '.join(COMPILE_MODES)}")
    if getattr(model, "compiled_mode", None) is not None:
        return model
    options = {"mode": mode} if backend == "inductor" else {}
    model.patch_level = torch.compile(model.patch_level, backend=backend, **options)
    model.pixel_level = torch.compile(model.pixel_level, backend=backend, **options)
    model.compiled_mode = mode
    return model
