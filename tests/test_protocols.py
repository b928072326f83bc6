"""Evaluation protocols of the peers (risclip.metrics.PROTOCOLS), each against a hand-computed example."""

from __future__ import annotations

import math

import pytest
import torch

from risclip.config import ModelConfig
from risclip.engine import binarise, protocol_targets
from risclip.metrics import PROTOCOLS, RISMetrics, get_protocol
from risclip.model import RISCLIP, RISOutput


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.fixture(scope="module")
def example():
    """One 96 x 96 image (the tiny model's input size), target = rows 0-7 (768 px). Logits in full-width
    bands, so that bilinear resizing has no corners: rows 0-3 +10 (p ~ 1), rows 4-5 -10, rows 6-9 p = 0.4
    (rows 6-7 inside the target, 8-9 outside), the rest -10."""
    model = RISCLIP.from_config(ModelConfig.tiny(components="adapters"))  # trained variant: sigmoid rule
    logits = torch.full((1, 96, 96), -10.0)
    logits[0, 0:4] = 10.0
    logits[0, 6:10] = _logit(0.4)
    target = torch.zeros(96, 96, dtype=torch.bool)
    target[0:8] = True
    out = RISOutput(patch_logits=torch.zeros(1, 12, 12), mask_logits=logits, patch_cosine=torch.zeros(1, 12, 12))
    batch = {"meta": [{"orig_h": 96, "orig_w": 96, "kind": "attribute"}], "orig_mask": [target]}
    return model, out, batch


def _score(example, name):
    model, out, batch = example
    p = get_protocol(name)
    preds, targets = binarise(model, out, batch, p), protocol_targets(batch, p, torch.device("cpu"))
    m = RISMetrics(inclusive=p.inclusive)
    m.update(preds, targets)
    return preds[0], m.compute()


def test_ours(example):
    # sigmoid > 0.5: rows 0-3 (384 px), all inside the 768-px target: IoU 384 / 768 = 0.5; P@50 needs IoU > 0.5
    pred, m = _score(example, "ours")
    assert pred.shape == (96, 96) and int(pred.sum()) == 384
    assert m["mIoU"] == pytest.approx(50.0) and m["oIoU"] == pytest.approx(50.0) and m["P@50"] == 0.0


def test_cris(example):
    # sigmoid > 0.35 also takes the p = 0.4 rows 6-9: I = 384 + 192 = 576, U = 768 + 192 = 960, IoU 0.6
    pred, m = _score(example, "cris")
    assert int(pred.sum()) == 768
    assert m["mIoU"] == pytest.approx(60.0)
    assert PROTOCOLS["cris"].reports == ("mIoU",)


def test_lavt(example):
    # scored at 480 x 480: the +10 / -10 boundary stays at row 4 x 5 = 20 (bilinear, symmetric logits), the
    # target becomes rows 0-39 (nearest): I = 20 x 480, U = 40 x 480, IoU exactly 0.5, and P@50 counts IoU >= 0.5
    pred, m = _score(example, "lavt")
    assert pred.shape == (480, 480) and int(pred.sum()) == 20 * 480
    assert m["mIoU"] == pytest.approx(50.0) and m["P@50"] == 100.0 and m["P@60"] == 0.0


def test_unknown_protocol_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: ours, cris, lavt"):
        get_protocol("refer")
