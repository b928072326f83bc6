"""The two capacity controls for CFE match its trainable parameters: the adapters widened (bench.capacity) and
per-stream MLPs at CFE's own fusion points (examples/unimodal.py, a plug-in)."""

from __future__ import annotations

import sys

from bench.spine.capacity import matched_adapter_dim, stage1_parameters
from risclip import registry
from risclip.config import ModelConfig
from risclip.model import RISCLIP


def test_widened_adapters_train_as_many_parameters_as_adapters_and_cfe():
    cfg = ModelConfig.tiny(image_size=128, clip_model="RIS-Tiny-AP", adapter_dim=32, cfe_dim=64, cfe_heads=4)
    width, count, target = matched_adapter_dim(cfg)
    assert width > cfg.adapter_dim and abs(count - target) / target < 0.01
    assert stage1_parameters(cfg.with_components("adapters,cfe")) == target


def _group(cfg: ModelConfig, components: str, name: str) -> int:
    model = RISCLIP.from_config(cfg.with_components(components))
    return sum(p.numel() for p in model.stage_parameter_groups(1)[name])


def test_the_unimodal_plugin_matches_cfe_at_its_fusion_points(monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    registry.load_plugin("examples.unimodal")
    try:
        for layers in (None, (1, 3)):
            cfg = ModelConfig.tiny(cfe_layers=layers)
            cfe, uni = _group(cfg, "adapters,cfe", "cfe"), _group(cfg, "adapters,unimodal", "unimodal")
            assert abs(uni - cfe) / cfe < 0.01, (layers, uni, cfe)
    finally:
        registry.unregister("unimodal")
        sys.modules.pop("examples.unimodal", None)
