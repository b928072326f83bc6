"""Is every SynthRef sentence true of its picture? A check from the written files alone.

``python -m risclip.data.truth DIR [--split test] [--limit N] [--json]`` reads ``DIR/synthref/instances.json``
(masks and categories), ``DIR/synthref/refs(synth).p`` (sentences and referents) and the images, and checks
every sentence against what a person looking at the image would see. It shares no code with the generator
(:mod:`risclip.data.scenes`, :mod:`risclip.data.synthref`): it has its own grammar of the sentences, reads
colours from pixels, sizes from mask areas and positions from mask centroids, and resolves every description
itself. The rules, each a word's meaning stated once:

* **shape**: the shape word is the annotation's category;
* **colour**: most of the object's pixels have the hue of the colour word (:data:`HUES`: red 345-15 degrees,
  yellow 35-75, green 90-170, blue 195-255, purple 260-320);
* **size**: "large" holds for an object when some object of its shape in the image is clearly smaller
  (its area at least :data:`SIZE_CONTRAST` = 1.25 times the other's) and none is notably larger (more than
  :data:`SIZE_TOLERANCE` = 1.10 times its area); "small" the reverse. A size word on an object with no
  other object of its shape says nothing comparable, and is a violation;
* **position** ("the leftmost square", "the square on the left", "the left square", ...): among the
  objects the description fits (at least two), the referent's centroid is the extreme one along the axis,
  ahead of the next by at least the margin (:data:`MARGIN_FRACTION` = 6% of the image side);
* **relation** ("the circle left of the red square", ... above/over, below/under): the anchor description
  fits exactly one object, not the referent; the referent stands in the relation to it and no other
  object the target description fits does. An object stands in a relation when the named direction
  dominates: the offset of the centroids along it is at least the margin and at least the offset across it;
* **uniqueness**: an attribute sentence's description fits the referent alone.

Every expression is one of those forms; a sentence that parses as none is a violation too. ``check`` returns
the violations (sentence, rule, detail); zero is the target for every sentence SynthRef writes under
sentences version 2 (tests/test_truth.py). Version 1 data (the presets before it) fails it: its count is
in docs/findings.md.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

HUES: dict[str, tuple[float, float]] = {  # hue ranges in degrees (start, end), red wraps around 0
    "red": (345.0, 15.0), "yellow": (35.0, 75.0), "green": (90.0, 170.0), "blue": (195.0, 255.0),
    "purple": (260.0, 320.0),
}
SHAPE_WORDS: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZE_CONTRAST = 1.25
SIZE_TOLERANCE = 1.10
MARGIN_FRACTION = 0.06
COLOUR_MAJORITY = 0.5  # share of an object's pixels that must carry its colour word's hue

# spatial words -> (axis, sign): axis 0 is x (rightwards), 1 is y (downwards); sign -1 looks for the smaller value
_POSITION_WORDS = {"left": (0, -1), "right": (0, 1), "top": (1, -1), "bottom": (1, 1)}
_SUPERLATIVES = {"leftmost": "left", "rightmost": "right", "topmost": "top", "bottommost": "bottom"}
_RELATIONS = {"to the left of": (0, -1), "left of": (0, -1), "to the right of": (0, 1), "right of": (0, 1),
              "above": (1, -1), "over": (1, -1), "below": (1, 1), "under": (1, 1)}
_DESC = r"(?:(small|large) )?(?:(red|yellow|green|blue|purple) )?(circle|square|triangle|diamond)"
_ATTRIBUTE = re.compile(rf"^the {_DESC}$")
_POS_BEFORE = re.compile(rf"^the (leftmost|rightmost|topmost|bottommost|left|right|top|bottom) {_DESC}$")
_POS_AFTER = re.compile(rf"^the {_DESC} (?:on the (left|right)|at the (top|bottom))$")
_RELATION = re.compile(rf"^the {_DESC} ({'|'.join(sorted(_RELATIONS, key=len, reverse=True))}) the {_DESC}$")


@dataclass(frozen=True)
class Phrase:
    """A noun phrase as written: shape, and optionally colour and size."""

    shape: str
    colour: str | None = None
    size: str | None = None


@dataclass(frozen=True)
class Parsed:
    form: str  # attribute, position, relation
    target: Phrase
    direction: tuple[int, int] | None = None  # (axis, sign) of the position or relation
    anchor: Phrase | None = None


def parse(text: str) -> Parsed | None:
    """The sentence's form, its phrases and its direction; None for a sentence none of the forms fits."""
    t = " ".join(text.lower().split())
    if m := _ATTRIBUTE.match(t):
        return Parsed("attribute", Phrase(m[3], m[2], m[1]))
    if m := _POS_BEFORE.match(t):
        word = _SUPERLATIVES.get(m[1], m[1])
        return Parsed("position", Phrase(m[4], m[3], m[2]), _POSITION_WORDS[word])
    if m := _POS_AFTER.match(t):
        return Parsed("position", Phrase(m[3], m[2], m[1]), _POSITION_WORDS[m[4] or m[5]])
    if m := _RELATION.match(t):
        return Parsed("relation", Phrase(m[3], m[2], m[1]), _RELATIONS[m[4]], Phrase(m[7], m[6], m[5]))
    return None


