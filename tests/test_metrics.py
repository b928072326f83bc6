import pytest
import torch

from risclip.metrics import METRIC_NAMES, RISMetrics, intersection_union


def _mask(h, w, cells):
    m = torch.zeros(h, w, dtype=torch.bool)
    for r, c in cells:
        m[r, c] = True
    return m


def test_hand_computed_two_samples():
    # sample A: pred 4 px, target 2 px, overlap 2 -> IoU 2/4 = 0.5
    pa = _mask(4, 4, [(0, 0), (0, 1), (1, 0), (1, 1)])
    ta = _mask(4, 4, [(0, 0), (0, 1)])
    # sample B: pred 3 px, target 3 px, overlap 2 -> IoU 2/4 = 0.5 ; make it 3/3 instead -> 1.0
    pb = _mask(4, 4, [(2, 2), (2, 3), (3, 3)])
    tb = pb.clone()
    m = RISMetrics()
    m.update(torch.stack([pa, pb]), torch.stack([ta, tb]))
    r = m.compute()
    assert set(r) == set(METRIC_NAMES)
    assert r["mIoU"] == pytest.approx(75.0)
    assert r["oIoU"] == pytest.approx(100 * (2 + 3) / (4 + 3))
    # IoUs are 0.5 and 1.0; P@50 uses a strict '>' so only the perfect one counts
    assert r["P@50"] == pytest.approx(50.0)
    assert r["P@90"] == pytest.approx(50.0)


def test_batches_and_single_samples_agree_and_sizes_may_differ():
    g = torch.Generator().manual_seed(0)
    preds = [torch.rand(5 + i, 7, generator=g) > 0.5 for i in range(4)]
    targets = [torch.rand(5 + i, 7, generator=g) > 0.5 for i in range(4)]
    one = RISMetrics()
    for p, t in zip(preds, targets):
        one.update(p, t)
    listed = RISMetrics()
    listed.update(preds, targets)
    assert one.compute() == pytest.approx(listed.compute())
    inter = sum((p & t).sum().item() for p, t in zip(preds, targets))
    union = sum((p | t).sum().item() for p, t in zip(preds, targets))
    assert one.compute()["oIoU"] == pytest.approx(100 * inter / union)


def test_precision_thresholds():
    # IoUs 0.55, 0.65, 0.75, 0.85, 0.95 on 20-pixel targets
    preds, targets = [], []
    for k in (11, 13, 15, 17, 19):
        t = torch.zeros(20, dtype=torch.bool)
        t[:] = True
        p = torch.zeros(20, dtype=torch.bool)
        p[:k] = True
        preds.append(p[None])
        targets.append(t[None])
    m = RISMetrics()
    m.update([p.view(4, 5) for p in preds], [t.view(4, 5) for t in targets])
    r = m.compute()
    assert [r[f"P@{x}"] for x in (50, 60, 70, 80, 90)] == pytest.approx([100, 80, 60, 40, 20])


def test_empty_union_is_defined():
    empty = torch.zeros(1, 3, 3, dtype=torch.bool)
    m = RISMetrics()
    m.update(empty, empty)
    assert m.compute()["mIoU"] == pytest.approx(100.0)
    assert m.compute()["oIoU"] == pytest.approx(0.0)
    m0 = RISMetrics(empty_iou=0.0)
    m0.update(empty, empty)
    assert m0.compute()["mIoU"] == pytest.approx(0.0)


def test_per_kind_breakdown():
    full = torch.ones(2, 2, 2, dtype=torch.bool)
    none = torch.zeros(2, 2, 2, dtype=torch.bool)
    m = RISMetrics()
    m.update(torch.cat([full[:1], none[:1]]), full, kinds=["attribute", "relation"])
    by = m.compute_by_kind()
    assert by["attribute"]["mIoU"] == pytest.approx(100.0)
    assert by["relation"]["mIoU"] == pytest.approx(0.0)
    assert by["relation"]["count"] == 1
    assert m.compute()["mIoU"] == pytest.approx(50.0)


def test_shape_mismatch_and_no_samples_are_errors():
    m = RISMetrics()
    with pytest.raises(ValueError, match="no samples"):
        m.compute()
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.zeros(2, 3, dtype=torch.bool), torch.zeros(3, 2, dtype=torch.bool))


def test_intersection_union_vectorised():
    p = torch.tensor([[[1, 1], [0, 0]], [[1, 0], [1, 0]]], dtype=torch.bool)
    t = torch.tensor([[[1, 0], [0, 0]], [[0, 1], [0, 1]]], dtype=torch.bool)
    i, u = intersection_union(p, t)
    assert i.tolist() == [1, 0]
    assert u.tolist() == [2, 4]
