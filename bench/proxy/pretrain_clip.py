"""Pre-train a small proxy CLIP contrastively on SynthRef captions.

No pretrained CLIP can be downloaded on these machines, so the SynthRef ladder starts from a small
open_clip ViT (``RIS-Tiny`` by default) trained here with the symmetric InfoNCE loss. The result is an
ordinary open_clip checkpoint (``{"state_dict": ...}``) loaded through the same ``pretrained=<path>``
route as a user's real checkpoint, cached by the hash of its config and of the captions file.

Two corpora:

* v2 (``corpus_images > 0``, the default preset's): the caption corpus of :mod:`risclip.data.alttext`,
  scenes of its own (none in the RIS splits) with alt-text captions that name places and relations now
  and then. Its last 5% of images are held out for the report: retrieval top-1, an attribute probe and a
  spatial probe (:mod:`bench.proxy.clip_probes`). It is pre-trained at ``image_size`` (64 px by default) and
  used at the RIS model's larger input with interpolated position embeddings, as CLIP is pre-trained at
  224 px and RISCLIP runs it at 416.
* v1 (``corpus_images = 0``, the dense preset's): the RIS *train* images' own captions (val images give
  the retrieval score), whose 13 words include no spatial word.

    python -m bench.pretrain_clip --data-root data/synthref-refcoco --corpus-images 10000 [--steps N] [--force]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from risclip.backbone import BackboneError, create_clip, patch_size
from risclip.data.alttext import CorpusConfig, corpus_dir, corpus_path, generate_corpus
from risclip.data.refer import ReferError, load_refs
from risclip.data.transforms import ResizeNormalize
from risclip.engine import warmup_cosine
from risclip.identity import identity_hash


@dataclass(frozen=True)
class PretrainConfig:
    data_root: str = "data/synthref"
    clip_model: str = "RIS-Tiny"
    image_size: int = 96
    context_length: int = 24
    steps: int = 400
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05
    seed: int = 0
    corpus_images: int = 0  # v2: images of the caption corpus (made on demand); 0: v1, the RIS train captions
    holdout_fraction: float = 0.05  # v2: the corpus's last images, never trained on, for retrieval and probes
    # v3: a second, shorter phase at the RIS model's input size (a resolution schedule, as FLIP and CLIPA
    # pre-train at low resolution and fine-tune briefly at a higher one); 0 steps: none (v1, v2)
    hires_steps: int = 0
    hires_size: int = 128
    hires_lr: float = 2e-4
    vocabulary: str = "v2"  # the caption corpus's vocabulary (risclip.data.alttext.VOCABULARIES)
    # v3: each image is also contrasted with its own caption minimally changed (one shape, colour or place
    # word; bench.proxy.negatives), NegCLIP's hard negatives; needs a corpus (it knows each image's objects)
    hard_negatives: bool = False
    # v3: this share of every batch is region pairs (a fixed window around one object of a corpus image,
    # captioned with that object's phrase), as region-text pre-training (RegionCLIP, GLIP) adds to scene
    # captions; the window (0.6 of the side) keeps a large object large and a small one small within it
    region_fraction: float = 0.0
    # v4: a dense region-phrase loss beside the contrastive one, with this weight (0: none). Each object of a
    # batch's scenes is one region: the mean of the shared-space patch tokens inside its mask (weighted by
    # how much of each patch it covers), told apart from the other phrases of the batch by a cross-entropy
    # (region -> phrase). Its phrase names its shape always, its colour, size and stripes sometimes, and its
    # place in the image now and then (``dense_phrase``). This imitates a CLIP whose patches carry the
    # categories and attributes of the objects under them, as region-word alignment (GLIP, RegionCLIP)
    # trains and as web-scale CLIPs show through MaskCLIP's value path; the masks come from the corpus's
    # own scenes, never from the RIS splits
    dense_weight: float = 0.0
    # v4, with the dense loss: each region's phrase is also told apart from itself minimally changed (its place
    # or superlative word flipped, else its size, else one shape or colour word), NegCLIP's hard negatives
    # at the region level; and an object that is the leftmost (rightmost, topmost, bottommost) of two or more
    # of its shape is now and then called so ("the leftmost square"), a word the v2 captions never use
    dense_negatives: bool = False
    dense_superlatives: bool = False
    # v4: the vision tower's position embeddings: "learned" (open_clip's, from random init) or "sincos", fixed
    # 2-D sine-cosine codes (as MAE and many later ViTs use) that stay frozen, so that every patch token
    # starts with a clean, linearly readable code of where it is; at another input size open_clip's loader
    # interpolates them like learned ones
    pos_embed: str = "learned"

    def __post_init__(self) -> None:
        if self.pos_embed not in ("learned", "sincos"):
            raise ValueError(f"unknown pos_embed '{self.pos_embed}'; valid: learned, sincos")

    def captions_file(self) -> Path:
        root = Path(self.data_root)
        return corpus_path(root, self.vocabulary) if self.corpus_images else root / "synthref" / "captions.json"

    def cache_path(self) -> Path:
        captions = self.captions_file()
        data_hash = hashlib.sha256(captions.read_bytes()).hexdigest()[:12] if captions.is_file() else "nodata"
        # v1 configs hash exactly the fields they always had, so cached v1 proxies keep their names
        v2_only = () if self.corpus_images else ("corpus_images", "holdout_fraction")
        # fields added for v3 enter the hash only where they differ from their defaults: v1/v2 names unchanged
        v3_only = tuple(k for k in V3_FIELDS if getattr(self, k) == _DEFAULTS[k] or not self.hires_steps and k.startswith("hires_"))
        fields = {k: v for k, v in dataclasses.asdict(self).items()
                  if k != "data_root" and k not in v2_only + v3_only}
        cfg_hash = identity_hash(fields, 12)
        return Path(self.data_root) / "proxy_clip" / f"{self.clip_model}-{cfg_hash}-{data_hash}.pt"


V3_FIELDS = ("hires_steps", "hires_size", "hires_lr", "vocabulary", "hard_negatives", "region_fraction", "dense_weight",
             "dense_negatives", "dense_superlatives", "pos_embed")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}


def _split_image_ids(data_root: Path) -> dict[str, set[int]]:
    refs = load_refs(data_root / "synthref" / "refs(synth).p")
    out: dict[str, set[int]] = {}
    for r in refs:
        out.setdefault(r["split"], set()).add(r["image_id"])
    return out


class CaptionPairs:
    """Images of one split held in memory as normalised tensors, with their tokenised captions."""

    def __init__(self, captions_file: Path, image_dir: Path, image_ids: set[int], image_size: int,
                 context_length: int) -> None:
        caps = json.loads(captions_file.read_text())
        files = {i["id"]: i["file_name"] for i in caps["images"] if i["id"] in image_ids}
        self.ids = sorted(files)
        tf = ResizeNormalize(image_size)
        self.images = torch.stack([tf.image(Image.open(image_dir / files[i])) for i in self.ids])
        objects = caps.get("objects")  # the corpus records each image's objects (for the probes)
        self.objects = [objects[i - 1] for i in self.ids] if objects else None
        self.source_size = int(caps.get("info", {}).get("config", {}).get("size", 0)) or None
        self.corpus_config = caps.get("info", {}).get("config")
        texts: dict[int, list[str]] = {i: [] for i in self.ids}
        for a in caps["annotations"]:
            if a["image_id"] in texts:
                texts[a["image_id"]].append(a["caption"])
        self.texts = [texts[i] for i in self.ids]
        self.context_length = context_length
        self.captions = [open_clip.tokenize(texts[i], context_length=context_length) for i in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def add_regions(self, image_dir: Path, files: dict[int, str], image_size: int, seed: int,
                    window: float = 0.6) -> None:
        """Region pairs: for every object, the square window of ``window`` times the image side centred on it
        (clipped to the image), resized to ``image_size``, with two phrases of that object (shape always;
        colour, size and stripes sometimes, as the scene captions say them). Kept in half precision."""
        from risclip.data.alttext import _phrase

        if self.objects is None:
            raise ValueError("region pairs need a caption corpus that records each image's objects")
        rng = np.random.default_rng([seed, 4241])
        tf = ResizeNormalize(image_size)
        crops, texts, owner = [], [], []
        for k, i in enumerate(self.ids):
            img = Image.open(image_dir / files[i]).convert("RGB")
            side = img.size[0]
            half = window * side / 2
            for o in self.objects[k]:
                x0 = int(round(min(max(o["cx"] - half, 0), side - 2 * half)))
                y0 = int(round(min(max(o["cy"] - half, 0), side - 2 * half)))
                w = int(round(2 * half))
                crops.append(tf.image(img.crop((x0, y0, x0 + w, y0 + w))).half())
                obj = type("O", (), o)
                texts.append([_phrase(obj, rng) for _ in range(2)])
                owner.append(k)
        self.region_images = torch.stack(crops)
        self.region_texts = texts
        self.region_owner = np.array(owner)
        self.region_captions = [open_clip.tokenize(t, context_length=self.context_length) for t in texts]

    def add_dense(self, image_size: int, patch: int, seed: int, cache_dir: Path | None = None,
                  superlatives: bool = False) -> None:
        """Every object of every image as a dense region: its mask's share of each patch of the ``image_size``
        grid and two phrases of it (:func:`dense_phrase`). The masks are rebuilt from the corpus's own scene
        stream (checked against the recorded objects) and cached in ``cache_dir`` per grid."""
        if self.objects is None or self.corpus_config is None:
            raise ValueError("the dense loss needs a caption corpus that records each image's objects")
        g = image_size // patch
        cache = cache_dir / f"dense-masks-{g}x{g}.pt" if cache_dir is not None else None
        grids = torch.load(cache, weights_only=True) if cache is not None and cache.is_file() else {}
        missing = [i for i in self.ids if i not in grids]
        if missing:
            grids.update(self._dense_grids(missing, g))
            if cache is not None:
                tmp = cache.with_suffix(".tmp")
                torch.save(grids, tmp)
                tmp.replace(cache)
        rng = np.random.default_rng([seed, 4242])
        size = int(self.corpus_config["size"])
        weights, texts, spans, owners = [], [], [], []
        for k, i in enumerate(self.ids):
            objs = [type("O", (), o) for o in self.objects[k]]
            start = len(texts)
            weights.append(grids[i])
            for o, raw in zip(objs, self.objects[k]):
                words = superlative_words(o, objs) if superlatives else []
                texts.append([dense_phrase(o, size, rng, words) for _ in range(2)])
                owners.append(raw)
            spans.append((start, len(texts)))
        self.dense_weights = torch.cat(weights)
        self.dense_texts = texts
        self.dense_spans = spans
        self.dense_objects = owners

    def _dense_grids(self, ids: list[int], g: int) -> dict[int, torch.Tensor]:
        """{image id: (objects, g*g) mask shares}, the scenes rebuilt from the corpus stream."""
        from risclip.data.alttext import CORPUS_STREAM
        from risclip.data.scenes import SynthRefConfig, make_scene_refcoco

        size, cseed = int(self.corpus_config["size"]), int(self.corpus_config["seed"])
        if size % g:
            raise ValueError(f"corpus images of {size} px do not pool to a {g}x{g} grid")
        scfg = SynthRefConfig(images=int(self.corpus_config["images"]), seed=cseed, size=size, profile="refcoco")
        position = {i: k for k, i in enumerate(self.ids)}
        out = {}
        for i in tqdm(ids, desc="dense masks", unit="img", leave=False, disable=None):
            objs = make_scene_refcoco(np.random.default_rng([cseed, CORPUS_STREAM, i - 1]), scfg)
            recorded = self.objects[position[i]]
            if len(objs) != len(recorded) or any(abs(o.cx - r["cx"]) > 1e-6 for o, r in zip(objs, recorded)):
                raise ValueError(f"corpus image {i}: its scene does not rebuild from the corpus stream")
            out[i] = torch.from_numpy(np.stack([o.mask.reshape(g, size // g, g, size // g).mean(axis=(1, 3)).reshape(-1)
                                                for o in objs]).astype(np.float32))
        return out

    def dense_batch(self, index: np.ndarray, rng: np.random.Generator, negatives: np.random.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The regions of the scenes ``index``: (R, G) patch weights, (R,) their scene's row in the batch,
        the batch's distinct phrases tokenised (U, T) and each region's phrase among them (R,). Given a
        ``negatives`` stream, each region's phrase minimally changed (:func:`dense_negative`) joins the phrases."""
        rows, owner, phrases, extra = [], [], [], []
        for b, i in enumerate(index):
            lo, hi = self.dense_spans[int(i)]
            for r in range(lo, hi):
                rows.append(r)
                owner.append(b)
                phrases.append(self.dense_texts[r][int(rng.integers(2))])
                if negatives is not None and (neg := dense_negative(phrases[-1], self.dense_objects[r], negatives)):
                    extra.append(neg)
        unique = sorted(set(phrases) | set(extra))
        column = {t: j for j, t in enumerate(unique)}
        label = torch.tensor([column[t] for t in phrases])
        tokens = open_clip.tokenize(unique, context_length=self.context_length)
        return self.dense_weights[rows], torch.tensor(owner), tokens, label

    def region_batch(self, n: int, rng: np.random.Generator, negatives: np.random.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """``n`` region pairs drawn at random, with a hard negative phrase of each where it has one."""
        from .negatives import hard_negative

        index = rng.integers(len(self.region_images), size=n)
        chosen = [int(rng.integers(2)) for _ in index]
        tokens = torch.stack([self.region_captions[r][c] for r, c in zip(index, chosen)])
        negs = []
        if negatives is not None:
            negs = [t for r, c in zip(index, chosen)
                    if (t := hard_negative(self.region_texts[r][c], self.objects[self.region_owner[r]], negatives))]
        return self.region_images[index].float(), tokens, negs

    def batch(self, index: np.ndarray, rng: np.random.Generator, negatives: np.random.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Images, one of each image's captions (drawn with ``rng``) and, given a ``negatives`` stream, a hard
        negative of each chosen caption (rows of images without one are left out: (M <= B, T))."""
        chosen = [int(rng.integers(len(self.captions[i]))) for i in index]
        tokens = torch.stack([self.captions[i][c] for i, c in zip(index, chosen)])
        neg = None
        if negatives is not None:
            from .negatives import hard_negative

            if self.objects is None:
                raise ValueError("hard negatives need a caption corpus that records each image's objects")
            texts = [t for i, c in zip(index, chosen)
                     if (t := hard_negative(self.texts[i][c], self.objects[i], negatives)) is not None]
            neg = open_clip.tokenize(texts, context_length=self.context_length) if texts else None
        return self.images[index], tokens, neg


def contrastive_loss(model: open_clip.CLIP, images: torch.Tensor, tokens: torch.Tensor,
                     negatives: torch.Tensor | None = None, image_features: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE; ``negatives`` (hard negative captions) join the captions an image is told apart
    from (image -> text), not the images a caption is (text -> image). ``image_features``: the images'
    embeddings already computed (unnormalised), instead of encoding ``images`` again."""
    img = (model.encode_image(images, normalize=True) if image_features is None
           else F.normalize(image_features, dim=-1))
    txt = model.encode_text(tokens if negatives is None else torch.cat([tokens, negatives]), normalize=True)
    scale = model.logit_scale.exp().clamp(max=100)
    logits = scale * img @ txt.T  # (B, B [+ M])
    labels = torch.arange(len(images))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, : len(images)].T, labels))


