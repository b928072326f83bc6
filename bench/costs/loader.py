"""Does the data keep up? The refer loader's rate at the paper shape on COCO-like JPEGs.

:func:`write_coco_like` writes a RefCOCOg-UMD-shaped dataset (``instances.json``, ``refs(umd).p``) whose
images are COCO-sized JPEGs (640 x 480, quality 90, textured so that they compress like photographs, about
as large as COCO's files) with polygon masks and sentences. :func:`loader_rate` runs the engine's own
training loader over it (``ReferDataset``: JPEG decode, resize to the model's input, mask rasterised and
resized, sentence tokenised; ``refer_collate``) and gives images per second, for a number of worker
processes. :func:`workers_needed` turns a measured training rate into the loader workers that feed it.
"""

from __future__ import annotations

import json
import math
import pickle
import time
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

from risclip.data.refer import ReferDataset, refer_collate

# workers measured: on the CPU the main process and two workers; on a GPU machine up to 8 (it has 16 cores)
LOADER_WORKERS = {"cpu": (0, 2), "cuda": (0, 4, 8)}
WORDS = ("the", "man", "woman", "red", "shirt", "left", "right", "dog", "chair", "table", "small", "large", "blue",
         "behind", "next", "to", "car", "white", "black", "holding", "umbrella", "sitting", "on", "bench")


def write_coco_like(root: Path, images: int = 64, size: tuple[int, int] = (640, 480), seed: int = 0) -> Path:
    """A RefCOCOg-UMD-shaped dataset under ``root`` (``root/refcocog``, ``root/images``) with ``images``
    JPEGs, one ref of two sentences per image. Returns ``root``; an existing one is reused."""
    root = Path(root)
    ds = root / "refcocog"
    if (ds / "refs(umd).p").is_file():
        return root
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    ds.mkdir(parents=True, exist_ok=True)
    w, h = size
    imgs, anns, refs = [], [], []
    for i in range(1, images + 1):
        # smooth colour fields plus noise: JPEG sizes near a photograph's (a flat image would decode too fast)
        low = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3)).astype(np.uint8)
        base = np.asarray(Image.fromarray(low).resize((w, h), Image.BILINEAR), dtype=np.int16)
        pixels = np.clip(base + rng.normal(0, 18, (h, w, 3)), 0, 255).astype(np.uint8)
        name = f"COCO_train2014_{i:012d}.jpg"
        Image.fromarray(pixels).save(root / "images" / name, quality=90)
        imgs.append({"id": i, "file_name": name, "height": h, "width": w})
        cx, cy, r = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, rng.uniform(0.1, 0.25) * h
        poly = [float(v) for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)
                for v in (cx + r * np.cos(a), cy + r * np.sin(a))]
        anns.append({"id": 1000 + i, "image_id": i, "category_id": 1, "segmentation": [poly], "area": math.pi * r * r,
                     "bbox": [cx - r, cy - r, 2 * r, 2 * r], "iscrowd": 0})
        sents = [{"sent_id": 2 * i + k, "sent": " ".join(rng.choice(WORDS, 9)), "tokens": []} for k in range(2)]
        refs.append({"ref_id": i, "ann_id": 1000 + i, "image_id": i, "split": "train", "category_id": 1,
                     "file_name": name.replace(".jpg", f"_{1000 + i}.jpg"), "sentences": sents,
                     "sent_ids": [s["sent_id"] for s in sents]})
    (ds / "instances.json").write_text(json.dumps({"images": imgs, "annotations": anns,
                                                   "categories": [{"id": 1, "name": "thing"}]}))
    with open(ds / "refs(umd).p", "wb") as f:
        pickle.dump(refs, f)
    return root


def loader_rate(root: Path, workers: int, image_size: int = 416, batch_size: int = 32, batches: int = 8,
                context_length: int = 77) -> dict:
    """Images per second of the training loader over :func:`write_coco_like` data with ``workers``
    processes (0: in the main process): the time for ``batches`` batches after the first (worker start-up
    and the first batch are left out), the dataset cycled as needed."""
    ds = ReferDataset(root, "refcocog", "umd", "train", Path(root) / "images", image_size=image_size,
                      context_length=context_length)
    n = batch_size * (batches + 1)
    order = [i % len(ds) for i in range(n)]
    opts = {"num_workers": workers}
    if workers:
        opts.update(prefetch_factor=2, persistent_workers=False)
    loader = DataLoader(ds, batch_size=batch_size, sampler=order, collate_fn=refer_collate, **opts)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    seen = sum(b["image"].shape[0] for b in it)
    seconds = time.perf_counter() - t0
    rate = seen / seconds
    return {"workers": workers, "images": seen, "seconds": seconds, "images_per_s": rate,
            "images_per_s_per_worker": rate / max(1, workers), "image_size": image_size,
            "jpeg_bytes_mean": float(np.mean([p.stat().st_size for p in (Path(root) / "images").glob("*.jpg")]))}


def workers_needed(train_images_per_s: float, per_worker_images_per_s: float, headroom: float = 1.25) -> int:
    """Loader workers that keep a training rate fed, with ``headroom`` (25%) for jitter."""
    if per_worker_images_per_s <= 0:
        raise ValueError("per-worker rate must be positive")
    return max(1, math.ceil(headroom * train_images_per_s / per_worker_images_per_s))
