"""One evaluation pass: every protocol's metrics from one forward pass, per expression kind and per
sample, with distinct images and distinct (image, sentence) pairs run once; and the text controls (swap,
generic sentences), which reuse the test pass's masks through a :class:`PredictionMemo`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from .. import distributed as dist
from ..config import TrainConfig
from ..data.controls import CONTROLS, TextControl
from ..data.refer import ReferDataset, refer_collate
from ..metrics import EvalProtocol, RISMetrics, get_protocol
from ..model import RISCLIP, RISOutput
from .hooks import Evaluator
from .loading import autocast_for, loader_options


@dataclass
class Evaluation:
    metrics: dict[str, float]  # under the first protocol asked for
    by_kind: dict[str, dict[str, float]]
    protocols: dict[str, dict[str, float]] = field(default_factory=dict)  # the other protocols
    per_sample: list[dict] = field(default_factory=list)  # {"sent_id", "image_id", "kind", "iou"}, first protocol
    protocol_by_kind: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # the other protocols


def binarise(model: RISCLIP, out: RISOutput, batch: dict, protocol: EvalProtocol) -> list[torch.Tensor]:
    """A batch's predictions as ``protocol`` scores them (original size, or size x size; its sigmoid cut);
    :func:`protocol_targets` gives the ground truth they are scored against."""
    if protocol.size is None:
        sizes = [(m["orig_h"], m["orig_w"]) for m in batch["meta"]]
    else:
        sizes = [(protocol.size, protocol.size)] * len(batch["meta"])
    return model.binarise(out, sizes, threshold=protocol.threshold)


def distinct_images(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's distinct images (by image id, first appearance first) and each sentence's index into
    them: the model then runs an image tower that does not read the text once per image."""
    slot: dict[int, int] = {}  # image id -> its row among the distinct images
    rows, index = [], []
    for i, m in enumerate(batch["meta"]):
        if m["image_id"] not in slot:
            slot[m["image_id"]] = len(rows)
            rows.append(i)
        index.append(slot[m["image_id"]])
    return batch["image"][rows], torch.tensor(index)


class PredictionMemo:
    """Binary predictions of (image, sentence) pairs already scored, kept packed (a bit per pixel) by the
    sigmoid cut and scoring size that made them. The swap control asks for pairs the test pass has just
    scored: each swapped sentence is another referent's own test sentence, on the same image. The
    memo lets it reuse those masks instead of running the model again (the numbers are the same: a
    pair's prediction depends on nothing else at evaluation)."""

    def __init__(self) -> None:
        self._masks: dict[tuple, tuple[np.ndarray, tuple[int, int]]] = {}

    @staticmethod
    def keys(batch: dict, protocol: EvalProtocol) -> list[tuple]:
        return [(protocol.threshold, protocol.size, int(m["image_id"]), t.numpy().tobytes())
                for m, t in zip(batch["meta"], batch["tokens"].cpu())]

    def get(self, key: tuple) -> torch.Tensor | None:
        hit = self._masks.get(key)
        if hit is None:
            return None
        bits, (h, w) = hit
        return torch.from_numpy(np.unpackbits(bits, count=h * w).reshape(h, w).astype(bool))

    def put(self, key: tuple, mask: torch.Tensor) -> None:
        self._masks[key] = (np.packbits(mask.detach().cpu().numpy().astype(bool).ravel()), tuple(mask.shape))

    def __len__(self) -> int:
        return len(self._masks)


def protocol_targets(batch: dict, protocol: EvalProtocol, device: torch.device) -> list[torch.Tensor]:
    """A batch's ground truth as ``protocol`` scores it (original size, or size x size)."""
    if protocol.size is None:
        return [t.to(device) for t in batch["orig_mask"]]
    return [resize_mask(t, protocol.size, protocol.target_resize).to(device) for t in batch["orig_mask"]]