SUPERLATIVE_MARGIN = 8.0  # px of the 128-px corpus image, as the captions' extremes ("the left one") need
P_SUPERLATIVE = 0.3


def superlative_words(o, objs) -> list[str]:
    """The superlatives that hold of ``o`` among the objects of its shape (two or more), each by a clear margin."""
    from risclip.data.alttext import SUPERLATIVES

    group = [p for p in objs if p.shape == o.shape]
    if len(group) < 2:
        return []
    out = []
    for (axis, sign), word in SUPERLATIVES.items():
        key = [sign * (p.cx if axis == 0 else p.cy) for p in group]
        mine = sign * (o.cx if axis == 0 else o.cy)
        others = [k for p, k in zip(group, key) if p is not o]
        if mine - max(others) >= SUPERLATIVE_MARGIN:
            out.append(word)
    return out


def dense_negative(phrase: str, obj: dict, rng: np.random.Generator) -> str | None:
    """``phrase`` minimally changed so that it is false of its object: a place or superlative word flipped
    (left/right, top/bottom), else its size word flipped, else one shape or colour word changed."""
    from .negatives import OPPOSITES, hard_negative

    words = phrase.split()
    for j, w in enumerate(words):
        if w in OPPOSITES and w not in ("above", "below", "over", "under"):
            return " ".join(words[:j] + [OPPOSITES[w]] + words[j + 1:])
    for j, w in enumerate(words):
        if w in ("small", "large"):
            return " ".join(words[:j] + ["large" if w == "small" else "small"] + words[j + 1:])
    return hard_negative(phrase, [obj], rng)


