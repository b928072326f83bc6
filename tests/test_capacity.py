"""The two capacity controls for CFE match its trainable parameters: the adapters widened (bench.capacity) and
per-stream MLPs at CFE's own fusion points (examples/unimodal.py, a plug-in)."""

from __future__ import annotations

import sys

import pytest

from bench.reporting.capacity import matched_adapter_dim, stage1_parameters
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


def test_the_capacity_report_pairs_the_rows_it_should_and_renders_from_its_json(monkeypatch, tmp_path):
    """Rows are found by components, overrides and rung 1's per-seed training config; a quick run or another
    --set never enters a row; CFE's edge over each control is a paired CI with a verdict that follows it; the
    markdown is drawn from the JSON alone."""
    import json

    import numpy as np

    from bench.reporting import capacity_report as R
    from bench.spine.tracking import MemoryTracker

    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    rng = np.random.default_rng(0)
    base = {s: rng.uniform(0.3, 0.7, 300) for s in range(3)}
    shifts = {"rung 1: adapters": 0.0, "adapters, width 91": 0.0, "adapters + unimodal": 0.06,
              "rung 2: adapters + CFE": 0.06, "adapters + FiLM": 0.03}
    t = MemoryTracker()
    try:
        rows = R.rows_for(91)
        for r in rows:
            if r.plugin:
                registry.load_plugin(r.plugin)

        def add(row, seed, shift, train_hash=None, overrides=None):
            run_id = t.start("v", {"kind": "variant", "preset": "synthref", "components": row.label, "seed": seed,
                                   "overrides": row.overrides if overrides is None else overrides,
                                   "train_hash": train_hash or f"t{seed}", "data_fingerprint": "fp",
                                   "model_hash": f"m-{row.key}"})
            ious = np.clip(base[seed] + shift + rng.normal(0, 0.01, 300), 0, 1)
            t.log_metrics(run_id, {"test_mIoU": 100 * ious.mean(), "test_swap_mIoU": 10.0, "train_seconds": 100.0})
            t.log_json(run_id, {"per_sample": [{"sent_id": i, "iou": float(v), "kind": "relation" if i % 3 else
                                                "attribute", "image_id": i // 4} for i, v in enumerate(ious)]},
                       "metrics.json")
            t.end(run_id)

        for r in rows:
            for s in range(3):
                add(r, s, shifts[r.key])
        add(rows[1], 0, 0.5, train_hash="quick")  # a quick run of the control: newer, another training config
        add(rows[0], 1, 0.5, overrides="model.adapter_dim=16")  # a probe with another width
        data = json.loads(json.dumps(R.collect(t, "synthref", 91, {r.key: 1000 for r in rows})))
    finally:
        for name in ("unimodal", "film"):
            registry.unregister(name)
            sys.modules.pop(f"examples.{name}", None)
    by = {r["key"]: r for r in data["rows"]}
    assert all(r["seeds"] == [0, 1, 2] for r in data["rows"])
    assert by["rung 1: adapters"]["mIoU"] < 55 and by["adapters, width 91"]["mIoU"] < 55  # neither stray run entered
    width, place = by["adapters, width 91"]["cfe_over"], by["adapters + unimodal"]["cfe_over"]
    assert width["low"] > 4 and width["images"] == 75 and width["seeds"] == 3
    assert place["low"] < 0 < place["high"]
    text = R.render_markdown(data, None)
    assert "CFE beats adapters, width 91 by +6" in text
    assert "CFE and adapters + unimodal are indistinguishable" in text
    assert "The FiLM plug-in adds +3" in text
    # the markdown finds its rows by role, not by their place in the JSON
    assert [r["role"] for r in data["rows"]] == ["rung 1", "control", "control", "rung 2", "plug-in"]
    shuffled = {**data, "rows": [data["rows"][i] for i in (4, 3, 0, 2, 1)]}
    lines = set(R.render_markdown(shuffled, None).splitlines())
    assert {ln for ln in text.splitlines() if ln.startswith("- ")} <= lines
    with pytest.raises(ValueError, match="role"):
        R.Row("x", "baseline", "adapters")
