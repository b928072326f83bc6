"""Pre-train a small proxy CLIP contrastively on SynthRef captions.

No pretrained CLIP can be downloaded on these machines, so the SynthRef ladder starts from a small
open_clip ViT (``RIS-Tiny`` by default) trained here with the symmetric InfoNCE loss. The result is an
ordinary open_clip checkpoint (``{"state_dict": ...}``) loaded through the same ``pretrained=<path>``
route as a user's real checkpoint, cached by the hash of its config and of the captions file.

Two corpora:

* v2 (``corpus_images > 0``, the default preset's): the caption corpus of :mod:`risclip.data.alttext`,
  scenes of its own (none in the RIS splits) with alt-text captions that name places and relations now
  and then. Its last 5% of images are held out for the report: retrieval top-1, an attribute probe and a
  spatial probe (:mod:`bench.clip_probes`). It is pre-trained at ``image_size`` (64 px by default) and
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

from risclip.backbone import BackboneError, create_clip
from risclip.data.alttext import CORPUS_DIR, CorpusConfig, corpus_path, generate_corpus
from risclip.data.refer import ReferError, load_refs
from risclip.data.transforms import ResizeNormalize
from risclip.engine import warmup_cosine


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

    def captions_file(self) -> Path:
        root = Path(self.data_root)
        return corpus_path(root) if self.corpus_images else root / "synthref" / "captions.json"

    def cache_path(self) -> Path:
        captions = self.captions_file()
        data_hash = hashlib.sha256(captions.read_bytes()).hexdigest()[:12] if captions.is_file() else "nodata"
        # v1 configs hash exactly the fields they always had, so cached v1 proxies keep their names
        v2_only = () if self.corpus_images else ("corpus_images", "holdout_fraction")
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "data_root" and k not in v2_only}
        cfg_hash = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
        return Path(self.data_root) / "proxy_clip" / f"{self.clip_model}-{cfg_hash}-{data_hash}.pt"


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
        texts: dict[int, list[str]] = {i: [] for i in self.ids}
        for a in caps["annotations"]:
            if a["image_id"] in texts:
                texts[a["image_id"]].append(a["caption"])
        self.captions = [open_clip.tokenize(texts[i], context_length=context_length) for i in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, index: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.stack([self.captions[i][rng.integers(len(self.captions[i]))] for i in index])
        return self.images[index], tokens


def contrastive_loss(model: open_clip.CLIP, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    img = model.encode_image(images, normalize=True)
    txt = model.encode_text(tokens, normalize=True)
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
    labels = torch.arange(len(images))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


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
    path = corpus_path(root)
    if path.is_file() and len(json.loads(path.read_text())["images"]) == cfg.corpus_images:
        return
    tqdm.write(f"generating the caption corpus ({cfg.corpus_images} images) in {root / CORPUS_DIR} ...")
    generate_corpus(root, CorpusConfig(images=cfg.corpus_images), progress=progress)


def pretrain(cfg: PretrainConfig, progress: bool | None = None, force: bool = False) -> tuple[Path, dict]:
    """Train (or reuse from cache) the proxy CLIP; returns its checkpoint path and summary. A v2 config
    makes its caption corpus first where it is absent or holds another number of images."""
    ensure_corpus(cfg, progress)
    path = cfg.cache_path()
    summary_path = path.with_suffix(".json")
    if path.is_file() and summary_path.is_file() and not force:
        return path, json.loads(summary_path.read_text())
    root = Path(cfg.data_root)
    if cfg.corpus_images:
        n = len(json.loads(corpus_path(root).read_text())["images"])
        cut = n - max(1, int(round(n * cfg.holdout_fraction)))
        splits = {"train": set(range(1, cut + 1)), "val": set(range(cut + 1, n + 1))}
        image_dir = root / CORPUS_DIR / "images"
    else:
        splits = _split_image_ids(root)
        image_dir = root / "images"
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    captions = cfg.captions_file()
    train = CaptionPairs(captions, image_dir, splits.get("train", set()), cfg.image_size, cfg.context_length)
    val = CaptionPairs(captions, image_dir, splits.get("val", set()), cfg.image_size, cfg.context_length)
    model = create_clip(cfg.clip_model, None, cfg.image_size)  # random init; unfreeze it for pre-training
    model.requires_grad_(True)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.steps, cfg.warmup_fraction))
    order = np.empty(0, dtype=np.int64)
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="proxy CLIP", unit="step", disable=None if progress is None else not progress)
    for _ in bar:
        if len(order) < cfg.batch_size:
            order = np.concatenate([order, rng.permutation(len(train))])
        index, order = order[: cfg.batch_size], order[cfg.batch_size:]
        images, tokens = train.batch(index, rng)
        loss = contrastive_loss(model, images, tokens)
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"non-finite contrastive loss at step {bar.n}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    summary = {"config": dataclasses.asdict(cfg), "final_loss": loss.item(), "seconds": time.perf_counter() - t0,
               "val_retrieval_top1": retrieval_accuracy(model, val), "train_images": len(train),
               "val_images": len(val)}
    if val.objects is not None:
        from .clip_probes import run_probes

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