def sincos_position_embedding(h: int, w: int, width: int) -> torch.Tensor:
    """(1 + h*w, width) fixed 2-D sine-cosine position codes (half the channels for y, half for x, each half
    sines then cosines over geometric frequencies, as in MAE); the class token's row is zero."""
    if width % 4:
        raise ValueError(f"sine-cosine position codes need a width divisible by 4, not {width}")
    quarter = width // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    parts = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        angle = pos[:, None] * omega[None, :]
        parts += [angle.sin(), angle.cos()]
    grid = torch.cat(parts, dim=1).float()
    return torch.cat([torch.zeros(1, width), grid])


def dense_phrase(o, size: int, rng: np.random.Generator, superlatives: list[str] | None = None) -> str:
    """An object's phrase for the dense loss: the scene captions' phrase (shape; colour, size, stripes
    sometimes), followed now and then (as often as the captions place an object) by its place in the image;
    or, given the ``superlatives`` that hold of it, now and then one of them ("the leftmost square")."""
    from risclip.data.alttext import P_PLACE, _phrase, place_word

    if superlatives and rng.random() < P_SUPERLATIVE:
        return f"the {superlatives[int(rng.integers(len(superlatives)))]} {o.shape}"
    text = _phrase(o, rng)
    place = place_word(o, size)
    if place is not None and rng.random() < P_PLACE:
        text += f" {place}"
    return text


