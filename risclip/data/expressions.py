"""SynthRef's sentences as small programs over a scene: a :class:`Description` (shape, colour, size) and an
:class:`Expression` of one of three kinds (attribute, position, relation) that the generator *resolves*
before it keeps it; the position and relation words and their other phrasings; which expressions can
name a referent (:func:`candidate_expressions`); and the scenes' captions for pre-training the proxy CLIP.
The independent check of what these sentences claim is :mod:`risclip.data.truth`, which shares none of
this code."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .scenes import SceneObject

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
