"""Evaluators the harness adds to an evaluation pass (``risclip.engine.Evaluator``: reset / process /
compute), beside :class:`bench.proposals.ProposalSelection`."""

from __future__ import annotations

import torch

from risclip import distributed as dist
from risclip.metrics import intersection_union
from risclip.model import RISOutput


class PerSampleIoU:
    """Every expression's IoU under protocol ``ours``, with its sentence id and kind: what the factorial
    study's bootstrap resamples (confidence intervals over expressions need the per-expression values)."""

    name = "per_sample"

    def __init__(self, model) -> None:
        self.model = model
        self.rows: list[dict] = []

    def reset(self) -> None:
        self.rows = []

    def process(self, batch: dict, out: RISOutput) -> None:
        sizes = [(m["orig_h"], m["orig_w"]) for m in batch["meta"]]
        preds = self.model.binarise(out, sizes)
        for meta, pred, target in zip(batch["meta"], preds, batch["orig_mask"]):
            inter, union = intersection_union(pred.cpu(), target.cpu())
            iou = float(inter[0]) / float(union[0]) if int(union[0]) > 0 else 1.0
            self.rows.append({"sent_id": int(meta["sent_id"]), "kind": meta.get("kind"), "iou": iou})

    def compute(self) -> dict:
        rows = self.rows
        if dist.active():
            import torch.distributed as tdist

            gathered: list[list[dict]] = [[] for _ in range(dist.world_size())]
            tdist.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        rows = sorted(rows, key=lambda r: r["sent_id"])
        return {"rows": rows, "mIoU": 100.0 * float(torch.tensor([r["iou"] for r in rows]).mean()) if rows else 0.0}