def image_and_patches(model: open_clip.CLIP, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The image embedding and every patch token in the shared space (through ln_post and proj), from one
    forward pass of the vision tower: (B, E), (B, N, E)."""
    visual = model.visual
    before = visual.output_tokens
    visual.output_tokens = True
    try:
        pooled, tokens = visual(images)
    finally:
        visual.output_tokens = before
    return pooled, tokens @ visual.proj if visual.proj is not None else tokens


def dense_region_loss(model: open_clip.CLIP, patches: torch.Tensor, weights: torch.Tensor, owner: torch.Tensor,
                      tokens: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each region's embedding (the weighted mean of its scene's patch tokens) against the
    batch's distinct phrases; the same learned temperature as the contrastive loss."""
    w = weights / weights.sum(1, keepdim=True).clamp_min(1e-6)
    region = F.normalize(torch.einsum("rn,rne->re", w, patches[owner]), dim=-1)
    text = model.encode_text(tokens, normalize=True)
    scale = model.logit_scale.exp().clamp(max=100)
    return F.cross_entropy(scale * region @ text.T, label)


@torch.no_grad()
def retrieval_accuracy(model: open_clip.CLIP, pairs: CaptionPairs, limit: int = 256) -> float:
    """Top-1 image -> caption accuracy over up to ``limit`` images, their first (full) caption each."""
    model.eval()
    n = min(limit, len(pairs))
    img = model.encode_image(pairs.images[:n], normalize=True)
    txt = model.encode_text(torch.stack([c[0] for c in pairs.captions[:n]]), normalize=True)
    return 100.0 * ((img @ txt.T).argmax(1) == torch.arange(n)).float().mean().item()


def ensure_corpus(cfg: PretrainConfig, progress: bool | None = None) -> None:
    if not cfg.corpus_images:
        return
    root = Path(cfg.data_root)
    path = corpus_path(root, cfg.vocabulary)
    if path.is_file() and len(json.loads(path.read_text())["images"]) == cfg.corpus_images:
        return
    tqdm.write(f"generating the caption corpus ({cfg.corpus_images} images) in {path.parent} ...")
    generate_corpus(root, CorpusConfig(images=cfg.corpus_images, vocabulary=cfg.vocabulary), progress=progress)


def _corpus_splits(cfg: PretrainConfig) -> tuple[dict[str, set[int]], Path]:
    root = Path(cfg.data_root)
    if cfg.corpus_images:
        n = len(json.loads(corpus_path(root, cfg.vocabulary).read_text())["images"])
        cut = n - max(1, int(round(n * cfg.holdout_fraction)))
        return ({"train": set(range(1, cut + 1)), "val": set(range(cut + 1, n + 1))},
                root / corpus_dir(cfg.vocabulary) / "images")
    return _split_image_ids(root), root / "images"


def held_out_pairs(cfg: PretrainConfig, image_size: int) -> CaptionPairs:
    """The images retrieval and the probes are scored on (the corpus's held-out images; v1: RIS val)."""
    splits, image_dir = _corpus_splits(cfg)
    return CaptionPairs(cfg.captions_file(), image_dir, splits.get("val", set()), image_size, cfg.context_length)


def _pairs(cfg: PretrainConfig, image_size: int) -> tuple[CaptionPairs, CaptionPairs]:
    splits, image_dir = _corpus_splits(cfg)
    captions = cfg.captions_file()
    train = CaptionPairs(captions, image_dir, splits.get("train", set()), image_size, cfg.context_length)
    if cfg.region_fraction > 0:
        files = {i["id"]: i["file_name"] for i in json.loads(captions.read_text())["images"]}
        train.add_regions(image_dir, files, image_size, cfg.seed)
    if cfg.dense_weight > 0:
        train.add_dense(image_size, patch_size(cfg.clip_model), cfg.seed, image_dir.parent,
                        superlatives=cfg.dense_superlatives)
    return train, held_out_pairs(cfg, image_size)


def _train(model: open_clip.CLIP, train: CaptionPairs, cfg: PretrainConfig, steps: int, lr: float,
           rng: np.random.Generator, desc: str, progress: bool | None) -> float:
    """``steps`` AdamW steps of the contrastive loss (warm-up then cosine); returns the last loss."""
    model.requires_grad_(True)
    if cfg.pos_embed == "sincos":
        model.visual.positional_embedding.requires_grad_(False)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, cfg.warmup_fraction))
    order = np.empty(0, dtype=np.int64)
    # the negatives' draws come from a stream of their own, so a config without them draws exactly as before
    neg_rng = np.random.default_rng([cfg.seed, steps, 1]) if cfg.hard_negatives else None
    region_rng = np.random.default_rng([cfg.seed, steps, 2])
    dense_rng = np.random.default_rng([cfg.seed, steps, 3])
    dense_neg_rng = np.random.default_rng([cfg.seed, steps, 4]) if cfg.dense_negatives else None
    bar = tqdm(range(steps), desc=desc, unit="step", disable=None if progress is None else not progress)
    loss = torch.tensor(math.nan)
    for _ in bar:
        if len(order) < cfg.batch_size:  # (at most a batch of scenes is taken per step)
            order = np.concatenate([order, rng.permutation(len(train))])
        n_regions = int(round(cfg.batch_size * cfg.region_fraction))
        n_scenes = cfg.batch_size - n_regions
        index, order = order[:n_scenes], order[n_scenes:]
        images, tokens, negatives = train.batch(index, rng, neg_rng)
        if n_regions:
            r_images, r_tokens, r_negs = train.region_batch(n_regions, region_rng, neg_rng)
            images, tokens = torch.cat([images, r_images]), torch.cat([tokens, r_tokens])
            if r_negs:
                r_neg = open_clip.tokenize(r_negs, context_length=train.context_length)
                negatives = r_neg if negatives is None else torch.cat([negatives, r_neg])
        if cfg.dense_weight > 0:
            n = len(index)  # the dense regions come from the batch's scenes, not from its region pairs
            pooled, patches = image_and_patches(model, images)
            loss = contrastive_loss(model, images, tokens, negatives, image_features=pooled)
            loss = loss + cfg.dense_weight * dense_region_loss(model, patches[:n], *train.dense_batch(index, dense_rng, dense_neg_rng))
        else:
            loss = contrastive_loss(model, images, tokens, negatives)
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"non-finite contrastive loss at step {bar.n} ({desc})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return loss.item()


