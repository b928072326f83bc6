"""How RefCOCO-like a refer-layout dataset is, and how much its patch grid caps stage 1.

``python -m risclip.data.synthref stats DIR [--split test] [--image-size 128 --patch 8]`` prints, for
one split of SynthRef (or of any refer-layout dataset: ``--dataset refcocog --split-by umd`` reads the
real one, so the two can be set side by side):

* referent area as a share of the image (median, 10th and 90th percentile, share under 3%);
* objects per image, and objects sharing the referent's category (its shape in SynthRef), referent included;
* the share of each expression kind (SynthRef's ``kind``) and the words per expression;
* the **stage-1 oracle cap**: the mIoU (and oIoU) of a perfect patch map, scored as a stage-1 rung is
  scored: the mask resized to the model input, pooled to the patch grid (the engine's ``area`` or
  ``nearest`` target), upsampled bilinearly to the original size and cut at 0.5. No stage-1 rung can
  beat it on average; the decoder is what lifts a model past it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import truth
from .refer import ReferError, annotation_mask, load_instances, load_refs
from .transforms import ResizeNormalize


@dataclass(frozen=True)
class GridSpec:
    image_size: int = 128
    patch: int = 8

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


def oracle_masks(mask: np.ndarray, spec: GridSpec) -> dict[str, torch.Tensor]:
    """The stage-1 oracle's boolean masks at the original size, for the area and the nearest target."""
    h, w = mask.shape
    m = ResizeNormalize(spec.image_size).mask(mask)[None, None]
    targets = {"area": F.adaptive_avg_pool2d(m, spec.grid),
               "nearest": F.interpolate(m, size=(spec.grid, spec.grid), mode="nearest")}
    return {k: F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0] > 0.5
            for k, t in targets.items()}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _size_words_agree(text: str, ann: dict, objects: list[dict]) -> bool | None:
    """Whether the size word a sentence puts on its referent is true of the areas: the rule of
    :mod:`risclip.data.truth` (a "large" referent clearly larger than some object of its category and none
    notably larger; "small" the reverse), against every other object of its category in the image. None for a
    sentence with no size word on its referent (or none :mod:`risclip.data.truth` can parse)."""
    p = truth.parse(text)
    if p is None or p.target.size is None:
        return None
    others = [float(o["area"]) for o in objects if o["id"] != ann["id"] and o["category_id"] == ann["category_id"]]
    return truth.size_word_holds(p.target.size, float(ann["area"]), others)


