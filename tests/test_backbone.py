"""How a checkpoint's image position embeddings meet another input size (ModelConfig.pos_embed_resize)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from risclip.backbone import create_clip
from risclip.config import ModelConfig
from risclip.model import RISCLIP


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A RIS-Tiny CLIP saved at 48 px (a 6x6 grid of 8-px patches), with a position grid that is not flat."""
    torch.manual_seed(0)
    clip = create_clip("RIS-Tiny", None, 48)
    with torch.no_grad():
        clip.visual.positional_embedding.normal_()
    path = tmp_path_factory.mktemp("clip") / "tiny-48.pt"
    torch.save(clip.state_dict(), path)
    return path, clip.visual.positional_embedding.detach().clone()


def _expected(pos: torch.Tensor, grid: int, antialias: bool) -> torch.Tensor:
    cells = pos[1:].reshape(1, 6, 6, -1).permute(0, 3, 1, 2)
    out = F.interpolate(cells, size=(grid, grid), mode="bicubic", align_corners=False, antialias=antialias)
    return torch.cat([pos[:1], out.permute(0, 2, 3, 1).reshape(grid * grid, -1)])


@pytest.mark.parametrize("rule, antialias", [("open_clip", True), ("maskclip", False)])
def test_each_rule_resizes_the_checkpoint_grid_as_named(checkpoint, rule, antialias):
    path, pos = checkpoint
    cfg = ModelConfig.tiny(pretrained=str(path), image_size=96, pos_embed_resize=rule)  # 12x12 grid
    got = RISCLIP.from_config(cfg).clip.visual.positional_embedding.detach()
    assert got.shape == (1 + 144, pos.shape[1])
    torch.testing.assert_close(got, _expected(pos, 12, antialias), atol=1e-5, rtol=1e-5)
    # the two rules are different functions (open_clip's antialiased kernel is Keys' a = -0.5, MaskCLIP's -0.75)
    other = _expected(pos, 12, not antialias)
    assert (got - other).abs().max() > 1e-3


def test_same_grid_is_left_alone_and_the_default_stays_out_of_the_hash(checkpoint):
    path, pos = checkpoint
    for rule in ("open_clip", "maskclip"):
        got = RISCLIP.from_config(ModelConfig.tiny(pretrained=str(path), image_size=48, pos_embed_resize=rule))
        assert torch.equal(got.clip.visual.positional_embedding.detach(), pos)
    base = ModelConfig.tiny()
    assert "pos_embed_resize" not in base.to_dict()
    assert ModelConfig.tiny(pos_embed_resize="maskclip").config_hash() != base.config_hash()
    with pytest.raises(ValueError, match="valid: open_clip, maskclip"):
        ModelConfig.tiny(pos_embed_resize="nearest")