def pretrain(cfg: PretrainConfig, progress: bool | None = None, force: bool = False) -> tuple[Path, dict]:
    """Train (or reuse from cache) the proxy CLIP; returns its checkpoint path and summary. A v2 config
    makes its caption corpus first where it is absent or holds another number of images. A config with
    ``hires_steps`` first trains (or reuses) its low-resolution phase, cached as a config of its own, then
    fine-tunes it at ``hires_size`` (position embeddings interpolated by open_clip's loader)."""
    ensure_corpus(cfg, progress)
    path = cfg.cache_path()
    summary_path = path.with_suffix(".json")
    if path.is_file() and summary_path.is_file() and not force:
        return path, json.loads(summary_path.read_text())
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    if cfg.hires_steps:
        base_path, base = pretrain(dataclasses.replace(cfg, hires_steps=0), progress=progress)
        size = cfg.hires_size
        train, val = _pairs(cfg, size)
        model = create_clip(cfg.clip_model, str(base_path), size)
        rng = np.random.default_rng([cfg.seed, size])  # a stream of its own: the base phase's is spent
        loss = _train(model, train, cfg, cfg.hires_steps, cfg.hires_lr, rng, f"proxy CLIP at {size} px", progress)
        extra = {"base_checkpoint": base_path.name, "base_seconds": base["seconds"],
                 "base_val_retrieval_top1": base["val_retrieval_top1"], "base_probes": base.get("probes", {})}
    else:
        train, val = _pairs(cfg, cfg.image_size)
        model = create_clip(cfg.clip_model, None, cfg.image_size)  # random init; _train unfreezes it
        if cfg.pos_embed == "sincos":
            with torch.no_grad():
                model.visual.positional_embedding.copy_(sincos_position_embedding(*model.visual.grid_size,
                                                                                 model.visual.conv1.out_channels))
        loss = _train(model, train, cfg, cfg.steps, cfg.lr, rng, "proxy CLIP", progress)
        extra = {}
    seconds = time.perf_counter() - t0 + extra.get("base_seconds", 0.0)
    summary = {"config": dataclasses.asdict(cfg), "final_loss": loss, "seconds": seconds,
               "val_retrieval_top1": retrieval_accuracy(model, val), "train_images": len(train),
               "val_images": len(val), **extra}
    if val.objects is not None:
        from bench.proxy.clip_probes import run_probes

        summary["probes"] = run_probes(model, val, cfg.context_length, cfg.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict()}, tmp)
    tmp.replace(path)
    summary_path.write_text(json.dumps(summary, indent=2))
    return path, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pretrain_clip", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=PretrainConfig.data_root, help="SynthRef folder (default %(default)s)")
    p.add_argument("--model", default=PretrainConfig.clip_model, help="open_clip model name (default %(default)s)")
    p.add_argument("--image-size", type=int, default=PretrainConfig.image_size)
    p.add_argument("--steps", type=int, default=PretrainConfig.steps, help="optimiser steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=PretrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=PretrainConfig.lr)
    p.add_argument("--seed", type=int, default=PretrainConfig.seed)
    p.add_argument("--corpus-images", type=int, default=PretrainConfig.corpus_images,
                   help="v2: pre-train on a caption corpus of this many images of its own (made on demand); "
                        "0 (default): v1, the RIS train images' captions")
    p.add_argument("--force", action="store_true", help="train again even if a cached checkpoint exists")
    a = p.parse_args(argv)
    if not a.corpus_images and not (Path(a.data_root) / "synthref" / "captions.json").is_file():
        p.error(f"{a.data_root}: no synthref/captions.json; generate it with python -m risclip.data.synthref --out {a.data_root}")
    if a.steps < 1 or a.batch_size < 2:
        p.error("--steps must be >= 1 and --batch-size >= 2")
    cfg = PretrainConfig(data_root=a.data_root, clip_model=a.model, image_size=a.image_size, steps=a.steps,
                         batch_size=a.batch_size, lr=a.lr, seed=a.seed, corpus_images=a.corpus_images)
    try:
        path, summary = pretrain(cfg, force=a.force)
        create_clip(cfg.clip_model, str(path), cfg.image_size)  # the checkpoint loads by the user's route
    except (BackboneError, ReferError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"proxy CLIP: {path}\n  held-out image->caption top-1: {summary['val_retrieval_top1']:.1f}% "
          f"({summary['val_images']} images), final loss {summary['final_loss']:.3f}, {summary['seconds']:.0f} s")
    probes = summary.get("probes", {})
    for name in ("attribute", "place", "relation"):
        if f"{name}_probe" in probes:
            print(f"  {name} probe: true caption preferred {probes[f'{name}_probe']:.1f}% of "
                  f"{probes[f'{name}_probe_n']:.0f} (chance 50%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