def dataset_stats(data_root: str | Path, dataset: str = "synthref", split_by: str = "synth", split: str = "test",
                  spec: GridSpec = GridSpec()) -> dict:
    """Every statistic of the module docstring for one split, as a dict (percentages in 0-100)."""
    ds = Path(data_root) / dataset
    inst = load_instances(ds / "instances.json")
    refs = [r for r in load_refs(ds / f"refs({split_by}).p") if r.get("split") == split]
    if not refs:
        raise ReferError(f"{ds}: no refs in split '{split}'")
    images = {i["id"]: i for i in inst["images"]}
    anns = {a["id"]: a for a in inst["annotations"]}
    per_image: dict[int, list[dict]] = {}
    for a in inst["annotations"]:
        per_image.setdefault(a["image_id"], []).append(a)
    areas, same, kinds, words = [], [], Counter(), []
    inter = {"area": 0.0, "nearest": 0.0}
    union = {"area": 0.0, "nearest": 0.0}
    ious: dict[str, list[float]] = {"area": [], "nearest": []}
    split_images = {r["image_id"] for r in refs}
    size_agree: list[bool] = []
    for r in refs:
        img, ann = images[r["image_id"]], anns[r["ann_id"]]
        for sent in r["sentences"]:
            agree = _size_words_agree(str(sent.get("sent") or sent.get("raw") or ""), ann, per_image[r["image_id"]])
            if agree is not None:
                size_agree.append(agree)
        mask = annotation_mask(ann["segmentation"], img["height"], img["width"])
        areas.append(100.0 * mask.sum() / mask.size)
        same.append(sum(a["category_id"] == ann["category_id"] for a in per_image[r["image_id"]]))
        n = len(r["sentences"])
        for s in r["sentences"]:
            kinds[s.get("kind") or "unlabelled"] += 1
            words.append(len(str(s.get("sent") or s.get("raw") or "").split()))
        gt = torch.from_numpy(mask)
        for k, pred in oracle_masks(mask, spec).items():
            i = float((pred & gt).sum())
            u = float((pred | gt).sum())
            ious[k].extend([100.0 * i / u if u else 100.0] * n)  # one score per expression, as mIoU counts
            inter[k] += i * n
            union[k] += u * n
    objects = [len(per_image.get(i, [])) for i in split_images]
    total = sum(kinds.values())
    return {
        "split": split, "images": len(split_images), "refs": len(refs), "expressions": total,
        "referent_area_pct": {"median": _pct(areas, 50), "p10": _pct(areas, 10), "p90": _pct(areas, 90),
                              "under_3pct_share": 100.0 * float(np.mean(np.array(areas) < 3.0))},
        "objects_per_image": {"mean": float(np.mean(objects)), "histogram": dict(sorted(Counter(objects).items()))},
        "same_category_per_ref": {"mean": float(np.mean(same)), "share_2_to_4": 100.0 * float(np.mean(
            [(2 <= c <= 4) for c in same])), "histogram": dict(sorted(Counter(same).items()))},
        "kinds_pct": {k: 100.0 * v / total for k, v in sorted(kinds.items())},
        "words_per_expression": float(np.mean(words)),
        # expressions that put a size word on their referent, and the share whose word is true of the areas
        "size_words_vs_area": {"sized_expressions": len(size_agree),
                               "agree_pct": 100.0 * float(np.mean(size_agree)) if size_agree else float("nan")},
        "oracle": {"grid": f"{spec.grid}x{spec.grid} ({spec.image_size} px, {spec.patch} px patches)",
                   **{f"{k}_mIoU": float(np.mean(v)) for k, v in ious.items()},
                   **{f"{k}_oIoU": 100.0 * inter[k] / max(union[k], 1.0) for k in ious}},
    }


def format_stats(st: dict) -> str:
    a, o, s, orc = st["referent_area_pct"], st["objects_per_image"], st["same_category_per_ref"], st["oracle"]
    kinds = ", ".join(f"{k} {v:.0f}%" for k, v in st["kinds_pct"].items())
    return "\n".join([
        f"split {st['split']}: {st['images']} images, {st['refs']} referents, {st['expressions']} expressions",
        f"  referent area, % of image   median {a['median']:.1f}  p10 {a['p10']:.1f}  p90 {a['p90']:.1f}  "
        f"under 3%: {a['under_3pct_share']:.1f}% of referents",
        f"  objects per image           mean {o['mean']:.2f}  {json.dumps(o['histogram'])}",
        f"  same category as referent   mean {s['mean']:.2f} (referent included)  2-4: {s['share_2_to_4']:.0f}% "
        f"of referents  {json.dumps(s['histogram'])}",
        f"  expression kinds            {kinds}",
        f"  words per expression        {st['words_per_expression']:.1f}",
        *([f"  size words against areas    {st['size_words_vs_area']['agree_pct']:.1f}% of the "
           f"{st['size_words_vs_area']['sized_expressions']} expressions with a size word on their referent are "
           f"true of the areas (risclip.data.truth's rule)"] if st.get("size_words_vs_area", {}).get("sized_expressions")
          else []),
        f"  stage-1 oracle cap, {orc['grid']}: mIoU {orc['area_mIoU']:.1f} (area target), "
        f"{orc['nearest_mIoU']:.1f} (nearest); oIoU {orc['area_oIoU']:.1f} / {orc['nearest_oIoU']:.1f}",
    ])
