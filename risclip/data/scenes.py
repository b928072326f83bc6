"""The scene model of SynthRef: what a scene holds (shapes, colours, sizes, positions, stripes), how
scenes are drawn (the dense and refcoco profiles) and how they are rendered to pixels.

Nothing here knows about expressions, captions or files: :mod:`risclip.data.synthref` (the RIS benchmark's
expressions and writer) and :mod:`risclip.data.alttext` (the proxy CLIP's caption corpus) both build on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 215),
    "yellow": (235, 205, 40),
    "purple": (150, 60, 190),
}
SIZES: tuple[str, ...] = ("small", "large")
PROFILES: tuple[str, ...] = ("refcoco", "dense")
SENTENCE_VERSIONS: tuple[int, ...] = (1, 2)  # SynthRefConfig.sentences


@dataclass(frozen=True)
class SynthRefConfig:
    """Generator settings. Sizes scale with the image size (defaults tuned at 128 px).

    ``profile`` picks the scene statistics (:data:`PROFILES`):

    * ``refcoco`` (default): few, large objects as in the RefCOCO family (COCO objects, mostly people
      and sizeable things): 2-4 objects share the scene's main shape (category), 0-2 others join them,
      referents are drawn from the main shape first, objects are packed by their masks (not boxes), and
      expressions are mixed by :data:`REFCOCO_KIND_WEIGHTS` with more than one phrasing of each spatial
      word ("the square on the left", "the left square"). ``min_objects`` / ``max_objects`` do not apply.
    * ``dense``: the first generator (3-6 small objects packed by bounding box, one phrasing): kept
      byte-identical for the same seed so that earlier results stay comparable.

    ``extra_test_images`` grows the test split alone: images ``images .. images + extra_test_images - 1``
    are drawn by the same generator (each image has its own random stream, ``[seed, index]``) and all go to
    test, so images ``0 .. images - 1`` and the train and val splits are byte-identical to a draw without
    them. A ~190-image test split lets the draw decide a rung's mean by more than its CI; this is the lever
    that narrows it without touching what is trained or selected on.
    """

    images: int = 2000
    seed: int = 0
    size: int = 128
    profile: str = "refcoco"
    min_objects: int = 3
    max_objects: int = 6
    max_refs_per_image: int = 3
    max_sentences_per_ref: int = 3
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    striped_fraction: float = 0.3
    noise_std: float = 5.0
    margin_fraction: float = 0.06  # spatial words need this share of the image size as a clear margin
    extra_test_images: int = 0  # more test images after the first ``images`` (train and val unchanged)
    # what the sentences may say (SENTENCE_VERSIONS; refcoco profile only). 1: the first rules, kept byte-identical
    # for earlier presets (a shrunk object keeps its size word; a relation holds along one axis whatever the
    # other says; positions are the shapes' parameter centres). 2: every sentence true to the picture, checked
    # by risclip.data.truth (docs/data.md, "What the sentences say"): sizes drawn once per scene and shape, so
    # every "large" object of a shape is visibly larger than every "small" one; size words only where the image
    # holds the other size of the shape; positions at the masks' centroids; a relation holds where its named
    # direction dominates (the offset along it at least the margin and at least the offset across it)
    sentences: int = 1

    def __post_init__(self) -> None:
        if self.sentences not in SENTENCE_VERSIONS:
            raise ValueError(f"unknown SynthRef sentences version {self.sentences}; valid: {SENTENCE_VERSIONS}")
        if self.sentences != 1 and self.profile != "refcoco":
            raise ValueError("SynthRef sentences version 2 exists for the refcoco profile only")


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
    centroid: tuple[float, float] | None = None  # the mask's centroid (x, y): where spatial words look (version 2)

    def centre(self, axis: int) -> float:
        """Where the object is along ``axis`` (0: x, 1: y) for spatial words: the mask's centroid where it is
        set (sentences version 2), else the shape's parameter centre (version 1)."""
        if self.centroid is not None:
            return self.centroid[axis]
        return self.cx if axis == 0 else self.cy


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


# refcoco profile: object radii as shares of the image side, by size word. A circle of radius 0.15 s
# covers 7% of the image; triangles (the smallest shape for a radius) cover about half a circle.
REFCOCO_RADII = {"small": (0.13, 0.17), "large": (0.20, 0.26)}


