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
import dataclasses
import itertools
import json
import pickle
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from .alttext import alt_text
from .scenes import (  # noqa: F401
    COLOURS,
    PROFILES,
    SHAPES,
    SIZES,
    SceneObject,
    SynthRefConfig,
    make_scene,
    make_scene_refcoco,
    make_scene_refcoco_v2,
    polygon_mask,
    render,
)

DATASET = "synthref"
SPLIT_BY = "synth"
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
# the refcoco profile's other phrasings (styles 1 and 2) of the same programs
POSITION_PHRASES = {
    "leftmost": ("the {d} on the left", "the left {d}"),
    "rightmost": ("the {d} on the right", "the right {d}"),
    "topmost": ("the {d} at the top", "the top {d}"),
    "bottommost": ("the {d} at the bottom", "the bottom {d}"),
}
RELATION_PHRASES = {"to the left of": "left of", "to the right of": "right of", "above": "over", "below": "under"}


# refcoco profile: the share of each kind among the sentences it asks for (our choice: RefCOCOg, the
# ladder's benchmark, mixes appearance, location and relations to other objects; no published split of
# its expressions into these three kinds exists). Where a referent has no expression of the drawn kind,
# another of its kinds is used, so ``stats`` reports the shares actually written.
REFCOCO_KIND_WEIGHTS: dict[str, float] = {"attribute": 0.35, "position": 0.30, "relation": 0.35}


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
    style: int = 0  # phrasing: 0 as in the dense profile, 1-2 the refcoco profile's other forms

    def text(self) -> str:
        if self.kind == "attribute":
            return f"the {self.target.text()}"
        if self.kind == "position":
            if self.style == 0:
                return f"the {self.position} {self.target.text()}"
            return POSITION_PHRASES[self.position][self.style - 1].format(d=self.target.text())
        relation = self.relation if self.style == 0 else RELATION_PHRASES[self.relation]
        return f"the {self.target.text()} {relation} the {self.anchor.text()}"

    def resolve(self, objs: Sequence[SceneObject], margin: float, sentences: int = 1) -> list[int]:
        """Indices of the objects this expression picks out (unambiguous expressions give one), under the
        rules of ``sentences`` (``SynthRefConfig.sentences``; they differ for relations only, see
        :func:`relation_holds`)."""
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
        chosen, unclear = [], []
        for i in cands:
            if i == anchors[0]:
                continue
            verdict = relation_holds(objs[i], a, self.relation, margin, sentences)
            if verdict is True:
                chosen.append(i)
            elif verdict is None:  # too close to call
                unclear.append(i)
        if sentences == 1:
            # version 1's answer, kept for its byte-identical files: a referent that is itself too close to
            # call, with no other candidate, passes as [referent] (version 2 rejects it below)
            return chosen + unclear
        return chosen + unclear * 2  # any object too close to call makes the expression ambiguous


def relation_holds(o: SceneObject, anchor: SceneObject, relation: str, margin: float, sentences: int = 1) -> bool | None:
    """Whether ``o`` stands in ``relation`` to ``anchor``: True, False, or None where it is too close to call
    (an expression with such a distractor is not kept). Version 1 (CLEVR's one-axis rule): the offset ``d``
    along the named direction is at least ``margin``, whatever the offset across it; 0 < d < margin is
    unclear. Version 2 (how people speak: "below" is below): the named direction dominates, d >= margin and
    d >= |c| for the offset c across it; an object clearly off the named direction (d <= 0, or |c| > 2 d, more
    than about 63 degrees off it) clearly does not hold; anything between is unclear."""
    axis, sign = RELATIONS[relation]
    d = sign * (o.centre(axis) - anchor.centre(axis))
    if sentences == 1:
        return True if d >= margin else (None if d > 0 else False)
    c = abs(o.centre(1 - axis) - anchor.centre(1 - axis))
    if d >= margin and d >= c:
        return True
    if d <= 0 or c > 2 * d:
        return False
    return None


def _size_contrasts(objs: Sequence[SceneObject], o: SceneObject) -> bool:
    """The image holds an object of ``o``'s shape and the other size: a size word on ``o`` says something."""
    return any(p.shape == o.shape and p.size != o.size for p in objs)


