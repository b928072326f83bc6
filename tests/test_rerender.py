"""Reports that measure and render at once keep what they measured in JSON and re-render from it alone."""

from __future__ import annotations

import json

import pytest

from bench.reporting import proxy_report


def _trial(name: str, attribute: float) -> dict:
    zs = {p: {"hit": 40.0, "chance": 25.0} for p in proxy_report.PROMPTS}
    readout = {"select": 50.0, "select_by_kind": {"attribute": attribute, "position": 30.0, "relation": 20.0},
               "zero_shot": zs}
    return {"trial": name, "what": "a recipe", "pretrain_seconds": 100.0, "retrieval_top1": 12.0, "val_samples": 600,
            "probes": {k: 60.0 for k in proxy_report.PROBES}, "value": readout, "plain": readout}


def test_proxy_trials_render_from_their_json(tmp_path):
    data = {"preset": "synthref", "command": "python -m bench.proxy_trials --trials a,b", "seconds": 600.0,
            "rows": [_trial("a", 50.0), _trial("b", 70.0)]}
    md = proxy_report.write_trials(data, tmp_path / "proxy-trials")
    text = md.read_text()
    assert "in 10.0 min" in text and "70.0 (b)" in text  # the best attribute select names its trial
    md.unlink()
    assert proxy_report.rerender(tmp_path / "proxy-trials.json").read_text() == text
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"command": data["command"], "rows": data["rows"]}))
    with pytest.raises(ValueError, match="no preset, seconds"):
        proxy_report.rerender(old)
