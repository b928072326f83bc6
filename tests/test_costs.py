"""FLOP counting that includes attention (bench.costs.flop_counter)."""

from __future__ import annotations

import pytest
import torch

from bench.costs import costs
from risclip.backbone import create_clip


def test_vit_b16_encode_image_flops_match_published_figure():
    # open_clip ViT-B/16 at 224 px: 17.58 GMACs (timm's model table, fvcore) = 35.1 GFLOPs at 2 FLOPs per MAC.
    # Without the attention formulas torch counts 22.5: every attention projection and matmul is missed.
    clip = create_clip("ViT-B-16", None, 224)
    x = torch.randn(1, 3, 224, 224)
    counts = []
    for grad in (False, True):
        with torch.set_grad_enabled(grad), costs.flop_counter() as c:
            clip.encode_image(x)
        counts.append(c.get_total_flops())
    assert counts[0] == counts[1]
    assert counts[0] == pytest.approx(35.1e9, rel=0.02)


def test_native_mha_formula_equals_the_unfused_count():
    # the same attention counted through the fused fast path (eval, no grad) and the unfused path (train)
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    q, kv = torch.randn(2, 7, 32), torch.randn(2, 5, 32)
    with torch.no_grad(), costs.flop_counter() as fused:
        mha(q, kv, kv, need_weights=False)
    mha.train()
    with costs.flop_counter() as plain:
        mha(q.requires_grad_(), kv, kv, need_weights=False)
    expected = 2 * 2 * 32 * 32 * (7 + 5 + 5) + 2 * 2 * 7 * 32 * 32 + 2 * 2 * 2 * 7 * 5 * 32
    assert fused.get_total_flops() == plain.get_total_flops() == expected


def test_cfe_attention_is_counted():
    # CFE's two cross-attentions (shared width 64, 4 heads at the tiny shape) must add their matmuls
    images, tokens = costs.inputs("synth-cpu", 1)
    without = costs.forward_flops(costs.build("synth-cpu", "adapters"), images, tokens)
    with_cfe = costs.forward_flops(costs.build("synth-cpu", "adapters,cfe"), images, tokens)
    n_img, n_txt, width = 1 + 12 * 12, tokens.shape[1], 64
    matmuls = 4 * 2 * n_img * n_txt * width  # Q K^T and A V, both directions
    assert with_cfe - without > matmuls
