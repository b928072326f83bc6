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
    m = p.meter()
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


def _pair(inter: int, union: int, side: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """A prediction and a target on a side x side grid with the given intersection and union pixel counts
    (the prediction is the first ``union`` pixels in raster order, the target the first ``inter``)."""
    pred = torch.zeros(side * side, dtype=torch.bool)
    target = torch.zeros(side * side, dtype=torch.bool)
    pred[:union] = True
    target[:inter] = True
    return pred.view(side, side), target.view(side, side)


def _edge_cases() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Eight expressions: both empty; empty prediction (target 10 px); empty target (prediction 10 px);
    IoU exactly 0.5, 0.6, 0.7, 0.8 and 0.9 (I = 500 ... 900 of U = 1000)."""
    z = torch.zeros(50, 50, dtype=torch.bool)
    ten = z.clone()
    ten[0, :10] = True
    pairs = [(z, z), (z, ten), (ten, z)] + [_pair(i, 1000) for i in (500, 600, 700, 800, 900)]
    return [p for p, _ in pairs], [t for _, t in pairs]


def _meter(name: str) -> RISMetrics:
    m = get_protocol(name).meter()
    m.update(*_edge_cases())
    return m


def test_ours_on_the_edge_cases():
    """Ours: an empty union scores 1; P@X counts IoU > X, so an IoU of exactly X does not count at X."""
    m = _meter("ours")
    assert m.per_sample_iou().tolist() == [1.0, 0.0, 0.0, 0.5, 0.6, 0.7, 0.8, 0.9]
    r = m.compute()
    assert r["mIoU"] == pytest.approx(100 * 4.5 / 8)
    assert r["oIoU"] == pytest.approx(100 * 3500 / 5020)  # unions: 0 + 10 + 10 + 5 x 1000
    assert [r[f"P@{x}"] for x in (50, 60, 70, 80, 90)] == pytest.approx([100 * k / 8 for k in (5, 4, 3, 2, 1)])


def test_lavt_on_the_edge_cases():
    """LAVT's test: ``this_iou = 0.0 if U == 0 else I / U``; precision counts ``this_iou >= X``."""
    m = _meter("lavt")
    assert m.per_sample_iou().tolist() == [0.0, 0.0, 0.0, 0.5, 0.6, 0.7, 0.8, 0.9]
    r = m.compute()
    assert r["mIoU"] == pytest.approx(100 * 3.5 / 8)
    assert r["oIoU"] == pytest.approx(100 * 3500 / 5020)
    assert [r[f"P@{x}"] for x in (50, 60, 70, 80, 90)] == pytest.approx([100 * k / 8 for k in (5, 4, 3, 2, 1)])


def test_cris_on_the_edge_cases():
    """CRIS's test: ``iou = I / (U + 1e-6)`` (an empty union scores 0), precision ``iou > thres`` for thres in
    ``torch.arange(0.5, 1.0, 0.1)``, float32: 0.5, 0.60000002, 0.69999999, 0.80000001, 0.89999998. An IoU
    of exactly X (I/U = X with U = 1000) becomes X - X * 1e-9: above float32 0.7 and 0.9 (which lie below
    0.7 and 0.9), below 0.5, 0.6 and 0.8 (which lie at or above)."""
    m = _meter("cris")
    iou = m.per_sample_iou().tolist()
    assert iou[:3] == [0.0, 0.0, 0.0]
    assert iou[3:] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9], abs=1e-8)
    assert all(v < x for v, x in zip(iou[3:], (0.5, 0.6, 0.7, 0.8, 0.9)))
    r = m.compute()
    # above 0.5: the IoUs 0.6-, 0.7-, 0.8-, 0.9- (4); above 0.60000002: 0.7-, 0.8-, 0.9- (3); above 0.69999999:
    # 0.7- = 0.6999999993, 0.8-, 0.9- (3); above 0.80000001: 0.9- (1); above 0.89999998: 0.9- = 0.8999999991 (1)
    assert [r[f"P@{x}"] for x in (50, 60, 70, 80, 90)] == pytest.approx([100 * k / 8 for k in (4, 3, 3, 1, 1)])
    assert r["mIoU"] == pytest.approx(100 * 3.5 / 8, abs=1e-5)


def test_lavt_resizes_the_target_as_pil_does():
    """A one-pixel column at x = 1 of a 480 x 1000 (h x w) target, resized to 480 x 480. torch's nearest
    takes source column floor(d * 1000 / 480): 0, 2, 4, 6, ... (never 1): the column vanishes. PIL's
    nearest takes the column under each output pixel's centre, floor((d + 0.5) * 1000 / 480): 1, 3, 5, ...:
    output column 0 is the thin column, 480 pixels. Scored against an empty prediction, LAVT's IoU is 0
    either way, but the thin column counts in oIoU's union only under PIL's rule."""
    from risclip.engine import resize_mask

    target = torch.zeros(480, 1000, dtype=torch.bool)
    target[:, 1] = True
    torch_rule = resize_mask(target, 480, "torch-nearest")
    pil_rule = resize_mask(target, 480, "pil-nearest")
    assert int(torch_rule.sum()) == 0
    assert int(pil_rule.sum()) == 480 and bool(pil_rule[:, 0].all())
    batch = {"orig_mask": [target]}
    (lavt_target,) = protocol_targets(batch, get_protocol("lavt"), torch.device("cpu"))
    assert torch.equal(lavt_target, pil_rule)
    # the same thin column, predicted exactly at 480 x 480: LAVT scores IoU 1 (its target keeps the column)
    m = get_protocol("lavt").meter()
    m.update([pil_rule.clone()], [lavt_target])
    assert m.compute()["mIoU"] == pytest.approx(100.0)


def test_unknown_protocol_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: ours, cris, lavt"):
        get_protocol("refer")
