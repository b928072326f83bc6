"""Alt-text captions and the caption corpus a proxy CLIP is pre-trained on (SynthRef, refcoco profile).

A web-trained CLIP has read spatial words ("on the left", "above") in captions that use them loosely
and rarely; it knows them but grounds them weakly. These captions imitate that: each names one to
three of a scene's objects with some of their attributes (colour mostly, size and stripes sometimes),
and now and then a place in the image ("on the left", "at the top", "in the middle"), a relation to
the object named before it ("... and a blue circle above it"), or an extreme among objects of one
shape ("two squares, the left one red"). Every statement is true of the scene; what makes the grounding
weak is that most captions say nothing about where things are.

Vocabulary ``v3`` (:attr:`CorpusConfig.vocabulary`) keeps every v2 caption form and adds the phrasings a
web corpus also holds and v2 never wrote: superlatives ("the leftmost square is red", for the extremes
above, half of the time) and "over" / "under" for "above" / "below" (half of the time). How often
captions say where things are is unchanged.

The corpus (``python -m risclip.data.synthref captions --out DIR --images N``) holds scenes of its own,
drawn from a random stream no RIS image uses, so no image of the RIS train, val or test splits is in it::

    DIR/caption_corpus/images/corpus_000000.png ...
    DIR/caption_corpus/captions.json       COCO captions (two per image) and the corpus settings
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .scenes import SynthRefConfig, make_scene_refcoco, render

CORPUS_DIR = "caption_corpus"
CORPUS_STREAM = 7919  # the corpus's scenes come from default_rng([seed, CORPUS_STREAM, i]); RIS images use [seed, i]
# how often a caption says each thing (our choice: spatial words present but sparse)
P_COLOUR, P_SIZE, P_STRIPES = 0.8, 0.35, 0.5
P_PLACE, P_RELATION, P_EXTREME = 0.3, 0.25, 0.15
MAX_WORDS = 20  # captions fit RIS-Tiny's 24-token context with room for start/end tokens
VOCABULARIES = ("v2", "v3")
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}
EXTREME_WORDS = {(0, -1): "left", (0, 1): "right", (1, -1): "top", (1, 1): "bottom"}


def _phrase(o, rng: np.random.Generator) -> str:
    words = []
    if rng.random() < P_SIZE:
        words.append(o.size)
    if o.striped and rng.random() < P_STRIPES:
        words.append("striped")
    if rng.random() < P_COLOUR:
        words.append(o.colour)
    return " ".join(["a", *words, o.shape])


def place_word(o, size: int) -> str | None:
    """Where an object's centre lies: a side when it is clearly off-centre along one axis, the middle
    when it is near the centre, None in between (a caption then says nothing)."""
    dx, dy = o.cx / size - 0.5, o.cy / size - 0.5
    if max(abs(dx), abs(dy)) < 0.12:
        return "in the middle"
    if abs(dx) >= abs(dy) + 0.1:
        return "on the left" if dx < 0 else "on the right"
    if abs(dy) >= abs(dx) + 0.1:
        return "at the top" if dy < 0 else "at the bottom"
    return None


def relation_word(o, anchor) -> str | None:
    """How ``o`` lies relative to ``anchor`` along the axis where they differ most (None when the two
    axes are too close to call)."""
    dx, dy = o.cx - anchor.cx, o.cy - anchor.cy
    if abs(dx) > 1.5 * abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    if abs(dy) > 1.5 * abs(dx):
        return "above" if dy < 0 else "below"
    return None


SUPERLATIVES = {(0, -1): "leftmost", (0, 1): "rightmost", (1, -1): "topmost", (1, 1): "bottommost"}
SYNONYMS = {"above": "over", "below": "under"}  # v3: the other phrasing, half of the time


def _extreme(objs: Sequence, rng: np.random.Generator, vocabulary: str = "v2") -> str | None:
    """"two squares, the left one red": an extreme among the objects of one shape, by a clear margin."""
    shapes = sorted({o.shape for o in objs if sum(p.shape == o.shape for p in objs) >= 2})
    if not shapes:
        return None
    shape = shapes[int(rng.integers(0, len(shapes)))]
    group = [o for o in objs if o.shape == shape]
    axis, sign = list(EXTREME_WORDS)[int(rng.integers(0, 4))]
    ranked = sorted(group, key=lambda o: sign * (o.cx if axis == 0 else o.cy), reverse=True)
    a, b = ranked[0], ranked[1]
    if abs((a.cx - b.cx) if axis == 0 else (a.cy - b.cy)) < 8:
        return None
    if vocabulary == "v3" and rng.random() < 0.5:
        return f"the {SUPERLATIVES[(axis, sign)]} {shape} is {a.colour}"
    return f"{NUMBERS.get(len(group), 'several')} {shape}s, the {EXTREME_WORDS[(axis, sign)]} one {a.colour}"


def alt_text(objs: Sequence, rng: np.random.Generator, size: int, vocabulary: str = "v2") -> str:
    """One caption of a scene (see the module docstring); at most :data:`MAX_WORDS` words."""
    if not objs:
        return "an empty picture"
    if rng.random() < P_EXTREME:
        text = _extreme(objs, rng, vocabulary)
        if text is not None:
            return text
    k = int(rng.integers(1, min(3, len(objs)) + 1))
    chosen = [objs[i] for i in rng.choice(len(objs), size=k, replace=False)]
    parts: list[str] = []
    for j, o in enumerate(chosen):
        part = _phrase(o, rng)
        u = rng.random()
        rel = relation_word(o, chosen[j - 1]) if j > 0 else None
        place = place_word(o, size)
        if rel is not None and u < P_RELATION:
            if vocabulary == "v3" and rel in SYNONYMS and rng.random() < 0.5:
                rel = SYNONYMS[rel]
            part += f" {rel} it"
        elif place is not None and u < P_RELATION + P_PLACE:
            part += f" {place}"
        if len(_join(parts + [part]).split()) > MAX_WORDS:
            break
        parts.append(part)
    return _join(parts)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


@dataclass(frozen=True)
class CorpusConfig:
    """The caption corpus: ``images`` scenes of the refcoco profile at ``size`` px, two captions each."""

    images: int = 10000
    seed: int = 0
    size: int = 128
    vocabulary: str = "v2"  # "v3": also superlatives and over / under (module docstring)

    def __post_init__(self) -> None:
        if self.vocabulary not in VOCABULARIES:
            raise ValueError(f"unknown caption vocabulary '{self.vocabulary}'; valid: {', '.join(VOCABULARIES)}")


def corpus_scene(index: int, cfg: CorpusConfig):
    """Image ``index`` of the corpus: (pixels, objects, two captions). Depends only on (seed, index)."""
    scfg = SynthRefConfig(images=cfg.images, seed=cfg.seed, size=cfg.size, profile="refcoco")
    rng = np.random.default_rng([cfg.seed, CORPUS_STREAM, index])
    objs = make_scene_refcoco(rng, scfg)
    pixels = render(objs, rng, scfg)
    return pixels, objs, [alt_text(objs, rng, cfg.size, cfg.vocabulary) for _ in range(2)]


def corpus_dir(vocabulary: str = "v2") -> str:
    """The corpus's folder under the data root: v2's keeps its first name, later ones get their own."""
    return CORPUS_DIR if vocabulary == "v2" else f"{CORPUS_DIR}_{vocabulary}"


def corpus_path(root: str | Path, vocabulary: str = "v2") -> Path:
    return Path(root) / corpus_dir(vocabulary) / "captions.json"


def generate_corpus(root: str | Path, cfg: CorpusConfig, progress: bool | None = None) -> Path:
    """Write the corpus under ``root/caption_corpus`` (captions.json last, so a complete file means a
    complete corpus); returns the captions file. Object attributes are kept for the probes."""
    out = Path(root) / corpus_dir(cfg.vocabulary)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations, objects = [], [], []
    bar = tqdm(range(cfg.images), desc="caption corpus", unit="img", leave=False,
               disable=None if progress is None else not progress)
    for i in bar:
        pixels, objs, caps = corpus_scene(i, cfg)
        name = f"corpus_{i:06d}.png"
        Image.fromarray(pixels).save(out / "images" / name, compress_level=1)
        images.append({"id": i + 1, "file_name": name, "height": cfg.size, "width": cfg.size})
        for c in caps:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "caption": c})
        objects.append([{"shape": o.shape, "colour": o.colour, "size": o.size, "striped": o.striped,
                         "cx": o.cx, "cy": o.cy} for o in objs])
    config = dict(cfg.__dict__)
    if cfg.vocabulary == "v2":
        config.pop("vocabulary")  # v2's file stays byte-identical to the one written before v3 existed
    data = {"info": {"description": "SynthRef caption corpus (risclip-bench)", "config": config},
            "images": images, "annotations": annotations, "objects": objects}
    tmp = out / "captions.json.tmp"
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    tmp.replace(out / "captions.json")
    return out / "captions.json"
