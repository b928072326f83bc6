"""Hard negative captions for proxy-CLIP pre-training (NegCLIP's idea, Yuksekgonul et al., ICLR 2023):
beside the other images' captions, each image is contrasted with its own caption minimally changed, so
that what tells them apart is exactly one word of shape, colour or place.

* ``shape``: one shape word becomes a shape no object of the image has ("a red circle" -> "a red
  diamond"), so the caption is false whatever else it says;
* ``colour``: one colour word becomes a colour no object of the image has;
* ``place``: one spatial word becomes its opposite ("on the left" -> "on the right", "above" -> "below",
  "the leftmost square" -> "the rightmost square"). Place words are written only where they hold by a clear
  margin, so the opposite is false of the object named (another object of the same description could make
  it true: rare, and a web corpus's negatives are noisier).

Each kind present in a caption is equally likely; a caption with none of them has no negative.
"""

from __future__ import annotations

import re

import numpy as np

from risclip.data.scenes import COLOURS, SHAPES

OPPOSITES = {"left": "right", "right": "left", "top": "bottom", "bottom": "top", "above": "below",
             "below": "above", "over": "under", "under": "over", "leftmost": "rightmost",
             "rightmost": "leftmost", "topmost": "bottommost", "bottommost": "topmost"}
_WORD = re.compile(r"[a-z]+")


def hard_negative(caption: str, objects: list[dict], rng: np.random.Generator) -> str | None:
    """``caption`` with one shape, colour or place word changed so that it no longer describes the image
    (``objects``: the image's objects as the corpus records them); None when it has no such word."""
    words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(caption)]
    present_shapes = {o["shape"] for o in objects}
    present_colours = {o["colour"] for o in objects}
    free_shapes = [s for s in SHAPES if s not in present_shapes]
    free_colours = [c for c in COLOURS if c not in present_colours]
    options: dict[str, list[tuple[int, int, str]]] = {"shape": [], "colour": [], "place": []}
    for a, b, w in words:
        stem = w[:-1] if w.endswith("s") and w[:-1] in SHAPES else w
        if stem in SHAPES and free_shapes:
            new = free_shapes[int(rng.integers(len(free_shapes)))]
            options["shape"].append((a, b, new + w[len(stem):]))
        elif w in COLOURS and free_colours:
            options["colour"].append((a, b, free_colours[int(rng.integers(len(free_colours)))]))
        elif w in OPPOSITES:
            options["place"].append((a, b, OPPOSITES[w]))
    kinds = [k for k, v in options.items() if v]
    if not kinds:
        return None
    choices = options[kinds[int(rng.integers(len(kinds)))]]
    a, b, new = choices[int(rng.integers(len(choices)))]
    return caption[:a] + new + caption[b:]
