"""Referring-image-segmentation metrics: mIoU, oIoU and Prec@X.

Definitions (docs/design.md, "Metrics and protocols"; the field's convention, e.g. LAVT and CRIS evaluations):

* every expression is one sample; its IoU is computed on the *binarised* prediction at the image's
  original resolution (binarising and resizing are the caller's job: this module takes booleans);
* ``mIoU`` is the mean of per-sample IoUs;
* ``oIoU`` (overall, or cumulative IoU) is the sum of intersections divided by the sum of unions
  over the whole set, so large objects weigh more;
* ``P@50 .. P@90`` are the share of samples whose IoU is strictly greater than 0.5 .. 0.9 (or at least
  0.5 .. 0.9 with ``inclusive``, LAVT's convention);
* :class:`EvalProtocol` / ``PROTOCOLS`` name the peers' conventions (threshold, scoring size, P@X rule).

All values are returned in percent.

Empty masks. Our own protocol (``ours``) scores an expression whose target *and* prediction are both
empty (an empty union) as IoU 1.0: predicting nothing for nothing is exactly right; it adds 0 to both
oIoU sums. An empty prediction against a non-empty target, or the reverse, scores 0. RefCOCO and SynthRef
never have an empty target, so this rule never moves their numbers. The peers' own evaluation code scores
an empty union 0 (LAVT: ``this_iou = 0.0 if U == 0``; CRIS: ``inter / (union + 1e-6)``), and their
protocols here do the same (:class:`EvalProtocol` ``empty_iou``, ``iou_epsilon``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

PRECISION_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
METRIC_NAMES: tuple[str, ...] = ("mIoU", "oIoU") + tuple(f"P@{int(t * 100)}" for t in PRECISION_THRESHOLDS)
Reduce = Callable[[torch.Tensor], torch.Tensor]  # sums a float64 vector across processes (distributed runs)


# CRIS's precision thresholds: ``torch.arange(0.5, 1.0, 0.1)`` in float32, compared (with IoUs in float64)
# at their float32 values: 0.5, 0.6000000238..., 0.6999999881..., 0.8000000119..., 0.8999999762...
CRIS_THRESHOLDS: tuple[float, ...] = (0.5, 0.6000000238418579, 0.699999988079071, 0.800000011920929,
                                      0.8999999761581421)
TARGET_RESIZES: tuple[str, ...] = ("torch-nearest", "pil-nearest")


@dataclass(frozen=True)
class EvalProtocol:
    """How a prediction is binarised and scored; peers differ, so every number names its protocol.

    ``threshold``: a pixel is foreground when sigmoid(logit) > threshold (variants with nothing trained
    keep their zero-shot rule, :mod:`risclip.grounding`); ``size``: None scores at each image's original
    size, else prediction and ground truth are both resized to ``size`` x ``size`` (the prediction's logits
    bilinearly; the mask by nearest neighbour, ``target_resize``: torch's ``mode="nearest"`` or PIL's
    ``Image.NEAREST``, which pick different source pixels); ``inclusive``: P@X counts IoU >= X rather than
    IoU > X; ``precision_thresholds``: the X of P@X as the protocol's code compares them; ``empty_iou``: the
    IoU of an expression whose target and prediction are both empty; ``iou_epsilon``: added to every union
    before dividing (then an empty union scores 0 whatever ``empty_iou`` says); ``reports``: the metrics the
    protocol's papers publish (the others are still computed, but tables show these).
    """

    name: str
    threshold: float = 0.5
    size: int | None = None
    inclusive: bool = False
    reports: tuple[str, ...] = METRIC_NAMES
    description: str = ""
    empty_iou: float = 1.0
    iou_epsilon: float = 0.0
    precision_thresholds: tuple[float, ...] = PRECISION_THRESHOLDS
    target_resize: str = "torch-nearest"

    def __post_init__(self) -> None:
        if self.target_resize not in TARGET_RESIZES:
            raise ValueError(f"unknown target_resize '{self.target_resize}'; valid: {', '.join(TARGET_RESIZES)}")
        if len(self.precision_thresholds) != len(PRECISION_THRESHOLDS):
            raise ValueError(f"precision_thresholds must give {len(PRECISION_THRESHOLDS)} values, for P@50..P@90")

    def meter(self) -> RISMetrics:
        """A :class:`RISMetrics` that scores by this protocol's rules."""
        return RISMetrics(empty_iou=self.empty_iou, inclusive=self.inclusive, epsilon=self.iou_epsilon,
                          thresholds=self.precision_thresholds)


