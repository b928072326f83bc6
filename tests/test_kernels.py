"""The fused kernels (risclip.kernels) compute what the eager path computes: every one of the 32 variants,
both SKE forms, in fp32, at most 1e-4 apart; compiled too."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from risclip import kernels as K
from risclip.config import COMPONENT_NAMES, Components, ModelConfig
from risclip.model import RISCLIP

ALL_VARIANTS = [Components(**dict(zip(COMPONENT_NAMES, flags))) for flags in itertools.product((False, True), repeat=5)]
TOL = 1e-4


def _inputs(cfg: ModelConfig, b: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(b, 3, cfg.image_size, cfg.image_size, generator=g)
    tokens = torch.zeros(b, cfg.context_length, dtype=torch.long)
    for i, n in enumerate((3, 7, 12)[:b]):  # sentences of different lengths: padding masks differ per row
        tokens[i, 0] = 49406
        tokens[i, 1:n + 1] = torch.randint(300, 40000, (n,), generator=g)
        tokens[i, n + 1] = 49407
    return images, tokens


def _pair(components: Components, **overrides) -> tuple[RISCLIP, RISCLIP]:
    """(eager, fused) models with the same weights; every component weight random (the zero
    initialisations would make adapters, CFE and SKE the identity and the comparison empty)."""
    cfg = ModelConfig.tiny(image_size=48, components=components, kernels="eager", **overrides)
    torch.manual_seed(0)
    eager = RISCLIP.from_config(cfg)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in eager.named_parameters():
            if not name.startswith("clip."):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    fused = RISCLIP.from_config(dataclasses.replace(cfg, kernels="fused"))
    fused.load_state_dict(eager.state_dict())
    return eager.eval(), fused.eval()


def _max_diff(a: RISCLIP, b: RISCLIP, images, tokens) -> float:
    with torch.no_grad():
        oa, ob = a(images, tokens), b(images, tokens)
    return max((x - y).abs().max().item() for x, y in ((oa.patch_logits, ob.patch_logits),
                                                        (oa.mask_logits, ob.mask_logits),
                                                        (oa.patch_cosine, ob.patch_cosine)))


@pytest.mark.parametrize("components", ALL_VARIANTS, ids=str)
def test_fused_equals_eager(components):
    eager, fused = _pair(components)
    images, tokens = _inputs(eager.cfg)
    assert _max_diff(eager, fused, images, tokens) <= TOL
    # the shared-image pass (one image for several sentences) too
    assert _max_diff(eager, fused, images[:1], tokens) <= TOL


def test_fused_equals_eager_joint_ske_and_clearclip():
    for overrides in ({"ske_form": "joint"}, {"value_path": "clearclip"}):
        eager, fused = _pair(Components.from_names("all"), **overrides)
        images, tokens = _inputs(eager.cfg)
        assert _max_diff(eager, fused, images, tokens) <= TOL, overrides


def test_fused_gradients_equal_eager():
    """Training goes through the fused path too: stage-1 gradients agree."""
    eager, fused = _pair(Components.from_names("adapters,cfe,ske"))
    images, tokens = _inputs(eager.cfg)
    grads = []
    for m in (eager, fused):
        m.set_stage(1)
        m.zero_grad()
        m(images, tokens).patch_logits.square().mean().backward()
        grads.append({n: p.grad for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-4, rtol=1e-3), n


def test_fused_value_projection_follows_loaded_weights():
    """The value path's fused matrix is a buffer derived from CLIP's weights: loading other CLIP weights
    refreshes it, and checkpoints never store it."""
    eager, fused = _pair(Components())
    assert "value_weight" not in fused.state_dict()
    state = {k: v.clone() for k, v in eager.state_dict().items()}
    w = "clip.visual.transformer.resblocks.3.attn.out_proj.weight"
    state[w] = state[w] * 2
    eager.load_state_dict(state)
    fused.load_state_dict(state)
    images, tokens = _inputs(eager.cfg)
    assert _max_diff(eager, fused, images, tokens) <= TOL


STALE_TOL = 1e-5


def _other_clip_state(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """CLIP weights of another seed: what a user might load into ``model.clip``."""
    torch.manual_seed(7)
    return RISCLIP.from_config(cfg).clip.state_dict()


def _change_by_loading_into_the_tower(m: RISCLIP, other: dict) -> None:
    m.clip.load_state_dict(other)


def _change_in_place(m: RISCLIP, other: dict) -> None:
    attn = m.clip.visual.transformer.resblocks[-1].attn
    d = attn.embed_dim
    with torch.no_grad():
        attn.in_proj_weight[2 * d:].copy_(attn.in_proj_weight[2 * d:] * -1.5 + 0.01)
        attn.out_proj.bias.add_(0.3)


def _change_by_dtype_round_trip(m: RISCLIP, other: dict) -> None:
    m.to(torch.bfloat16).to(torch.float32)


@pytest.mark.parametrize("change", [_change_by_loading_into_the_tower, _change_in_place, _change_by_dtype_round_trip],
                         ids=["load-into-clip", "in-place-copy", "dtype-round-trip"])
@pytest.mark.parametrize("components", [Components(), Components.from_names("adapters,cfe")], ids=str)
def test_fused_value_projection_never_goes_stale(components, change):
    """The fused W_o W_v is derived from CLIP's weights: whatever changes them (a state dict loaded into the
    tower itself, not the model; an in-place write; a dtype round trip that swaps every parameter's data),
    the fused path still equals the eager path, which reads the weights directly."""
    eager, fused = _pair(components)
    other = _other_clip_state(eager.cfg)
    images, tokens = _inputs(eager.cfg)
    before = _max_diff(eager, fused, images, tokens)
    for m in (eager, fused):
        change(m, other)
    with torch.no_grad():
        moved = (eager(images, tokens).patch_logits - _pair(components)[0](images, tokens).patch_logits).abs().max()
    assert moved > 10 * STALE_TOL  # the change did change what the model computes
    assert before <= STALE_TOL and _max_diff(eager, fused, images, tokens) <= STALE_TOL


def test_eager_path_is_the_old_path_and_out_of_the_hash():
    cfg = ModelConfig.tiny()
    assert cfg.kernels == "fused" and "kernels" not in cfg.to_dict()
    assert dataclasses.replace(cfg, kernels="eager").config_hash() != cfg.config_hash()
    with pytest.raises(ValueError, match="unknown kernels"):
        ModelConfig.tiny(kernels="fast")


def test_causal_mask_detection():
    t = 5
    causal = torch.full((t, t), float("-inf")).triu(1)
    assert K.is_causal_mask(causal)
    assert not K.is_causal_mask(torch.zeros(t, t))
    assert not K.is_causal_mask(None)


@pytest.mark.parametrize("components", ALL_VARIANTS, ids=str)
def test_captured_graphs_equal_eager(components):
    """Every variant through torch.compile's graph capture (dynamo, backend ``eager``):
    what a compiled model runs is what the eager path computes. Code generation is inductor's, tested on
    the full model below (about a minute on 2 cores)."""
    torch._dynamo.reset()
    eager, fused = _pair(components)
    K.compile_model(fused, backend="eager")
    images, tokens = _inputs(eager.cfg)
    assert _max_diff(eager, fused, images, tokens) <= TOL


def test_compiled_equals_eager():
    """torch.compile with inductor (C++ code on the CPU) of the fused path gives the eager outputs, on the full
    model, whose forward runs every component's code (the value path included)."""
    torch._dynamo.reset()
    eager, fused = _pair(Components.from_names("all"))
    K.compile_model(fused)
    images, tokens = _inputs(eager.cfg)
    assert _max_diff(eager, fused, images, tokens) <= TOL


def test_sdpa_runs_attention_in_float32_under_cpu_bf16_autocast():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 17, 16) for _ in range(3))
    mask = torch.ones(2, 1, 1, 17, dtype=torch.bool)
    mask[..., -3:] = False
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(K.sdpa(q, k, v, attn_mask=mask), exact)  # float32 in: the plain kernel
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = K.sdpa(q.bfloat16(), k.bfloat16(), v.bfloat16(), attn_mask=mask)
    assert out.dtype == torch.bfloat16
    ref = torch.nn.functional.scaled_dot_product_attention(q.bfloat16().float(), k.bfloat16().float(),
                                                           v.bfloat16().float(), attn_mask=mask)
    assert torch.equal(out, ref.bfloat16())  # computed from the bf16 inputs in float32, rounded once
