"""Referring-image-segmentation metrics: mIoU, oIoU and Prec@X.

Definitions (DESIGN.md, the field's convention, e.g. LAVT and CRIS evaluations):

* every expression is one sample; its IoU is computed on the *binarised* prediction at the image's
  original resolution (binarising and resizing are the caller's job: this module takes booleans);
* ``mIoU`` is the mean of per-sample IoUs;
* ``oIoU`` (overall, or cumulative IoU) is the sum of intersections divided by the sum of unions
  over the whole set, so large objects weigh more;
* ``P@50 .. P@90`` are the share of samples whose IoU is strictly greater than 0.5 .. 0.9.

All values are returned in percent.

The empty-union case (an empty target *and* an empty prediction) never occurs in RefCOCO, but it can
in synthetic or cropped data. We score such a sample's IoU as ``empty_iou`` (default 1.0: predicting
nothing for nothing is exactly right); it adds 0 to both oIoU sums. Set ``empty_iou=0.0`` to follow the
evaluation scripts that divide with an epsilon and so score it 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

PRECISION_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
METRIC_NAMES: tuple[str, ...] = ("mIoU", "oIoU") + tuple(f"P@{int(t * 100)}" for t in PRECISION_THRESHOLDS)


def intersection_union(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample intersection and union pixel counts of boolean masks shaped (B, ...) or (H, W).

    A 2-D input is treated as one sample. Returns two int64 tensors of shape (B,) on the input's device.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    pred = pred.bool()
    target = target.bool()
    if pred.dim() == 2:
        pred, target = pred[None], target[None]
    flat_p = pred.reshape(pred.shape[0], -1)
    flat_t = target.reshape(target.shape[0], -1)
    inter = (flat_p & flat_t).sum(dim=1)
    union = (flat_p | flat_t).sum(dim=1)
    return inter, union


class RISMetrics:
    """Accumulates RIS metrics over batches or single samples.

    ``update(pred, target, kinds=None)`` takes boolean tensors of equal shape, (B, H, W) or (H, W),
    on any device, or lists of such tensors of differing sizes (images at their original
    resolutions). ``kinds`` optionally names each sample's expression kind for :meth:`compute_by_kind`.
    """

    def __init__(self, empty_iou: float = 1.0) -> None:
        self.empty_iou = float(empty_iou)
        self.reset()

    def reset(self) -> None:
        self._inter: list[torch.Tensor] = []
        self._union: list[torch.Tensor] = []
        self._kinds: list[str | None] = []

    def __len__(self) -> int:
        return len(self._kinds)

    def update(
        self,
        pred: torch.Tensor | Sequence[torch.Tensor],
        target: torch.Tensor | Sequence[torch.Tensor],
        kinds: Iterable[str | None] | str | None = None,
    ) -> None:
        if isinstance(pred, torch.Tensor) != isinstance(target, torch.Tensor):
            raise TypeError("pred and target must both be tensors or both be sequences of tensors")
        if isinstance(pred, torch.Tensor):
            inter, union = intersection_union(pred, target)
        else:
            if len(pred) != len(target):
                raise ValueError(f"{len(pred)} predictions for {len(target)} targets")
            if not pred:
                return
            pairs = [intersection_union(p, t) for p, t in zip(pred, target)]
            inter = torch.cat([i.cpu() for i, _ in pairs])
            union = torch.cat([u.cpu() for _, u in pairs])
        n = inter.numel()
        if kinds is None or isinstance(kinds, str):
            kind_list = [kinds] * n
        else:
            kind_list = list(kinds)
            if len(kind_list) != n:
                raise ValueError(f"{len(kind_list)} kinds for {n} samples")
        self._inter.append(inter.detach().to("cpu", torch.float64))
        self._union.append(union.detach().to("cpu", torch.float64))
        self._kinds.extend(kind_list)

    def per_sample_iou(self) -> torch.Tensor:
        """IoU of every sample seen so far, in [0, 1], float64, in update order."""
        if not self._inter:
            return torch.zeros(0, dtype=torch.float64)
        inter = torch.cat(self._inter)
        union = torch.cat(self._union)
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, self.empty_iou))
        return iou

    @staticmethod
    def _summarise(iou: torch.Tensor, inter: torch.Tensor, union: torch.Tensor) -> dict[str, float]:
        if iou.numel() == 0:
            raise ValueError("no samples to compute metrics over")
        total_union = union.sum().item()
        out = {
            "mIoU": 100.0 * iou.mean().item(),
            "oIoU": 100.0 * (inter.sum().item() / total_union if total_union > 0 else 0.0),
        }
        for t in PRECISION_THRESHOLDS:
            out[f"P@{int(round(t * 100))}"] = 100.0 * (iou > t).double().mean().item()
        return out

    def compute(self) -> dict[str, float]:
        """mIoU, oIoU and P@50..P@90 in percent over every sample seen."""
        iou = self.per_sample_iou()
        if iou.numel() == 0:
            raise ValueError("no samples to compute metrics over")
        return self._summarise(iou, torch.cat(self._inter), torch.cat(self._union))

    def compute_by_kind(self) -> dict[str, dict[str, float]]:
        """The same metrics per expression kind (samples without a kind are grouped under 'none')."""
        iou = self.per_sample_iou()
        if iou.numel() == 0:
            raise ValueError("no samples to compute metrics over")
        inter, union = torch.cat(self._inter), torch.cat(self._union)
        names = ["none" if k is None else str(k) for k in self._kinds]
        out: dict[str, dict[str, float]] = {}
        for kind in sorted(set(names)):
            idx = torch.tensor([i for i, k in enumerate(names) if k == kind])
            summary = self._summarise(iou[idx], inter[idx], union[idx])
            summary["count"] = float(idx.numel())
            out[kind] = summary
        return out