PROTOCOLS: dict[str, EvalProtocol] = {
    "ours": EvalProtocol("ours", description="sigmoid > 0.5 at the original size; P@X counts IoU > X; an empty "
                                             "target and empty prediction score IoU 1 (RISCLIP)"),
    "cris": EvalProtocol("cris", threshold=0.35, reports=("mIoU",), empty_iou=0.0, iou_epsilon=1e-6,
                         precision_thresholds=CRIS_THRESHOLDS,
                         description="sigmoid > 0.35 at the original size; IoU = I / (U + 1e-6); P@X counts IoU > X "
                                     "at float32 X; mIoU only (CRIS, ETRIS, DETRIS). Unlike CRIS's test, our "
                                     "probabilities come from logits resized bilinearly to the original size, not "
                                     "from a letterboxed input warped back with bicubic interpolation"),
    "lavt": EvalProtocol("lavt", size=480, inclusive=True, empty_iou=0.0, target_resize="pil-nearest",
                         description="sigmoid > 0.5, prediction and mask scored at 480 x 480 (the mask resized by "
                                     "PIL's nearest neighbour); P@X counts IoU >= X; an empty union scores 0 "
                                     "(LAVT, CARIS)"),
}


def get_protocol(name: str) -> EvalProtocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol '{name}'; valid: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


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

    def __init__(self, empty_iou: float = 1.0, inclusive: bool = False, epsilon: float = 0.0,
                 thresholds: Sequence[float] = PRECISION_THRESHOLDS) -> None:
        self.empty_iou = float(empty_iou)
        self.inclusive = bool(inclusive)  # P@X counts IoU >= X (LAVT) instead of IoU > X
        self.epsilon = float(epsilon)  # added to every union before dividing (CRIS: 1e-6)
        self.thresholds = tuple(float(t) for t in thresholds)
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
        if self.epsilon > 0:
            return inter / (union + self.epsilon)
        return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, self.empty_iou))

    def _sums(self, iou: torch.Tensor, inter: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
        """[count, sum of IoU, sum of intersections, sum of unions, count above each P@X threshold]: what
        adds across processes exactly (every metric is a ratio of these sums, never a mean of means)."""
        above = [(iou >= t if self.inclusive else iou > t).double().sum() for t in self.thresholds]
        return torch.stack([torch.tensor(float(iou.numel()), dtype=torch.float64), iou.sum(), inter.sum(),
                            union.sum(), *above]).to(torch.float64)

    @staticmethod
    def _from_sums(v: torch.Tensor) -> dict[str, float]:
        n, iou_sum, inter, union = (float(x) for x in v[:4])
        if n == 0:
            raise ValueError("no samples to compute metrics over")
        out = {"mIoU": 100.0 * iou_sum / n, "oIoU": 100.0 * (inter / union if union > 0 else 0.0)}
        for t, count in zip(PRECISION_THRESHOLDS, v[4:]):
            out[f"P@{int(round(t * 100))}"] = 100.0 * float(count) / n
        return out

    def _all(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self._inter:
            empty = torch.zeros(0, dtype=torch.float64)
            return empty, empty, empty
        return self.per_sample_iou(), torch.cat(self._inter), torch.cat(self._union)

    def compute(self, reduce: Reduce | None = None) -> dict[str, float]:
        """mIoU, oIoU and P@50..P@90 in percent over every sample seen. ``reduce`` sums the metric sums
        across processes (``risclip.distributed.all_reduce_sum``), so a sharded evaluation equals one
        process's."""
        v = self._sums(*self._all())
        return self._from_sums(reduce(v) if reduce is not None else v)

    def compute_by_kind(self, reduce: Reduce | None = None, kinds: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """The same metrics per expression kind (samples without a kind are grouped under 'none').
        Distributed, every process must pass the same ``kinds`` (the union of all processes' kinds)."""
        iou, inter, union = self._all()
        names = ["none" if k is None else str(k) for k in self._kinds]
        if kinds is None:
            if iou.numel() == 0:
                raise ValueError("no samples to compute metrics over")
            kinds = sorted(set(names))
        out: dict[str, dict[str, float]] = {}
        for kind in kinds:
            idx = torch.tensor([i for i, k in enumerate(names) if k == kind], dtype=torch.long)
            v = self._sums(iou[idx], inter[idx], union[idx])
            v = reduce(v) if reduce is not None else v
            if float(v[0]) == 0:
                continue
            summary = self._from_sums(v)
            summary["count"] = float(v[0])
            out[kind] = summary
        return out

    def kinds_in_order(self) -> list[str | None]:
        """Each sample's kind, in update order (beside :meth:`per_sample_iou`)."""
        return list(self._kinds)

    def kinds(self) -> list[str]:
        return sorted({"none" if k is None else str(k) for k in self._kinds})
