import subprocess
import sys

import open_clip
import pytest
import torch

from risclip.backbone import BackboneError, create_clip
from risclip.config import Components, ModelConfig
from risclip.model import RISCLIP


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return create_clip("RIS-Tiny", image_size=96)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 96, 96, generator=g)
    tokens = open_clip.tokenize(["the red circle", "the square to the left of the blue diamond"], context_length=24)
    return images, tokens


def _stage_for(c: Components):
    return 1 if c.trains_patch_level else (2 if c.decoder else None)


@pytest.mark.parametrize("components", Components.all_combinations(), ids=str)
def test_every_combination_runs_forward_and_backward(components, clip, inputs):
    torch.manual_seed(0)
    model = RISCLIP(ModelConfig.tiny(components=components), clip)
    images, tokens = inputs
    stage = _stage_for(components)
    model.set_stage(stage)
    out = model(images, tokens)
    assert out.patch_logits.shape == (2, 12, 12) and out.mask_logits.shape == (2, 96, 96)
    assert torch.isfinite(out.mask_logits).all()
    if stage is None:
        assert not any(p.requires_grad for p in model.parameters())
        return
    target = torch.zeros(2, 96, 96)
    target[:, 20:50, 30:60] = 1
    logits = out.patch_logits if stage == 1 else out.mask_logits
    size = logits.shape[-2:]
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.nn.functional.interpolate(target[:, None], size=size)[:, 0])
    loss.backward()
    trained = model.stage_parameters(stage)
    assert trained and all(p.grad is not None for p in trained)
    assert all(p.grad is None for p in model.clip.parameters())
    if stage == 2 and components.trains_patch_level is False:
        assert model.map_log_scale.grad is None


@pytest.mark.parametrize("ske_form", ["maps", "joint"])
def test_untrained_adapters_cfe_ske_equal_rung0(clip, inputs, ske_form):
    images, tokens = inputs
    torch.manual_seed(0)
    base = RISCLIP(ModelConfig.tiny(components="none"), clip)(images, tokens).patch_logits
    for names in ("adapters", "cfe", "ske", "adapters,cfe,ske"):
        torch.manual_seed(1)
        out = RISCLIP(ModelConfig.tiny(components=names, ske_form=ske_form), clip)(images, tokens).patch_logits
        torch.testing.assert_close(out, base, rtol=1e-5, atol=1e-5, msg=names)


def test_joint_space_ske_starts_as_clip_and_learns_image_to_image_attention(clip, inputs):
    """At init the refined map is CLIP's cosine map; zero-initialised output projections still get
    gradients; once they move, a patch's score depends on a far patch's token (image-to-image
    attention), which the maps form, built of per-patch maps and two 3x3 convs, cannot do."""
    from risclip.ske import JointSpaceSKE

    torch.manual_seed(0)
    ske = JointSpaceSKE(32, blocks=2)
    patch, text = torch.randn(2, 64, 32, requires_grad=True), torch.randn(2, 6, 32)
    padding = torch.tensor([[False] * 4 + [True] * 2, [False] * 6])
    eos = torch.tensor([3, 5])
    cos = ske(patch, text, padding, eos)
    sentence = text[torch.arange(2), eos]
    expect = torch.nn.functional.cosine_similarity(patch, sentence[:, None], dim=-1)
    torch.testing.assert_close(cos, expect)
    cos[:, :4].sum().backward()
    outs = [p for n, p in ske.named_parameters() if "out_proj.weight" in n or n.endswith("mlp.2.weight")]
    assert len(outs) == 8 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in outs)
    with torch.no_grad():
        for p in ske.parameters():
            p.add_(0.05 * torch.randn_like(p))
        changed = patch.clone()
        changed[:, 63] += torch.randn(32)  # the far corner patch only (not a constant: LayerNorm removes those)
        assert not torch.allclose(ske(patch, text, padding, eos)[:, 0], ske(changed, text, padding, eos)[:, 0])
    torch.manual_seed(0)
    model = RISCLIP(ModelConfig.tiny(components="ske", ske_form="joint"), clip)
    model.set_stage(1)
    model(*inputs).patch_logits.sum().backward()
    assert all(p.grad is not None for p in model.stage_parameters(1))


@pytest.mark.parametrize("value_path", ["clearclip", "maskclip"])
def test_value_path_matches_open_clip_attention_with_identity_weights(clip, inputs, value_path):
    """Independent check: open_clip's own blocks up to the last, then the last block's own
    MultiheadAttention with a mask that lets each token attend only to itself (= value tokens);
    MaskCLIP's form then adds the block's residual and its MLP, ClearCLIP's keeps neither."""
    images, tokens = inputs
    model = RISCLIP(ModelConfig.tiny(components="none", value_path=value_path), clip)
    with torch.no_grad():
        visual = clip.visual
        x = visual._embeds(images)
        for blk in visual.transformer.resblocks[:-1]:
            x = blk(x)
        last = visual.transformer.resblocks[-1]
        n = x.shape[1]
        only_self = torch.full((n, n), float("-inf"))
        only_self.fill_diagonal_(0.0)
        dense = last.attn(last.ln_1(x), last.ln_1(x), last.ln_1(x), attn_mask=only_self, need_weights=False)[0]
        if value_path == "maskclip":
            dense = x + dense
            dense = dense + last.mlp(last.ln_2(dense))
        ref_patch = visual.ln_post(dense[:, 1:]) @ visual.proj
        ref_sent = clip.encode_text(tokens)
        ref = torch.nn.functional.cosine_similarity(ref_patch, ref_sent[:, None], dim=-1).view(2, 12, 12)
        out = model(images, tokens)
    torch.testing.assert_close(out.patch_cosine, ref, rtol=1e-4, atol=1e-5)


