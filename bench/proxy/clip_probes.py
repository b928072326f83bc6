"""Probes of what a proxy CLIP has learnt, on held-out caption-corpus images (their objects are known).

Each probe pits a true caption against a minimally changed false one and counts how often the image
embedding is closer to the true one (chance: 50%):

* ``attribute``: "a red square" against "a blue square", blue being no square's colour in the image;
* ``place``: "a red square on the left" against "... on the right" (top / bottom likewise);
* ``relation``: "a red square and a blue circle above it" against "... below it" (left of / right of
  likewise): the test the review ran on the first proxy (42-53%). A web-trained CLIP is weak at it too,
  so it is reported, not targeted.
* ``shape``: "a red square" against "a red diamond", no diamond being in the image (drawn from a stream
  of its own, so adding it left the other probes' pairs as they were).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import open_clip
import torch

from risclip.data.alttext import place_word, relation_word
from risclip.data.scenes import COLOURS, SHAPES

SWAPS = {"on the left": "on the right", "on the right": "on the left", "at the top": "at the bottom",
         "at the bottom": "at the top", "above": "below", "below": "above",
         "to the left of": "to the right of", "to the right of": "to the left of"}


def probe_pairs(objects: list[list[dict]], size: int, seed: int) -> dict[str, list[tuple[int, str, str]]]:
    """(image index, true caption, false caption) for each probe, at most one of each per image."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[int, str, str]]] = {"attribute": [], "place": [], "relation": [], "shape": []}
    shape_rng = np.random.default_rng([seed, 1])
    for i, objs in enumerate(objects):
        os_ = [SimpleNamespace(**o) for o in objs]
        if not os_:
            continue
        o = os_[int(rng.integers(0, len(os_)))]
        used = {p.colour for p in os_ if p.shape == o.shape}
        free = [c for c in COLOURS if c not in used]
        if free:
            out["attribute"].append((i, f"a {o.colour} {o.shape}", f"a {free[int(rng.integers(0, len(free)))]} {o.shape}"))
        placed = [(p, w) for p in os_ if (w := place_word(p, size)) in SWAPS]
        if placed:
            p, w = placed[int(rng.integers(0, len(placed)))]
            out["place"].append((i, f"a {p.colour} {p.shape} {w}", f"a {p.colour} {p.shape} {SWAPS[w]}"))
        pairs = [(a, b, w) for a in os_ for b in os_ if a is not b and (w := relation_word(b, a)) is not None]
        if pairs:
            a, b, w = pairs[int(rng.integers(0, len(pairs)))]
            head = f"a {a.colour} {a.shape} and a {b.colour} {b.shape}"
            out["relation"].append((i, f"{head} {w} it", f"{head} {SWAPS[w]} it"))
        absent = [sh for sh in SHAPES if sh not in {p.shape for p in os_}]
        if absent:
            p = os_[int(shape_rng.integers(0, len(os_)))]
            out["shape"].append((i, f"a {p.colour} {p.shape}", f"a {p.colour} {absent[int(shape_rng.integers(0, len(absent)))]}"))
    return out


@torch.no_grad()
def run_probes(model: open_clip.CLIP, pairs, context_length: int, seed: int = 0) -> dict[str, float]:
    """Share (%) of probes where the true caption scores higher, with the number of probes of each."""
    model.eval()
    img = model.encode_image(pairs.images, normalize=True)
    out: dict[str, float] = {}
    for name, items in probe_pairs(pairs.objects, pairs.source_size, seed).items():
        if not items:
            continue
        idx = torch.tensor([i for i, _, _ in items])
        t = model.encode_text(open_clip.tokenize([s for _, s, _ in items], context_length=context_length), normalize=True)
        f = model.encode_text(open_clip.tokenize([s for _, _, s in items], context_length=context_length), normalize=True)
        right = ((img[idx] * t).sum(-1) > (img[idx] * f).sum(-1)).float().mean().item()
        out[f"{name}_probe"] = 100.0 * right
        out[f"{name}_probe_n"] = float(len(items))
    return out
