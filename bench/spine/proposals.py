"""Referent selection among ground-truth instance proposals: rung 0 on the baselines' own terms.

The ``largest-object`` and ``random-object`` baselines (:mod:`bench.spine.baselines`) choose a
ground-truth instance mask of the image without reading the text. A variant's raw mIoU is not
comparable with them: it must also draw the mask, from a 12x12 patch map. This scorer gives every
variant the same oracle proposals and lets its map choose: the instance whose mean map value (the
pixel logits, resized to the image) is highest is the prediction. Against ``random-object`` this
isolates the one thing a grounding map adds, reading the text to pick the object. On SynthRef,
whose objects do not overlap, the resulting mIoU is the share of expressions whose referent was
picked.

Zero-shot training-free RIS work (e.g. MaskCLIP-style region scoring over mask proposals) scores
regions the same way; the mean over the region (not the max) is our choice.

Attribute expressions are also split by the words that pick their referent (:func:`attribute_form`):
shape alone, colour, size, or size and colour. Colour is a patch's own property; size is not (a patch
inside a large square looks like one inside a small one), so the split tells which a map fails to read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.spine.baselines import InstanceMasks
from risclip import distributed as dist
from risclip.data.refer import ReferDataset
from risclip.data.scenes import COLOURS, SIZES
from risclip.metrics import RISMetrics
from risclip.model import RISOutput

ATTRIBUTE_FORMS = ("shape", "colour", "size", "size+colour")


def attribute_form(text: str) -> str:
    """Which of SynthRef's attribute words an expression uses: ``shape`` (none: "the square"), ``colour``,
    ``size`` or ``size+colour`` (:data:`ATTRIBUTE_FORMS`). Real datasets' sentences have no kind, so are never
    split."""
    words = set(text.lower().split())
    colour, size = bool(words & set(COLOURS)), bool(words & set(SIZES))
    return "size+colour" if colour and size else "colour" if colour else "size" if size else "shape"


def form_key(form: str) -> str:
    """An attribute form as a metric-name part: ``size+colour`` -> ``size_colour``."""
    return form.replace("+", "_")


class ProposalSelection:
    """An evaluator (``risclip.engine.Evaluator``): ``reset``, ``process(batch, output)``, ``compute``."""

    name = "select"

    def __init__(self, dataset: ReferDataset) -> None:
        self.instances = InstanceMasks(dataset.anns.values())
        self.meter = RISMetrics()
        self.forms = RISMetrics()  # attribute expressions only, by attribute_form

    def reset(self) -> None:
        self.meter.reset()
        self.forms.reset()

    @staticmethod
    def select(score_map: torch.Tensor, instances: torch.Tensor) -> torch.Tensor:
        """The instance (K, h, w) with the highest mean of ``score_map`` (h, w); all-False if there is none."""
        if instances.shape[0] == 0:
            return torch.zeros(score_map.shape, dtype=torch.bool)
        inst = instances.to(score_map.dtype)
        means = (inst * score_map).flatten(1).sum(1) / inst.flatten(1).sum(1).clamp_min(1)
        return instances[int(means.argmax())]

    def process(self, batch: dict, out: RISOutput) -> None:
        preds, targets, kinds, forms = [], [], [], []
        for i, meta in enumerate(batch["meta"]):
            h, w = int(meta["orig_h"]), int(meta["orig_w"])
            score = F.interpolate(out.mask_logits[i][None, None].float(), size=(h, w), mode="bilinear",
                                  align_corners=False)[0, 0].cpu()
            preds.append(self.select(score, torch.from_numpy(self.instances.get(int(meta["image_id"]), h, w))))
            targets.append(batch["orig_mask"][i].cpu())
            kinds.append(meta["kind"])
            forms.append(attribute_form(meta.get("text", "")) if meta["kind"] == "attribute" else None)
        self.meter.update(preds, targets, kinds=kinds)
        attr = [i for i, f in enumerate(forms) if f is not None]
        if attr:
            self.forms.update([preds[i] for i in attr], [targets[i] for i in attr], kinds=[forms[i] for i in attr])

    def compute(self) -> dict:
        """``{"overall": metrics, "by_kind": {kind: metrics}, "by_form": {attribute form: metrics}}`` over every
        sample seen (``by_form`` empty without attribute expressions); under torchrun, the sums of every
        process's shard."""
        if not dist.active():
            forms = self.forms.compute_by_kind() if len(self.forms.kinds_in_order()) else {}
            return {"overall": self.meter.compute(), "by_kind": self.meter.compute_by_kind(), "by_form": forms}
        from risclip.engine import all_kinds

        reduce = dist.all_reduce_sum
        return {"overall": self.meter.compute(reduce), "by_kind": self.meter.compute_by_kind(reduce, all_kinds(self.meter)),
                "by_form": self.forms.compute_by_kind(reduce, ATTRIBUTE_FORMS)}