def resize_mask(mask: torch.Tensor, size: int, rule: str = "torch-nearest") -> torch.Tensor:
    """A boolean mask resized to ``size`` x ``size`` by nearest neighbour: torch's ``mode="nearest"``
    (source pixel floor(i * in / out)) or PIL's ``Image.NEAREST`` (the source pixel under the output pixel's
    centre), as LAVT's test resizes its targets."""
    if rule == "pil-nearest":
        img = Image.fromarray(mask.cpu().numpy().astype(np.uint8) * 255)
        return torch.from_numpy(np.asarray(img.resize((size, size), Image.NEAREST)) > 127)
    return F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0, 0] > 0.5


def _sub_batch(batch: dict, rows: list[int]) -> dict:
    """The samples ``rows`` of a collated batch (:func:`risclip.data.refer.refer_collate`)."""
    idx = torch.tensor(rows)
    out = {k: batch[k][idx] for k in ("image", "tokens", "mask")}
    out["meta"] = [batch["meta"][i] for i in rows]
    if "orig_mask" in batch:
        out["orig_mask"] = [batch["orig_mask"][i] for i in rows]
    return out


def distinct_queries(tokens: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's distinct (image, sentence) pairs, first appearance first, and each sample's row among them.
    At evaluation a pair's prediction depends on nothing else (eval mode: no batch statistics), so a pair
    that appears twice (the generic control gives every sentence of an image the same text; a referent's
    sentences may repeat) is run once and its output copied."""
    key = torch.cat([index[:, None].to(tokens.dtype), tokens], 1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    first: dict[int, int] = {}
    for i, k in enumerate(inverse.tolist()):
        first.setdefault(k, i)
    rows = sorted(first.values())
    slot = {inverse[r].item(): j for j, r in enumerate(rows)}
    return torch.tensor(rows), torch.tensor([slot[k] for k in inverse.tolist()])


def _forward_distinct(model: RISCLIP, images: torch.Tensor, tokens: torch.Tensor, index: torch.Tensor) -> RISOutput:
    """``model(images, tokens, index)`` with every distinct (image, sentence) pair run once (:func:`distinct_queries`)."""
    rows, inverse = distinct_queries(tokens.cpu(), index.cpu())
    if len(rows) == len(index):
        return model(images, tokens, index)
    out = model(images, tokens[rows.to(tokens.device)], index[rows.to(index.device)])
    inv = inverse.to(out.mask_logits.device)
    return RISOutput(*(getattr(out, f.name)[inv] for f in dataclasses.fields(out)))


@torch.no_grad()
def evaluate(model: RISCLIP, dataset: ReferDataset, cfg: TrainConfig, device: torch.device,
             desc: str = "eval", evaluators: Sequence[Evaluator] = (),
             protocols: Sequence[str | EvalProtocol] = ("ours",), memo: PredictionMemo | None = None) -> Evaluation:
    """mIoU, oIoU, P@X and the same per expression kind under the first of ``protocols`` (``ours``: at each
    image's original resolution), and the overall metrics under the others, from one forward pass.
    Under torchrun each process scores every N-th sample and the metric sums are reduced.

    ``evaluators`` see every batch with the model's output (extra scoring without a second forward
    pass); they are reset here and computed by the caller. ``memo`` (:class:`PredictionMemo`): every
    prediction made is kept there, and a pass with one protocol and no evaluators takes the predictions
    it already holds instead of running the model for them."""
    if not dataset.keep_original_mask:
        raise ValueError("evaluate needs a dataset built with keep_original_mask=True")
    chosen = [p if isinstance(p, EvalProtocol) else get_protocol(p) for p in protocols]
    if len({p.name for p in chosen}) != len(chosen):
        raise ValueError(f"evaluate: protocol names must differ ({', '.join(p.name for p in chosen)})")
    model.set_stage(None)
    meters = {p.name: p.meter() for p in chosen}
    shard = Subset(dataset, dist.shard_indices(len(dataset), dist.rank(), dist.world_size())) if dist.active() else dataset
    loader = DataLoader(shard, batch_size=cfg.eval_batch_size, shuffle=False, collate_fn=refer_collate,
                        **loader_options(cfg, device, persistent=False))
    disable = (None if cfg.progress is None else not cfg.progress) if dist.is_main() else True
    for ev in evaluators:
        ev.reset()
    sent_ids: list[int] = []
    image_ids: list[int] = []
    lookup = memo is not None and len(chosen) == 1 and not evaluators
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=disable):
        kinds = [m["kind"] for m in batch["meta"]]
        sent_ids += [m["sent_id"] for m in batch["meta"]]
        image_ids += [m["image_id"] for m in batch["meta"]]
        # the memo holds the first protocol's masks only: a later lookup (the swap control) scores one protocol,
        # the test pass's first
        keys = PredictionMemo.keys(batch, chosen[0]) if memo is not None else []
        held = [memo.get(k) for k in keys] if lookup else [None] * len(kinds)
        run = [i for i, h in enumerate(held) if h is None]
        if run:
            part = batch if len(run) == len(held) else _sub_batch(batch, run)
            images, index = distinct_images(part)
            with autocast_for(device, cfg):
                out = _forward_distinct(model, images.to(device), part["tokens"].to(device), index.to(device))
            for ev in evaluators:
                ev.process(part, out)
        for j, p in enumerate(chosen):
            preds: list[torch.Tensor | None] = [None if h is None else h.to(device) for h in held]
            if run:
                made = binarise(model, out, part, p)
                for i, m in zip(run, made):
                    preds[i] = m
                    if memo is not None and j == 0:
                        memo.put(keys[i], m)
            meters[p.name].update(preds, protocol_targets(batch, p, device), kinds=kinds)
    reduce = dist.all_reduce_sum if dist.active() else None
    first = meters[chosen[0].name]
    kinds = all_kinds(first)
    others = {p.name: meters[p.name].compute(reduce) for p in chosen[1:]}
    rows = [{"sent_id": int(i), "image_id": int(m), "kind": k, "iou": float(v)}
            for i, m, k, v in zip(sent_ids, image_ids, first.kinds_in_order(), first.per_sample_iou().tolist())]
    if dist.active():
        import torch.distributed as tdist

        parts: list[list[dict]] = [[] for _ in range(dist.world_size())]
        tdist.all_gather_object(parts, rows)
        rows = [r for part in parts for r in part]
    rows.sort(key=lambda r: r["sent_id"])
    others_by_kind = {p.name: meters[p.name].compute_by_kind(reduce, kinds) for p in chosen[1:]}
    return Evaluation(first.compute(reduce), first.compute_by_kind(reduce, kinds), others, rows, others_by_kind)


def evaluate_text_controls(model: RISCLIP, dataset: ReferDataset, cfg: TrainConfig, device: torch.device,
                           seed: int = 0, controls: Sequence[str] = CONTROLS,
                           protocol: str | EvalProtocol = "ours", memo: PredictionMemo | None = None) -> dict[str, dict]:
    """Score ``dataset``'s images against their true masks with control sentences
    (:mod:`risclip.data.controls`): ``{control: {"metrics", "by_kind", "fraction", "per_sample"}}``, where
    ``fraction`` is the share of the dataset's sentences the control could score (``swap`` leaves out
    sentences whose image holds no other referent). ``seed`` draws the swaps; it is the same for every
    variant (0 by default), so all variants read the same swapped sentences. ``memo``: the test pass's
    predictions (:class:`PredictionMemo`); a swapped sentence is another referent's test sentence, so its
    mask is taken from there when the test pass scored it."""
    out: dict[str, dict] = {}
    for name in controls:
        ds = TextControl(dataset, name, seed=seed)
        if len(ds) == 0:
            out[name] = {"metrics": {}, "by_kind": {}, "fraction": 0.0, "per_sample": []}
            continue
        ev = evaluate(model, ds, cfg, device, desc=f"test ({name} text)", protocols=(protocol,), memo=memo)
        out[name] = {"metrics": ev.metrics, "by_kind": ev.by_kind, "fraction": ds.fraction, "per_sample": ev.per_sample}
    return out


def all_kinds(meter: RISMetrics) -> list[str]:
    """Expression kinds seen by any process (every process needs the same list to reduce per kind)."""
    kinds = meter.kinds()
    if not dist.active():
        return kinds
    import torch.distributed as tdist

    gathered: list[list[str]] = [[] for _ in range(dist.world_size())]
    tdist.all_gather_object(gathered, kinds)
    return sorted({k for ks in gathered for k in ks})
