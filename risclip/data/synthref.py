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
from .expressions import (  # noqa: F401
    DATASET,
    KINDS,
    POSITION_PHRASES,
    POSITIONS,
    REFCOCO_KIND_WEIGHTS,
    RELATION_PHRASES,
    RELATIONS,
    SPLIT_BY,
    Description,
    Expression,
    candidate_expressions,
    caption_phrase,
    captions_for,
    relation_holds,
)
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