@dataclass
class Seen:
    """One object as a person sees it: shape (its category), the hue shares of its pixels, area, centroid."""

    ann_id: int
    shape: str
    area: int
    centroid: tuple[float, float]
    hue_share: dict[str, float] = field(default_factory=dict)

    def colour_is(self, word: str) -> bool:
        return self.hue_share.get(word, 0.0) > COLOUR_MAJORITY


def _hues(pixels: np.ndarray) -> np.ndarray:
    """Hue in degrees of (N, 3) RGB pixels."""
    rgb = pixels.astype(np.float64) / 255.0
    mx, mn = rgb.max(1), rgb.min(1)
    delta = np.where(mx - mn == 0, 1e-9, mx - mn)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    h = np.where(mx == r, ((g - b) / delta) % 6, np.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4))
    return (60.0 * h) % 360.0


def _in_range(h: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (h >= lo) & (h < hi) if lo < hi else (h >= lo) | (h < hi)


def see(image: np.ndarray, anns: Sequence[dict], categories: dict[int, str]) -> list[Seen]:
    """Every annotated object of one image, from its polygon (decoded as COCO decodes it) and the pixels."""
    h, w = image.shape[:2]
    out = []
    for a in anns:
        seg = a["segmentation"]
        rles = mask_utils.frPyObjects(seg, h, w) if isinstance(seg, list) else [seg]
        mask = mask_utils.decode(rles)
        mask = (mask.any(axis=2) if mask.ndim == 3 else mask).astype(bool)
        ys, xs = np.nonzero(mask)
        hues = _hues(image[mask])
        share = {word: float(_in_range(hues, *rng).mean()) if len(hues) else 0.0 for word, rng in HUES.items()}
        out.append(Seen(int(a["id"]), categories[a["category_id"]], int(mask.sum()),
                        (float(xs.mean()), float(ys.mean())) if len(xs) else (float("nan"), float("nan")), share))
    return out


def size_word_holds(word: str, area: float, others: Sequence[float]) -> bool:
    """The size rule of the module docstring, for an object of ``area`` among ``others``, the areas of the other
    objects of its shape in the image."""
    if word == "large":
        return any(area >= SIZE_CONTRAST * a for a in others) and all(a <= SIZE_TOLERANCE * area for a in others)
    return any(a >= SIZE_CONTRAST * area for a in others) and all(area <= SIZE_TOLERANCE * a for a in others)


def size_holds(o: Seen, word: str, objs: Sequence[Seen]) -> bool:
    return size_word_holds(word, o.area, [p.area for p in objs if p.shape == o.shape and p.ann_id != o.ann_id])


def fits(phrase: Phrase, o: Seen, objs: Sequence[Seen]) -> bool:
    """Whether the phrase is true of the object."""
    return (o.shape == phrase.shape and (phrase.colour is None or o.colour_is(phrase.colour))
            and (phrase.size is None or size_holds(o, phrase.size, objs)))


def _offsets(o: Seen, anchor: Seen, direction: tuple[int, int]) -> tuple[float, float]:
    axis, sign = direction
    along = sign * (o.centroid[axis] - anchor.centroid[axis])
    across = abs(o.centroid[1 - axis] - anchor.centroid[1 - axis])
    return along, across


def stands(o: Seen, anchor: Seen, direction: tuple[int, int], margin: float) -> bool:
    """The relation rule: the named direction dominates, by at least the margin."""
    along, across = _offsets(o, anchor, direction)
    return along >= margin and along >= across


@dataclass(frozen=True)
class Violation:
    sent_id: int
    text: str
    kind: str
    rule: str
    detail: str


def _phrase_violations(phrase: Phrase, o: Seen, objs: Sequence[Seen], role: str) -> list[tuple[str, str]]:
    out = []
    if o.shape != phrase.shape:
        out.append(("shape", f"{role} is a {o.shape}, not a {phrase.shape}"))
    if phrase.colour is not None and not o.colour_is(phrase.colour):
        best = max(o.hue_share, key=o.hue_share.get)
        out.append(("colour", f"{role} looks {best} ({100 * o.hue_share[best]:.0f}% of its pixels), not {phrase.colour}"))
    if phrase.size is not None and not size_holds(o, phrase.size, objs):
        same = sorted(p.area for p in objs if p.shape == o.shape and p.ann_id != o.ann_id)
        out.append(("size", f"{role} called {phrase.size}: {o.area} px against its shape's others {same or 'none'}"))
    return out


def check_sentence(text: str, referent: Seen, objs: Sequence[Seen], margin: float) -> list[tuple[str, str]]:
    """Every rule the sentence breaks, as (rule, detail); empty when it is true of the picture."""
    p = parse(text)
    if p is None:
        return [("grammar", "no known form")]
    bad = _phrase_violations(p.target, referent, objs, "the referent")
    fitting = [o for o in objs if fits(p.target, o, objs)]
    if p.form == "attribute":
        if [o.ann_id for o in fitting] != [referent.ann_id]:
            bad.append(("unique", f"the description fits {len(fitting)} objects"))
    elif p.form == "position":
        axis, sign = p.direction
        if len(fitting) < 2:
            bad.append(("position", f"a superlative among {len(fitting)} fitting objects"))
        else:
            ranked = sorted(fitting, key=lambda o: sign * o.centroid[axis], reverse=True)
            lead = sign * (ranked[0].centroid[axis] - ranked[1].centroid[axis])
            if ranked[0].ann_id != referent.ann_id:
                bad.append(("position", "another fitting object is further that way"))
            elif lead < margin - 1e-6:
                bad.append(("position", f"ahead of the next by {lead:.1f} px, under the margin {margin:.1f}"))
    else:
        anchors = [o for o in objs if fits(p.anchor, o, objs)]
        if len(anchors) != 1 or anchors[0].ann_id == referent.ann_id:
            bad.append(("anchor", f"the anchor description fits {len(anchors)} objects"
                                  + (" (the referent)" if anchors and anchors[0].ann_id == referent.ann_id else "")))
        else:
            a = anchors[0]
            if not stands(referent, a, p.direction, margin - 1e-6):
                along, across = _offsets(referent, a, p.direction)
                bad.append(("relation", f"referent {along:.1f} px along the named direction, {across:.1f} across"))
            others = [o for o in fitting if o.ann_id not in (referent.ann_id, a.ann_id)
                      and stands(o, a, p.direction, margin - 1e-6)]
            if others:
                bad.append(("relation", f"{len(others)} other fitting object(s) stand in the relation too"))
    return bad


def check(root: str | Path, split: str | None = None, limit: int | None = None, dataset: str = "synthref",
          split_by: str = "synth", progress: bool = False) -> tuple[list[Violation], Counter]:
    """Check every sentence of ``split`` (all splits when None) of the first ``limit`` images holding
    referents: (violations, count of sentences by kind)."""
    root = Path(root)
    inst = json.loads((root / dataset / "instances.json").read_text())
    with open(root / dataset / f"refs({split_by}).p", "rb") as f:
        refs = pickle.load(f)  # our own files (the loader reads untrusted ones with a restricted unpickler)
    categories = {c["id"]: c["name"] for c in inst["categories"]}
    images = {i["id"]: i for i in inst["images"]}
    by_image: dict[int, list[dict]] = {}
    for a in inst["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    chosen = [r for r in refs if split is None or r["split"] == split]
    image_ids = sorted({r["image_id"] for r in chosen})[:limit]
    keep = set(image_ids)
    violations: list[Violation] = []
    counted: Counter = Counter()
    seen_cache: dict[int, list[Seen]] = {}
    iterator = image_ids
    if progress:
        from tqdm import tqdm

        iterator = tqdm(image_ids, desc="truth", unit="img", leave=False)
    for image_id in iterator:
        info = images[image_id]
        pixels = np.asarray(Image.open(root / "images" / info["file_name"]).convert("RGB"))
        seen_cache[image_id] = see(pixels, by_image.get(image_id, []), categories)
    for r in chosen:
        if r["image_id"] not in keep:
            continue
        objs = seen_cache[r["image_id"]]
        referent = next(o for o in objs if o.ann_id == r["ann_id"])
        margin = MARGIN_FRACTION * max(images[r["image_id"]]["width"], images[r["image_id"]]["height"])
        for s in r["sentences"]:
            counted[s.get("kind", "none")] += 1
            for rule, detail in check_sentence(s["sent"], referent, objs, margin):
                violations.append(Violation(int(s["sent_id"]), s["sent"], s.get("kind", "none"), rule, detail))
    return violations, counted


def summary(violations: Sequence[Violation], counted: Counter) -> dict:
    """Sentences and violating sentences by kind, and violations by rule."""
    bad_sents = {v.sent_id for v in violations}
    by_kind = {k: {"sentences": n, "violating": len({v.sent_id for v in violations if v.kind == k})}
               for k, n in sorted(counted.items())}
    return {"sentences": sum(counted.values()), "violating": len(bad_sents), "by_kind": by_kind,
            "by_rule": dict(sorted(Counter(v.rule for v in violations).items()))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m risclip.data.truth", description=__doc__.split("\n\n")[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:3]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="a SynthRef folder (its --out)")
    parser.add_argument("--split", default=None, help="train, val or test (default: every split)")
    parser.add_argument("--limit", type=int, default=None, help="check the first N images only")
    parser.add_argument("--examples", type=int, default=8, help="violations to print (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true")
    a = parser.parse_args(argv)
    if not (a.dir / "synthref" / "instances.json").is_file():
        print(f"error: {a.dir}: no synthref/instances.json (not a SynthRef folder)", file=sys.stderr)
        return 2
    violations, counted = check(a.dir, a.split, a.limit, progress=not a.no_progress)
    s = summary(violations, counted)
    if a.json:
        print(json.dumps(s, indent=2))
    else:
        print(f"{s['violating']} of {s['sentences']} sentences break a rule "
              f"({100 * s['violating'] / max(1, s['sentences']):.1f}%)")
        for k, v in s["by_kind"].items():
            print(f"  {k:10s} {v['violating']:6d} of {v['sentences']:6d}")
        for rule, n in s["by_rule"].items():
            print(f"  rule {rule:10s} {n:6d} violations")
        for v in violations[: a.examples]:
            print(f"  e.g. {v.text!r} ({v.kind}): {v.rule}: {v.detail}")
    return 0 if not violations else 1


if __name__ == "__main__":
    raise SystemExit(main())