def _grow(mask: np.ndarray, g: int) -> np.ndarray:
    """Binary dilation by a (2g+1)-square: every pixel within g pixels (chessboard distance) of the mask."""
    padded = np.pad(mask, g)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(2 * g + 1):
        for dx in range(2 * g + 1):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def _refcoco_palette(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """The refcoco profile's draw of a scene's shapes (2-4 of one main shape, then 0-2 others) and colours."""
    main = str(rng.choice(SHAPES))
    n_main = int(rng.choice([2, 3, 4], p=[0.4, 0.4, 0.2]))
    n_other = int(rng.choice([0, 1, 2], p=[0.3, 0.45, 0.25]))
    others = [str(x) for x in rng.choice([x for x in SHAPES if x != main], size=n_other)]
    colours = list(rng.choice(list(COLOURS), size=int(rng.integers(2, 4)), replace=False))
    return [main] * n_main + others, colours


def make_scene_refcoco(rng: np.random.Generator, cfg: SynthRefConfig) -> list[SceneObject]:
    """A RefCOCO-like scene: 2-4 objects of one main shape (the category the referents mostly come
    from) and 0-2 of other shapes, large, placed at random with their masks at least ``gap`` pixels
    apart (2.5% of the side, at least 2 px, so every object keeps a background outline). Large objects
    are placed first; one that finds no room in 60 tries is drawn again 10% smaller, up to three times,
    then left out, so a scene may hold fewer objects than drawn (never fewer than 1)."""
    s = cfg.size
    shapes, colours = _refcoco_palette(rng)
    drawn = [(shape, SIZES[int(rng.integers(0, 2))]) for shape in shapes]
    drawn.sort(key=lambda d: d[1] != "large")  # large first: they are the hard ones to fit
    occupied = np.zeros((s, s), dtype=bool)  # placed masks grown by the gap
    gap = max(2, round(0.025 * s))
    objs: list[SceneObject] = []
    for shape, size in drawn:
        lo, hi = REFCOCO_RADII[size]
        r = float(rng.uniform(lo, hi) * s)
        placed = False
        for _shrink in range(4):
            for _try in range(60):
                cx = float(rng.uniform(r + 1, s - r - 1))
                cy = float(rng.uniform(r + 1, s - r - 1))
                footprint = polygon_mask(_polygon(shape, cx, cy, r), s, s)
                if not (footprint & occupied).any():
                    placed = True
                    break
            if placed:
                break
            r *= 0.9
        if not placed:
            continue
        o = SceneObject(shape=shape, colour=str(colours[int(rng.integers(0, len(colours)))]), size=size,
                        cx=round(cx, 2), cy=round(cy, 2), radius=round(r, 2),
                        striped=bool(rng.random() < cfg.striped_fraction))
        o.polygon = _polygon(o.shape, o.cx, o.cy, o.radius)
        o.mask = polygon_mask(o.polygon, s, s)
        occupied |= _grow(o.mask, gap)
        objs.append(o)
    order = rng.permutation(len(objs))  # placement order (large first) must not leak into object order
    return [objs[i] for i in order]


def _fits(shape: str, r: float, occupied: np.ndarray, rng: np.random.Generator, s: int,
          tries: int) -> tuple[float, float] | None:
    for _ in range(tries):
        cx = float(rng.uniform(r + 1, s - r - 1))
        cy = float(rng.uniform(r + 1, s - r - 1))
        if not (polygon_mask(_polygon(shape, cx, cy, r), s, s) & occupied).any():
            return cx, cy
    return None


def make_scene_refcoco_v2(rng: np.random.Generator, cfg: SynthRefConfig) -> list[SceneObject]:
    """The refcoco profile's scene for sentences version 2: the same object counts, palette and packing as
    :func:`make_scene_refcoco`, but sizes that say what is seen. Each shape of the scene gets one radius for
    "large" (0.20-0.26 of the side) and one for "small" (0.13-0.17), so every large object of a shape has
    at least (0.20 / 0.17)^2 = 1.38 times the area of every small one and large ones of a shape have equal
    areas. An object is never shrunk to fit: a large one that finds no room in 240 tries becomes small (and
    is drawn at the shape's small radius), a small one that finds none is left out. Each object records its
    mask's centroid, where spatial words look."""
    s = cfg.size
    shapes, colours = _refcoco_palette(rng)
    radii = {shape: {z: float(rng.uniform(*REFCOCO_RADII[z]) * s) for z in SIZES} for shape in SHAPES}
    drawn = [(shape, SIZES[int(rng.integers(0, 2))]) for shape in shapes]
    drawn.sort(key=lambda d: d[1] != "large")  # large first: they are the hard ones to fit
    occupied = np.zeros((s, s), dtype=bool)
    gap = max(2, round(0.025 * s))
    objs: list[SceneObject] = []
    for shape, size in drawn:
        at = _fits(shape, radii[shape][size], occupied, rng, s, 240)
        if at is None and size == "large":
            size = "small"
            at = _fits(shape, radii[shape][size], occupied, rng, s, 240)
        if at is None:
            continue
        r = radii[shape][size]
        o = SceneObject(shape=shape, colour=str(colours[int(rng.integers(0, len(colours)))]), size=size,
                        cx=round(at[0], 2), cy=round(at[1], 2), radius=round(r, 2),
                        striped=bool(rng.random() < cfg.striped_fraction))
        o.polygon = _polygon(o.shape, o.cx, o.cy, o.radius)
        o.mask = polygon_mask(o.polygon, s, s)
        ys, xs = np.nonzero(o.mask)
        o.centroid = (float(xs.mean()), float(ys.mean()))
        occupied |= _grow(o.mask, gap)
        objs.append(o)
    order = rng.permutation(len(objs))  # placement order (large first) must not leak into object order
    return [objs[i] for i in order]


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