def candidate_expressions(objs: Sequence[SceneObject], ref: int, margin: float,
                          sentences: int = 1) -> dict[str, list[Expression]]:
    """Every expression of each kind that resolves to exactly ``ref`` (checked by :meth:`Expression.resolve`).
    Under sentences version 2 a description names a size only where the image holds the other size of its
    shape (a size word contrasts, as people use it)."""
    o = objs[ref]
    sizes = (None, o.size) if sentences == 1 or _size_contrasts(objs, o) else (None,)
    descs = [Description(o.shape, c, z) for c, z in itertools.product((None, o.colour), sizes)]
    out: dict[str, list[Expression]] = {k: [] for k in KINDS}
    for d in descs:
        e = Expression("attribute", d)
        if e.resolve(objs, margin, sentences) == [ref]:
            out["attribute"].append(e)
    ambiguous = [d for d in descs if len(d.select(objs)) >= 2]
    for d in ambiguous:
        for word in POSITIONS:
            e = Expression("position", d, position=word)
            if e.resolve(objs, margin, sentences) == [ref]:
                out["position"].append(e)
    anchors = []
    for j, a in enumerate(objs):
        if j == ref:
            continue
        forms = [(a.colour, None), (None, None)]
        if sentences == 1 or _size_contrasts(objs, a):
            forms.append((a.colour, a.size))
        for c, z in forms:
            ad = Description(a.shape, c, z)
            if ad.select(objs) == [j]:
                anchors.append(ad)
                break
    for d in ambiguous:
        for ad in anchors:
            for word in RELATIONS:
                e = Expression("relation", d, relation=word, anchor=ad)
                if e.resolve(objs, margin, sentences) == [ref]:
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
    if cfg.profile not in PROFILES:
        raise ValueError(f"unknown SynthRef profile '{cfg.profile}'; valid: {', '.join(PROFILES)}")
    rng = np.random.default_rng([cfg.seed, index])
    dense = cfg.profile == "dense"
    if dense:
        objs = make_scene(rng, cfg)
    else:
        objs = make_scene_refcoco(rng, cfg) if cfg.sentences == 1 else make_scene_refcoco_v2(rng, cfg)
    pixels = render(objs, rng, cfg)
    margin = cfg.margin_fraction * cfg.size
    refs = _dense_refs(objs, rng, cfg, margin) if dense else _refcoco_refs(objs, rng, cfg, margin)
    u = rng.random()  # the split is drawn before the captions (the dense profile's order of draws)
    f_train, f_val, _ = cfg.split_fractions
    split = "train" if u < f_train else ("val" if u < f_train + f_val else "test")
    if index >= cfg.images:  # cfg.extra_test_images: beyond the main draw every image is a test image
        split = "test"
    if dense:
        captions = captions_for(objs, rng)
    else:
        captions = [alt_text(objs, rng, cfg.size) for _ in range(2)]
    return GeneratedImage(pixels, objs, refs, captions, split)


def _dense_refs(objs: Sequence[SceneObject], rng: np.random.Generator, cfg: SynthRefConfig,
                margin: float) -> list[tuple[int, list[Expression]]]:
    """The dense profile's referents and sentences (each referent's kinds in a random order, cycled)."""
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
    return refs


def _refcoco_refs(objs: Sequence[SceneObject], rng: np.random.Generator, cfg: SynthRefConfig,
                  margin: float) -> list[tuple[int, list[Expression]]]:
    """The refcoco profile's referents (objects of the scene's most common shape first, as RefCOCO refers
    to objects among others of their category) and sentences, each of a kind drawn by
    :data:`REFCOCO_KIND_WEIGHTS` among the kinds the referent has, in one of its phrasings."""
    counts = {sh: sum(o.shape == sh for o in objs) for sh in SHAPES}
    order = sorted(rng.permutation(len(objs)).tolist(), key=lambda i: -counts[objs[i].shape])
    refs: list[tuple[int, list[Expression]]] = []
    for ref in order[: cfg.max_refs_per_image]:
        pool = candidate_expressions(objs, int(ref), margin, cfg.sentences)
        n_sent = int(rng.integers(1, cfg.max_sentences_per_ref + 1))
        chosen: list[Expression] = []  # programs already used for this referent (any phrasing)
        sentences: list[Expression] = []
        for _ in range(n_sent):
            kinds = [k for k in KINDS if any(e not in chosen for e in pool[k])]
            if not kinds:
                break
            w = np.array([REFCOCO_KIND_WEIGHTS[k] for k in kinds])
            kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
            options = [e for e in pool[kind] if e not in chosen]
            e = options[int(rng.integers(0, len(options)))]
            chosen.append(e)
            styles = {"attribute": 1, "position": 3, "relation": 2}[kind]
            sentences.append(dataclasses.replace(e, style=int(rng.integers(0, styles))))
        if sentences:
            refs.append((int(ref), sentences))
    return refs


