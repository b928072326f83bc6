"""SynthRef: a procedurally generated referring-segmentation benchmark in the RefCOCO layout.

``python -m risclip.data.synthref --out DIR --images N --seed S [--size PX]`` writes::

    DIR/images/synthref_000000.png ...
    DIR/synthref/instances.json      COCO instances with polygon segmentations (+ each object's attributes)
    DIR/synthref/refs(synth).p       refs, split_by "synth", splits train / val / test (by image)
    DIR/synthref/captions.json       COCO captions (several per image) for pre-training a proxy CLIP

so that ``ReferDataset(DIR, "synthref", "synth", split, DIR / "images")`` reads it like RefCOCO.

Scenes hold several non-overlapping objects (shape, colour, size, position; some striped) on a noisy
gradient. Each scene draws its objects from a few shapes and colours, so look-alike distractors are
common. Every expression is a small program over the scene (:class:`Expression`) that the generator
*resolves* before keeping it: it is kept only when it picks out exactly its referent. Three kinds,
recorded on each sentence as ``kind``:

* ``attribute``  "the large red circle" (a description only the referent matches);
* ``position``   "the leftmost square" (the description matches several objects; the referent is the
  extreme one along an axis by a clear margin);
* ``relation``   "the triangle above the green circle" (the description matches several objects, the
  anchor exactly one, and exactly one candidate stands in the relation to the anchor, the others
  clearly not).

Image ``i`` depends only on ``(seed, i)``, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

DATASET = "synthref"
SPLIT_BY = "synth"
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 215),
    "yellow": (235, 205, 40),
    "purple": (150, 60, 190),
}
SIZES: tuple[str, ...] = ("small", "large")
KINDS: tuple[str, ...] = ("attribute", "position", "relation")
POSITIONS = {  # word -> (axis, sign): the extreme along axis 0 (x) or 1 (y), smallest if sign < 0
    "leftmost": (0, -1),
    "rightmost": (0, 1),
    "topmost": (1, -1),
    "bottommost": (1, 1),
}
RELATIONS = {  # word -> (axis, sign): object's coordinate minus anchor's has this sign
    "to the left of": (0, -1),
    "to the right of": (0, 1),
    "above": (1, -1),
    "below": (1, 1),
}


@dataclass(frozen=True)
class SynthRefConfig:
    """Generator settings. Sizes scale with the image size (defaults tuned at 128 px)."""

    images: int = 2000
    seed: int = 0
    size: int = 128
    min_objects: int = 3
    max_objects: int = 6
    max_refs_per_image: int = 3
    max_sentences_per_ref: int = 3
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    striped_fraction: float = 0.3
    noise_std: float = 5.0
    margin_fraction: float = 0.06  # spatial words need this share of the image size as a clear margin


@dataclass
class SceneObject:
    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    radius: float
    striped: bool
    polygon: list[float] = field(default_factory=list)
    mask: np.ndarray | None = None

    def centre(self, axis: int) -> float:
        return self.cx if axis == 0 else self.cy


@dataclass(frozen=True)
class Description:
    """A noun phrase: shape always, colour and size optional."""

    shape: str
    colour: str | None = None
    size: str | None = None

    def matches(self, o: SceneObject) -> bool:
        return (o.shape == self.shape and (self.colour is None or o.colour == self.colour)
                and (self.size is None or o.size == self.size))

    def text(self) -> str:
        return " ".join(w for w in (self.size, self.colour, self.shape) if w)

    def select(self, objs: Sequence[SceneObject]) -> list[int]:
        return [i for i, o in enumerate(objs) if self.matches(o)]


@dataclass(frozen=True)
class Expression:
    kind: str
    target: Description
    position: str | None = None
    relation: str | None = None
    anchor: Description | None = None

    def text(self) -> str:
        if self.kind == "attribute":
            return f"the {self.target.text()}"
        if self.kind == "position":
            return f"the {self.position} {self.target.text()}"
        return f"the {self.target.text()} {self.relation} the {self.anchor.text()}"

    def resolve(self, objs: Sequence[SceneObject], margin: float) -> list[int]:
        """Indices of the objects this expression picks out (unambiguous expressions give one)."""
        cands = self.target.select(objs)
        if self.kind == "attribute":
            return cands
        if self.kind == "position":
            axis, sign = POSITIONS[self.position]
            if len(cands) < 2:
                return []  # a superlative needs at least two candidates to mean anything
            ranked = sorted(cands, key=lambda i: sign * objs[i].centre(axis), reverse=True)
            first, second = ranked[0], ranked[1]
            gap = sign * (objs[first].centre(axis) - objs[second].centre(axis))
            return [first] if gap >= margin else ranked  # no clear extreme: ambiguous
        anchors = self.anchor.select(objs)
        if len(anchors) != 1:
            return anchors * 2  # ambiguous anchor: report ambiguity
        a = objs[anchors[0]]
        axis, sign = RELATIONS[self.relation]
        chosen, unclear = [], []
        for i in cands:
            if i == anchors[0]:
                continue
            d = sign * (objs[i].centre(axis) - a.centre(axis))
            if d >= margin:
                chosen.append(i)
            elif d > 0:  # on the right side but too close to call
                unclear.append(i)
        return chosen + unclear


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[float]:
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    elif shape == "square":
        s = r * 0.85
        pts = np.array([[cx - s, cy - s], [cx + s, cy - s], [cx + s, cy + s], [cx - s, cy + s]])
    elif shape == "triangle":
        pts = np.array([[cx, cy - r], [cx + r * 0.95, cy + r * 0.75], [cx - r * 0.95, cy + r * 0.75]])
    elif shape == "diamond":
        pts = np.array([[cx, cy - r], [cx + r, cy], [cx, cy + r], [cx - r, cy]])
    else:
        raise ValueError(f"unknown shape {shape}")
    return [round(float(v), 2) for v in pts.reshape(-1)]


def polygon_mask(polygon: list[float], h: int, w: int) -> np.ndarray:
    """Rasterise one polygon exactly as the loader will (pycocotools), so images and annotations agree."""
    return mask_utils.decode(mask_utils.frPyObjects([polygon], h, w)).any(axis=2).astype(bool)


def make_scene(rng: np.random.Generator, cfg: SynthRefConfig) -> list[SceneObject]:
    """Objects of a scene, drawn from a small per-scene palette so distractors share attributes."""
    s = cfg.size
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    shapes = list(rng.choice(SHAPES, size=int(rng.integers(1, 3)), replace=False))
    colours = list(rng.choice(list(COLOURS), size=int(rng.integers(2, 4)), replace=False))
    objs: list[SceneObject] = []
    boxes: list[tuple[float, float, float, float]] = []
    gap = 0.03 * s
    for _ in range(n * 30):
        if len(objs) == n:
            break
        size = SIZES[int(rng.integers(0, 2))]
        lo, hi = (0.07, 0.10) if size == "small" else (0.14, 0.19)
        r = float(rng.uniform(lo, hi) * s)
        cx = float(rng.uniform(r + 2, s - r - 2))
        cy = float(rng.uniform(r + 2, s - r - 2))
        box = (cx - r - gap, cy - r - gap, cx + r + gap, cy + r + gap)
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes):
            continue
        boxes.append(box)
        objs.append(SceneObject(
            shape=str(shapes[int(rng.integers(0, len(shapes)))]),
            colour=str(colours[int(rng.integers(0, len(colours)))]),
            size=size, cx=round(cx, 2), cy=round(cy, 2), radius=round(r, 2),
            striped=bool(rng.random() < cfg.striped_fraction),
        ))
    for o in objs:
        o.polygon = _polygon(o.shape, o.cx, o.cy, o.radius)
        o.mask = polygon_mask(o.polygon, s, s)
    return objs


def render(objs: Sequence[SceneObject], rng: np.random.Generator, cfg: SynthRefConfig) -> np.ndarray:
    s = cfg.size
    c0 = rng.uniform(60, 200, size=3)
    grey = rng.uniform(70, 190)
    c0 = 0.7 * grey + 0.3 * c0  # low-saturation backgrounds keep object colours nameable
    c1 = np.clip(c0 + rng.uniform(-40, 40, size=3), 0, 255)
    t = np.linspace(0, 1, s)[:, None, None]
    horizontal = rng.random() < 0.5
    grad = c0 + (c1 - c0) * (t.transpose(1, 0, 2) if horizontal else t)
    img = np.broadcast_to(grad, (s, s, 3)).astype(np.float32).copy()
    stripes = ((np.arange(s)[:, None] + np.arange(s)[None, :]) // max(2, s // 40)) % 2 == 0
    for o in objs:
        colour = np.array(COLOURS[o.colour], dtype=np.float32) + rng.uniform(-12, 12, size=3)
        img[o.mask] = colour
        if o.striped:
            img[o.mask & stripes] = colour * 0.72
    # Sensor-like grain at half resolution (2x2 pixels): as visible as per-pixel noise, and PNG
    # still compresses it, which keeps 10,000 images well under a minute.
    half = (s + 1) // 2
    grain = rng.standard_normal((half, half, 3), dtype=np.float32) * cfg.noise_std
    img += np.repeat(np.repeat(grain, 2, axis=0), 2, axis=1)[:s, :s]
    return np.clip(img, 0, 255).round().astype(np.uint8)


def candidate_expressions(objs: Sequence[SceneObject], ref: int, margin: float) -> dict[str, list[Expression]]:
    """Every expression of each kind that resolves to exactly ``ref`` (checked by :meth:`Expression.resolve`)."""
    o = objs[ref]
    descs = [Description(o.shape, c, z) for c, z in itertools.product((None, o.colour), (None, o.size))]
    out: dict[str, list[Expression]] = {k: [] for k in KINDS}
    for d in descs:
        e = Expression("attribute", d)
        if e.resolve(objs, margin) == [ref]:
            out["attribute"].append(e)
    ambiguous = [d for d in descs if len(d.select(objs)) >= 2]
    for d in ambiguous:
        for word in POSITIONS:
            e = Expression("position", d, position=word)
            if e.resolve(objs, margin) == [ref]:
                out["position"].append(e)
    anchors = []
    for j, a in enumerate(objs):
        if j == ref:
            continue
        for c, z in ((a.colour, None), (None, None), (a.colour, a.size)):
            ad = Description(a.shape, c, z)
            if ad.select(objs) == [j]:
                anchors.append(ad)
                break
    for d in ambiguous:
        for ad in anchors:
            for word in RELATIONS:
                e = Expression("relation", d, relation=word, anchor=ad)
                if e.resolve(objs, margin) == [ref]:
                    out["relation"].append(e)
    return out


def caption_phrase(o: SceneObject, rng: np.random.Generator) -> str:
    words = ([o.size] if rng.random() < 0.5 else []) + [o.colour, o.shape]
    return "a " + " ".join(words)


def captions_for(objs: Sequence[SceneObject], rng: np.random.Generator) -> list[str]:
    """Two captions: every object in random order, then a random subset (CLIP pre-training text)."""
    def join(phrases: list[str]) -> str:
        return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]

    order = rng.permutation(len(objs))
    full = join([caption_phrase(objs[i], rng) for i in order])
    k = int(rng.integers(1, min(3, len(objs)) + 1))
    subset = rng.choice(len(objs), size=k, replace=False)
    return [full, join([caption_phrase(objs[i], rng) for i in subset])]


@dataclass
class GeneratedImage:
    pixels: np.ndarray
    objects: list[SceneObject]
    refs: list[tuple[int, list[Expression]]]  # (object index, sentences)
    captions: list[str]
    split: str


def generate_image(index: int, cfg: SynthRefConfig) -> GeneratedImage:
    rng = np.random.default_rng([cfg.seed, index])
    objs = make_scene(rng, cfg)
    pixels = render(objs, rng, cfg)
    margin = cfg.margin_fraction * cfg.size
    refs: list[tuple[int, list[Expression]]] = []
    for ref in rng.permutation(len(objs))[: cfg.max_refs_per_image]:
        pool = candidate_expressions(objs, int(ref), margin)
        kinds = [k for k in KINDS if pool[k]]
        if not kinds:
            continue
        order = [kinds[k] for k in rng.permutation(len(kinds))]  # the kinds in a random order
        n_sent = int(rng.integers(1, cfg.max_sentences_per_ref + 1))
        sentences: list[Expression] = []
        for j in range(n_sent):
            options = [e for e in pool[order[j % len(order)]] if e not in sentences]
            if options:
                sentences.append(options[int(rng.integers(0, len(options)))])
        refs.append((int(ref), sentences))
    u = rng.random()
    f_train, f_val, _ = cfg.split_fractions
    split = "train" if u < f_train else ("val" if u < f_train + f_val else "test")
    return GeneratedImage(pixels, objs, refs, captions_for(objs, rng), split)


def generate(out: str | Path, cfg: SynthRefConfig, progress: bool | None = None) -> dict:
    """Write SynthRef to ``out``; returns counts (images, refs, sentences per split and kind)."""
    out = Path(out)
    img_dir, ds_dir = out / "images", out / DATASET
    img_dir.mkdir(parents=True, exist_ok=True)
    ds_dir.mkdir(parents=True, exist_ok=True)
    images, annotations, refs, captions = [], [], [], []
    ann_id = ref_id = sent_id = cap_id = 0
    counts: dict[str, int] = {}
    bar = tqdm(range(cfg.images), desc="SynthRef", unit="img", disable=(None if progress is None else not progress),
               leave=False)
    for i in bar:
        g = generate_image(i, cfg)
        image_id = i + 1
        file_name = f"synthref_{i:06d}.png"
        Image.fromarray(g.pixels).save(img_dir / file_name, compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "height": cfg.size, "width": cfg.size})
        ann_ids = []
        for o in g.objects:
            ann_id += 1
            ann_ids.append(ann_id)
            rle = mask_utils.encode(np.asfortranarray(o.mask.astype(np.uint8)))
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": SHAPES.index(o.shape) + 1,
                "segmentation": [o.polygon], "area": float(mask_utils.area(rle)),
                "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)], "iscrowd": 0,
                "attributes": {"shape": o.shape, "colour": o.colour, "size": o.size, "striped": o.striped,
                               "cx": o.cx, "cy": o.cy},
            })
        for obj_index, exprs in g.refs:
            ref_id += 1
            sentences = []
            for e in exprs:
                sent_id += 1
                text = e.text()
                sentences.append({"raw": text, "sent": text, "tokens": text.split(), "sent_id": sent_id,
                                  "kind": e.kind})
                counts[f"{g.split}/{e.kind}"] = counts.get(f"{g.split}/{e.kind}", 0) + 1
            refs.append({
                "ref_id": ref_id, "ann_id": ann_ids[obj_index], "image_id": image_id, "file_name": file_name,
                "split": g.split, "category_id": SHAPES.index(g.objects[obj_index].shape) + 1,
                "sent_ids": [s["sent_id"] for s in sentences], "sentences": sentences,
            })
        for c in g.captions:
            cap_id += 1
            captions.append({"id": cap_id, "image_id": image_id, "caption": c})
    categories = [{"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPES)]
    info = {"description": "SynthRef, a synthetic referring segmentation benchmark (risclip-bench)",
            "config": {**cfg.__dict__, "split_fractions": list(cfg.split_fractions)}}
    _write_json(ds_dir / "instances.json",
                {"info": info, "images": images, "annotations": annotations, "categories": categories})
    _write_json(ds_dir / "captions.json", {"info": info, "images": images, "annotations": captions})
    with open(ds_dir / f"refs({SPLIT_BY}).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    return {"images": len(images), "objects": len(annotations), "refs": len(refs), "sentences": sent_id,
            "captions": len(captions), "by_split_kind": dict(sorted(counts.items()))}


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m risclip.data.synthref",
        description="Generate SynthRef, a synthetic referring-segmentation benchmark in the RefCOCO (refer) "
                    "layout: DIR/images/*.png, DIR/synthref/instances.json, DIR/synthref/refs(synth).p "
                    "and DIR/synthref/captions.json. Same arguments give byte-identical files.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; files in it are replaced)")
    parser.add_argument("--images", type=int, default=SynthRefConfig.images, help="number of images (default %(default)s)")
    parser.add_argument("--seed", type=int, default=SynthRefConfig.seed, help="random seed (default %(default)s)")
    parser.add_argument("--size", type=int, default=SynthRefConfig.size, help="image side in pixels (default %(default)s)")
    parser.add_argument("--min-objects", type=int, default=SynthRefConfig.min_objects)
    parser.add_argument("--max-objects", type=int, default=SynthRefConfig.max_objects)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error("--images must be at least 1")
    if args.size < 48:
        parser.error("--size must be at least 48 pixels (objects would not fit)")
    if not 2 <= args.min_objects <= args.max_objects <= 12:
        parser.error("need 2 <= --min-objects <= --max-objects <= 12")
    cfg = SynthRefConfig(images=args.images, seed=args.seed, size=args.size,
                         min_objects=args.min_objects, max_objects=args.max_objects)
    try:
        summary = generate(args.out, cfg, progress=False if args.no_progress else None)
    except OSError as e:
        print(f"error: cannot write to {args.out}: {e}", file=sys.stderr)
        return 1
    print(f"SynthRef written to {args.out}: {summary['images']} images, {summary['refs']} refs, "
          f"{summary['sentences']} sentences")
    for key, n in summary["by_split_kind"].items():
        print(f"  {key:<20} {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