def test_plain_tokens_match_open_clip_forward(clip, inputs):
    images, tokens = inputs
    model = RISCLIP(ModelConfig.tiny(components="-value"), clip)
    with torch.no_grad():
        clip.visual.output_tokens = True
        try:
            _, toks = clip.visual(images)
        finally:
            clip.visual.output_tokens = False
        ref_patch = toks @ clip.visual.proj
        ref = torch.nn.functional.cosine_similarity(ref_patch, clip.encode_text(tokens)[:, None], dim=-1)
        out = model(images, tokens)
    torch.testing.assert_close(out.patch_cosine, ref.view(2, 12, 12), rtol=1e-4, atol=1e-5)


def test_clip_stays_frozen_through_an_optimiser_step(clip, inputs):
    images, tokens = inputs
    model = RISCLIP(ModelConfig.tiny(components="all"), clip)
    before = {k: v.clone() for k, v in clip.state_dict().items()}
    for stage in (1, 2):
        model.set_stage(stage)
        opt = torch.optim.AdamW(model.stage_parameters(stage), lr=1e-2)
        out = model(images, tokens)
        (out.patch_logits.mean() + out.mask_logits.mean()).backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in clip.state_dict().items())
    assert not any(k.startswith("clip.") for k in model.component_state_dict())


def test_binarise_zero_shot_and_trained(clip, inputs):
    images, tokens = inputs
    zs = RISCLIP(ModelConfig.tiny(components="none", tau=0.5), clip)
    out = zs(images, tokens)
    masks = zs.binarise(out, [(50, 70), (96, 96)])
    assert masks[0].shape == (50, 70) and masks[0].dtype == torch.bool
    assert 0 < masks[0].sum() < 50 * 70  # min-max + tau gives a non-trivial mask
    trained = RISCLIP(ModelConfig.tiny(components="adapters"), clip)
    m = trained.binarise(trained(images, tokens), [(40, 40), (40, 40)])
    expected = torch.nn.functional.interpolate(trained(images, tokens).mask_logits[:1, None], size=(40, 40),
                                               mode="bilinear", align_corners=False)[0, 0] > 0
    assert torch.equal(m[0], expected)


def test_local_checkpoint_route(tmp_path):
    torch.manual_seed(5)
    src = create_clip("RIS-Tiny")
    path = tmp_path / "proxy_clip.pt"
    torch.save({"state_dict": src.state_dict()}, path)
    loaded = create_clip("RIS-Tiny", str(path))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), loaded.state_dict().values()))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_backbone_errors(tmp_path):
    with pytest.raises(BackboneError, match="unknown open_clip model 'ViT-Q-99'"):
        create_clip("ViT-Q-99")
    with pytest.raises(BackboneError, match="missing.pt: checkpoint file not found"):
        create_clip("RIS-Tiny", str(tmp_path / "missing.pt"))
    with pytest.raises(BackboneError, match="neither a file nor a known open_clip tag"):
        create_clip("RIS-Tiny", "laion9000")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(BackboneError, match="bad.pt: cannot load"):
        create_clip("RIS-Tiny", str(bad))


def test_offline_tag_gives_clear_error():
    code = ("from risclip.backbone import create_clip, BackboneError\n"
            "try:\n    create_clip('ViT-B-16', 'openai', image_size=32)\n"
            "except BackboneError as e:\n    print('ERR', e)\n")
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "ERR could not fetch open_clip weights 'openai' for ViT-B-16" in r.stdout
    assert "pretrained=/path/to/" in r.stdout


def test_vit_b16_builds_at_paper_shape_with_all_components():
    cfg = ModelConfig(components=Components.from_names("all"), clip_model="ViT-B-16", image_size=224)
    model = RISCLIP.from_config(cfg)
    assert model.grid == (14, 14) and model.decoder_layers == (2, 5, 8, 11) and len(model.cfe) == 12
    tokens = open_clip.tokenize(["a cat"])
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224), tokens)
    assert out.mask_logits.shape == (1, 224, 224)


def test_gated_cfe_starts_as_identity_and_learns_its_gate(clip, inputs):
    images, tokens = inputs
    torch.manual_seed(0)
    base = RISCLIP(ModelConfig.tiny(components="none"), clip)(images, tokens).patch_logits
    model = RISCLIP(ModelConfig.tiny(components="cfe", cfe_gate=True), clip)
    fusion = model.cfe["0"]
    assert fusion.s2v.weight.abs().sum() > 0  # the gate, not the projection, is zero at the start
    out = model(images, tokens).patch_logits
    torch.testing.assert_close(out, base, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert fusion.gate_v.grad is not None and fusion.gate_v.grad.abs() > 0