def generate(out: str | Path, cfg: SynthRefConfig, progress: bool | None = None) -> dict:
    """Write SynthRef to ``out``; returns counts (images, refs, sentences per split and kind)."""
    out = Path(out)
    img_dir, ds_dir = out / "images", out / DATASET
    img_dir.mkdir(parents=True, exist_ok=True)
    ds_dir.mkdir(parents=True, exist_ok=True)
    images, annotations, refs, captions = [], [], [], []
    ann_id = ref_id = sent_id = cap_id = 0
    counts: dict[str, int] = {}
    bar = tqdm(range(cfg.images + cfg.extra_test_images), desc="SynthRef", unit="img", disable=(None if progress is None else not progress),
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
            "config": config_record(cfg)}
    _write_json(ds_dir / "instances.json",
                {"info": info, "images": images, "annotations": annotations, "categories": categories})
    _write_json(ds_dir / "captions.json", {"info": info, "images": images, "annotations": captions})
    with open(ds_dir / f"refs({SPLIT_BY}).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    return {"images": len(images), "objects": len(annotations), "refs": len(refs), "sentences": sent_id,
            "captions": len(captions), "by_split_kind": dict(sorted(counts.items()))}


def config_record(cfg: SynthRefConfig) -> dict:
    """The generator settings as instances.json records them (``info.config``). The dense profile
    writes exactly the fields it always wrote, so its files stay byte-identical."""
    rec = {**cfg.__dict__, "split_fractions": list(cfg.split_fractions)}
    if not cfg.extra_test_images:  # records written before the field existed stay equal
        rec.pop("extra_test_images")
    if cfg.sentences == 1:  # likewise
        rec.pop("sentences")
    if cfg.profile == "dense":
        rec.pop("profile")
    return rec


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["stats"]:
        return stats_main(argv[1:])
    if argv[:1] == ["captions"]:
        return captions_main(argv[1:])
    return generate_main(argv)


def generate_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m risclip.data.synthref",
        description="Generate SynthRef, a synthetic referring-segmentation benchmark in the RefCOCO (refer) "
                    "layout: DIR/images/*.png, DIR/synthref/instances.json, DIR/synthref/refs(synth).p "
                    "and DIR/synthref/captions.json. Same arguments give byte-identical files. Two more "
                    "commands: 'stats DIR' (how RefCOCO-like a split is, and the stage-1 oracle cap) and "
                    "'captions --out DIR' (the caption corpus a proxy CLIP is pre-trained on).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; files in it are replaced)")
    parser.add_argument("--profile", choices=PROFILES, default=SynthRefConfig.profile,
                        help="scene statistics: refcoco (few large objects, RefCOCO-like; default) or dense "
                             "(the first generator, byte-identical to it)")
    parser.add_argument("--images", type=int, default=SynthRefConfig.images, help="number of images (default %(default)s)")
    parser.add_argument("--extra-test-images", type=int, default=0,
                        help="more test images after the first --images (train and val unchanged; default 0)")
    parser.add_argument("--seed", type=int, default=SynthRefConfig.seed, help="random seed (default %(default)s)")
    parser.add_argument("--size", type=int, default=SynthRefConfig.size, help="image side in pixels (default %(default)s)")
    parser.add_argument("--min-objects", type=int, default=SynthRefConfig.min_objects, help="dense profile only")
    parser.add_argument("--max-objects", type=int, default=SynthRefConfig.max_objects, help="dense profile only")
    parser.add_argument("--sentences", type=int, choices=(1, 2), default=SynthRefConfig.sentences,
                        help="what the sentences may say: 2 (refcoco profile) keeps every sentence true to the picture "
                             "(docs/data.md); 1, the default, the first rules, for earlier presets")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.sentences == 2 and args.profile != "refcoco":
        parser.error("--sentences 2 exists for the refcoco profile only")
    if args.images < 1:
        parser.error("--images must be at least 1")
    if args.extra_test_images < 0:
        parser.error("--extra-test-images must be at least 0")
    if args.size < 48:
        parser.error("--size must be at least 48 pixels (objects would not fit)")
    if not 2 <= args.min_objects <= args.max_objects <= 12:
        parser.error("need 2 <= --min-objects <= --max-objects <= 12")
    cfg = SynthRefConfig(images=args.images, seed=args.seed, size=args.size, profile=args.profile,
                         min_objects=args.min_objects, max_objects=args.max_objects,
                         extra_test_images=args.extra_test_images, sentences=args.sentences)
    try:
        summary = generate(args.out, cfg, progress=False if args.no_progress else None)
    except OSError as e:
        print(f"error: cannot write to {args.out}: {e}", file=sys.stderr)
        return 1
    print(f"SynthRef ({cfg.profile} profile) written to {args.out}: {summary['images']} images, "
          f"{summary['refs']} refs, {summary['sentences']} sentences")
    for key, n in summary["by_split_kind"].items():
        print(f"  {key:<20} {n}")
    return 0


