"""bench.stage1_trials: what each trial trains, restored after it, and the report's rows."""

from __future__ import annotations

import json

import pytest

import risclip.engine as E
import risclip.model as M
from bench.experiments import stage1_trials as S
from risclip.config import ModelConfig, TrainConfig


def _ids(params):
    return {id(p) for p in params}


def test_finetune_and_frozen_text_change_what_stage_one_trains_and_only_inside_the_trial():
    model = M.RISCLIP.from_config(ModelConfig.tiny(components="adapters"))
    plain = _ids(model.stage_parameters(1))
    text = _ids(model.text_adapters.parameters())
    clip = _ids(model.clip.parameters())
    assert text <= plain and not clip & plain
    with S._what_trains(0.0, True):
        assert _ids(model.stage_parameters(1)) == plain - text
    with S._what_trains(0.1, False):
        assert _ids(model.stage_parameters(1)) == plain | clip
        model.set_stage(1)
        assert all(p.requires_grad for p in model.clip.parameters())
        opt, sched = E.make_optimizer(model, E.stage_rule(1, TrainConfig(lr=1e-2)), TrainConfig(lr=1e-2), 10)  # as train_stage calls it
        rates = {g["name"]: g["initial_lr"] for g in opt.param_groups}
        assert rates["clip"] == pytest.approx(1e-3) and rates["adapters"] == pytest.approx(1e-2)
        assert sched.base_lrs == [g["initial_lr"] for g in opt.param_groups]
    assert _ids(model.stage_parameters(1)) == plain  # restored
    model.set_stage(1)
    assert not any(p.requires_grad for p in model.clip.parameters())


def test_report_renders_every_recorded_trial_with_its_swap_share(tmp_path, capsys):
    rows = [{"trial": "preset", "what": "w", "mIoU": 30.0, "select": 40.0, "select_attribute": 60.0,
             "select_position": 35.0, "select_relation": None, "swap": 15.0, "train_seconds": 100.0}]
    md = S.render("synth-refcoco", rows, "python -m bench.stage1_trials")
    assert "| preset | w | - | 30.0 | 0.50 | 30.0 | 40.0 | 60.0 | - | 35.0 | - | 15.0 | 50% | 100.0 |" in md
    cut = [{**rows[0], "trial": "val-cut", "mIoU": 33.0, "threshold": 0.3, "fixed_mIoU": 30.0, "samples": 600,
            "select_attribute_forms": {"colour": 90.0, "size": 70.0, "size+colour": 80.0, "shape": 100.0}}]
    assert "| val-cut | w | 600 | 33.0 | 0.30 | 30.0 | 40.0 | 60.0 | 90.0 / 70.0 / 80.0 |" in S.render("synth-refcoco", cut, "c")
    assert "`python -m bench.stage1_trials`" in md
    # recorded trials are not run again: with every chosen trial in the JSON the command only renders
    (tmp_path / "stage1-trials.json").write_text(json.dumps({"trials": rows}))
    assert S.main(["--trials", "preset", "--out-dir", str(tmp_path)]) == 0
    assert "| preset |" in (tmp_path / "stage1-trials.md").read_text()
    with pytest.raises(SystemExit):
        S.main(["--trials", "nope"])
    assert "unknown trial" in capsys.readouterr().err
