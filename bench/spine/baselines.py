"""Trivial baselines that read no text, scored with the same metrics as the ladder.

They set the floor rung 0 has to clear:

* ``whole-image``: every pixel is the referent.
* ``centre-blob``: a centred ellipse whose area share is the mean referent area share on the train
  split (fitted on train only), with the image's aspect ratio.
* ``largest-object``: the largest annotated instance of the image (uses ground-truth instance masks,
  so it is an oracle proposal picked without the text).
* ``random-object``: a uniformly random annotated instance of the image (seeded; also an oracle
  proposal). Its expected mIoU is roughly one over the number of objects per image.
* ``objectness``: the union of every annotated instance mask of the image: what a model that segments
  all objects and reads no text would score (uses ground-truth masks).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import torch
from tqdm import tqdm

from risclip.config import DataConfig
from risclip.data.refer import ReferDataset, annotation_mask
from risclip.metrics import RISMetrics

BASELINES: tuple[str, ...] = ("whole-image", "centre-blob", "largest-object", "random-object", "objectness")
PROPOSAL_BASELINES: tuple[str, ...] = ("largest-object", "random-object")  # they choose among instance masks
ORACLE_BASELINES: tuple[str, ...] = (*PROPOSAL_BASELINES, "objectness")  # they read ground-truth instance masks


class InstanceMasks:
    """Every annotated instance mask of an image, decoded once and cached: the oracle proposals that
    ``largest-object``, ``random-object`` and :mod:`bench.spine.proposals` choose among."""

    def __init__(self, annotations: Iterable[dict]) -> None:
        self._anns: dict[int, list[dict]] = defaultdict(list)
        for ann in annotations:
            self._anns[ann["image_id"]].append(ann)
        self._masks: dict[int, np.ndarray] = {}

    def get(self, image_id: int, h: int, w: int) -> np.ndarray:
        """(K, h, w) boolean masks of the image's K instances (K may be 0)."""
        if image_id not in self._masks:
            masks = [annotation_mask(a["segmentation"], h, w) for a in self._anns[image_id]]
            self._masks[image_id] = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
        return self._masks[image_id]


def _dataset(data: DataConfig, split: str, limit: int | None) -> ReferDataset:
    return ReferDataset(data.data_root, data.dataset, data.split_by, split, data.images_dir(), image_size=32,
                        context_length=8, keep_original_mask=False, max_samples=limit)


def mean_referent_area(data: DataConfig, limit: int | None = 2000) -> float:
    """Mean share of the image covered by the referent, over (up to ``limit``) train sentences."""
    ds = _dataset(data, data.train_split, limit)
    shares = []
    for ref, _ in ds.samples:
        img = ds.images[ref["image_id"]]
        shares.append(float(ds.ref_mask(ref).mean()) if img["height"] * img["width"] else 0.0)
    return float(np.mean(shares)) if shares else 0.25


def centre_blob(h: int, w: int, area_share: float) -> np.ndarray:
    """A centred ellipse with semi-axes proportional to (h, w) covering ``area_share`` of the image."""
    k = np.sqrt(max(area_share, 1e-6) / np.pi)  # pi * (k h)(k w) = share * h * w
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy + 0.5 - h / 2) / (k * h)) ** 2 + ((xx + 0.5 - w / 2) / (k * w)) ** 2 <= 1.0


def evaluate_baselines(data: DataConfig, split: str | None = None, seed: int = 0, limit: int | None = None,
                       progress: bool | None = None) -> dict[str, tuple[dict[str, float], dict[str, dict[str, float]]]]:
    """Score every baseline on ``split`` (default: the test split): name -> (metrics, metrics by kind)."""
    ds = _dataset(data, split or data.test_split, limit)
    instances = InstanceMasks(ds.anns.values())
    share = mean_referent_area(data)
    rng = np.random.default_rng(seed)
    meters = {name: RISMetrics() for name in BASELINES}
    for ref, sent in tqdm(ds.samples, desc="baselines", unit="sent", leave=False,
                          disable=None if progress is None else not progress):
        img = ds.images[ref["image_id"]]
        h, w = int(img["height"]), int(img["width"])
        target = torch.from_numpy(ds.ref_mask(ref))
        objects = instances.get(ref["image_id"], h, w)
        preds = {
            "whole-image": np.ones((h, w), dtype=bool),
            "centre-blob": centre_blob(h, w, share),
            "largest-object": max(objects, key=lambda m: m.sum()) if len(objects) else np.zeros((h, w), bool),
            "random-object": objects[int(rng.integers(len(objects)))] if len(objects) else np.zeros((h, w), bool),
            "objectness": objects.any(0) if len(objects) else np.zeros((h, w), bool),
        }
        kind = [sent.get("kind")]
        for name, pred in preds.items():
            meters[name].update([torch.from_numpy(np.asarray(pred, dtype=bool))], [target], kinds=kind)
    return {name: (m.compute(), m.compute_by_kind()) for name, m in meters.items()}