def stats_main(argv: Sequence[str]) -> int:
    from .refer import ReferError
    from .stats import GridSpec, dataset_stats, format_stats

    parser = argparse.ArgumentParser(
        prog="python -m risclip.data.synthref stats",
        description="How RefCOCO-like a split of a refer-layout dataset is (referent areas, objects and "
                    "same-category objects per image, expression kinds and lengths) and the stage-1 "
                    "oracle cap: the mIoU of a perfect patch map on the given grid, scored like a stage-1 rung.")
    parser.add_argument("dir", type=Path, help="the data folder (SynthRef's --out, or the real data's root)")
    parser.add_argument("--split", default="test", help="default %(default)s")
    parser.add_argument("--dataset", default=DATASET, help="default %(default)s (refcoco, refcoco+, refcocog for the real ones)")
    parser.add_argument("--split-by", default=SPLIT_BY, help="default %(default)s (unc, umd, google for the real ones)")
    parser.add_argument("--image-size", type=int, default=128, help="model input side in pixels (default %(default)s)")
    parser.add_argument("--patch", type=int, default=8, help="patch size in pixels (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    a = parser.parse_args(argv)
    if a.patch < 1 or a.image_size % a.patch:
        parser.error("--image-size must be a multiple of --patch")
    try:
        st = dataset_stats(a.dir, a.dataset, a.split_by, a.split, GridSpec(a.image_size, a.patch))
    except (ReferError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(st, indent=2) if a.json else format_stats(st))
    return 0


def captions_main(argv: Sequence[str]) -> int:
    from .alttext import CorpusConfig, generate_corpus

    parser = argparse.ArgumentParser(
        prog="python -m risclip.data.synthref captions",
        description="Write the caption corpus a proxy CLIP is pre-trained on: refcoco-profile scenes of "
                    "its own (no RIS image among them) with alt-text captions, under DIR/caption_corpus.")
    parser.add_argument("--out", required=True, type=Path, help="the SynthRef folder to put it in")
    parser.add_argument("--images", type=int, default=CorpusConfig.images, help="default %(default)s")
    parser.add_argument("--seed", type=int, default=CorpusConfig.seed, help="default %(default)s")
    parser.add_argument("--size", type=int, default=CorpusConfig.size, help="default %(default)s")
    parser.add_argument("--no-progress", action="store_true")
    a = parser.parse_args(argv)
    if a.images < 1 or a.size < 48:
        parser.error("need --images >= 1 and --size >= 48")
    try:
        path = generate_corpus(a.out, CorpusConfig(a.images, a.seed, a.size), progress=False if a.no_progress else None)
    except OSError as e:
        print(f"error: cannot write to {a.out}: {e}", file=sys.stderr)
        return 1
    print(f"caption corpus written: {path} ({a.images} images, 2 captions each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
