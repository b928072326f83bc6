"""RefCOCO / RefCOCO+ / RefCOCOg (and SynthRef) in the `refer` on-disk layout.

Layout::

    <data_root>/<dataset>/instances.json     COCO format: images, annotations (segmentations), categories
    <data_root>/<dataset>/refs(<split_by>).p  pickled list of refs
    <image_root>/<file_name>                 images named by instances.json's ``file_name``

Each ref is a dict with ``ref_id, ann_id, image_id, split, category_id, sentences`` where every
sentence is ``{raw, sent, tokens, sent_id}`` (SynthRef adds ``kind``). Every *sentence* is one sample.

The refs pickle is untrusted input (it comes from wherever the user downloaded it). It is read by
:class:`RestrictedUnpickler`, which builds plain containers and scalars only: any pickle that names a
global (a class or a function, the only way a pickle can run code) is refused before anything runs.
Python 2 pickles (the official refs files) load too; their byte strings are decoded as UTF-8.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

from .transforms import ResizeNormalize

# (dataset, split_by) -> the splits that exist for it.
SPLITS: dict[tuple[str, str], tuple[str, ...]] = {
    ("refcoco", "unc"): ("train", "val", "testA", "testB"),
    ("refcoco", "google"): ("train", "val", "test"),
    ("refcoco+", "unc"): ("train", "val", "testA", "testB"),
    ("refcocog", "umd"): ("train", "val", "test"),
    ("refcocog", "google"): ("train", "val"),
    ("synthref", "synth"): ("train", "val", "test"),
}

# Globals a refs pickle may name: builtin containers that protocol 2 pickles through a reduce.
_ALLOWED_GLOBALS = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
}


class ReferError(ValueError):
    """Bad input to the loader; the message is one line that names the file and what is wrong."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits plain containers and scalars only (see module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return set if name == "set" else frozenset
        raise pickle.UnpicklingError(f"refused global {module}.{name}: only plain containers and scalars are allowed")


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def load_refs(path: str | Path) -> list[dict]:
    """Read a refs pickle safely; raises :class:`ReferError` for a missing, malformed or unsafe file.

    Parsed once per process while the file is unchanged (train, val and test datasets share it);
    callers must not mutate the result."""
    path = Path(path)
    if not path.is_file():
        raise ReferError(f"{path}: refs file not found")
    return _parse_refs(*_file_key(path))


@functools.lru_cache(maxsize=4)
def _parse_refs(resolved: str, mtime_ns: int, size: int) -> list[dict]:
    path = Path(resolved)
    try:
        with open(path, "rb") as f:
            refs = RestrictedUnpickler(io.BytesIO(f.read()), encoding="utf-8", errors="replace").load()
    except pickle.UnpicklingError as e:
        raise ReferError(f"{path}: unsafe or corrupt refs pickle ({e})") from None
    except Exception as e:  # truncated files raise EOFError, garbage raises many kinds
        raise ReferError(f"{path}: cannot read refs pickle ({type(e).__name__}: {e})") from None
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise ReferError(f"{path}: refs pickle must hold a list of dicts, got {type(refs).__name__}")
    return refs


def load_instances(path: str | Path) -> dict:
    """Parse instances.json (cached like :func:`load_refs`; callers must not mutate the result)."""
    path = Path(path)
    if not path.is_file():
        raise ReferError(f"{path}: instances.json not found")
    return _parse_instances(*_file_key(path))


@functools.lru_cache(maxsize=4)
def _parse_instances(resolved: str, mtime_ns: int, size: int) -> dict:
    path = Path(resolved)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReferError(f"{path}: cannot parse instances.json ({e})") from None
    for key in ("images", "annotations"):
        if key not in data:
            raise ReferError(f"{path}: instances.json has no '{key}' list")
    return data


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode a COCO segmentation (polygon list, uncompressed or compressed RLE) to a bool (H, W) mask."""
    if isinstance(segmentation, list):  # polygons: [[x1, y1, x2, y2, ...], ...]
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)  # uncompressed RLE
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")
    m = mask_utils.decode(rle)
    if m.ndim == 3:
        m = m.any(axis=2)
    return m.astype(bool)


def default_tokenizer(context_length: int = 77) -> Callable[[Sequence[str]], torch.Tensor]:
    """open_clip's BPE tokenizer (its vocabulary ships inside the package: no network)."""
    import open_clip

    def tokenize(texts: Sequence[str]) -> torch.Tensor:
        return open_clip.tokenize(list(texts), context_length=context_length)

    return tokenize


def _keep(samples: list, max_samples: int | None, sample_order: str) -> list:
    """The sentences a ``max_samples`` cap keeps: the first N in file order (``"first"``), or a fixed draw
    (seed 0) of N kept in file order (``"spread"``): the same subset whatever the training seed."""
    if max_samples is None or max_samples >= len(samples):
        return samples
    if sample_order == "spread":
        keep = np.sort(np.random.default_rng(0).choice(len(samples), size=max_samples, replace=False))
        return [samples[i] for i in keep]
    return samples[:max_samples]


class ReferDataset(Dataset):
    """One sample per sentence of the refs in ``split``.

    A sample is a dict: ``image`` (3, S, S) normalised, ``tokens`` (context_length,) int64,
    ``mask`` (S, S) float in {0, 1}, ``meta`` (ref_id, sent_id, ann_id, image_id, orig_h, orig_w,
    text, kind, file_name) and, with ``keep_original_mask``, ``orig_mask`` (orig_h, orig_w) bool.

    ``transform`` maps (PIL image, bool mask) to tensors; by default a square resize to ``image_size``.
    ``tokenizer`` maps a list of strings to a (N, context_length) tensor; by default open_clip's.
    """

    def __init__(
        self,
        data_root: str | Path,
        dataset: str,
        split_by: str,
        split: str,
        image_root: str | Path,
        *,
        image_size: int = 224,
        tokenizer: Callable[[Sequence[str]], torch.Tensor] | None = None,
        context_length: int = 77,
        transform: Callable[[Image.Image, np.ndarray], tuple[torch.Tensor, torch.Tensor]] | None = None,
        keep_original_mask: bool = False,
        max_samples: int | None = None,
        sample_order: str = "first",
    ) -> None:
        self.data_root = Path(data_root)
        self.dataset, self.split_by, self.split = dataset, split_by, split
        self.image_root = Path(image_root)
        if not self.data_root.is_dir():
            raise ReferError(f"{self.data_root}: data_root does not exist")
        known = SPLITS.get((dataset, split_by))
        if known is not None and split not in known:
            raise ReferError(
                f"{self.data_root / dataset}: unknown split '{split}' for {dataset} ({split_by}); "
                f"valid: {', '.join(known)}"
            )
        if not self.image_root.is_dir():
            raise ReferError(f"{self.image_root}: image_root does not exist")
        ds_dir = self.data_root / dataset
        self.instances_path = ds_dir / "instances.json"
        self.refs_path = ds_dir / f"refs({split_by}).p"
        # Check both files exist before parsing either, so the first error names the missing one.
        for p, what in ((self.instances_path, "instances.json"), (self.refs_path, "refs file")):
            if not p.is_file():
                raise ReferError(f"{p}: {what} not found")
        instances = load_instances(self.instances_path)
        refs = load_refs(self.refs_path)
        self.images = {img["id"]: img for img in instances["images"]}
        self.anns = {ann["id"]: ann for ann in instances["annotations"]}
        self.categories = {c["id"]: c["name"] for c in instances.get("categories", [])}

        split_refs = [r for r in refs if r.get("split") == split]
        if known is None and not split_refs:
            present = sorted({str(r.get("split")) for r in refs})
            raise ReferError(f"{self.refs_path}: no refs in split '{split}'; present: {', '.join(present)}")
        self.refs = split_refs  # every ref of the split, also where max_samples scores only some sentences
        self.samples: list[tuple[dict, dict]] = []
        for ref in split_refs:
            if ref.get("ann_id") not in self.anns:
                raise ReferError(f"{self.refs_path}: ref {ref.get('ref_id')} names ann_id {ref.get('ann_id')}, "
                                 f"absent from {self.instances_path.name}")
            if ref.get("image_id") not in self.images:
                raise ReferError(f"{self.refs_path}: ref {ref.get('ref_id')} names image_id {ref.get('image_id')}, "
                                 f"absent from {self.instances_path.name}")
            for sent in ref.get("sentences", []):
                self.samples.append((ref, sent))
        self.samples = _keep(self.samples, max_samples, sample_order)

        self.transform = transform or ResizeNormalize(image_size)
        self.tokenizer = tokenizer or default_tokenizer(context_length)
        self.keep_original_mask = keep_original_mask

    def limited(self, max_samples: int | None, sample_order: str = "first") -> ReferDataset:
        """A copy that keeps the sentences ``ReferDataset(..., max_samples, sample_order)`` would keep, chosen
        from every sentence of the split (``self.refs``) without reading the files again."""
        out = copy.copy(self)
        out.samples = _keep([(ref, sent) for ref in self.refs for sent in ref.get("sentences", [])],
                            max_samples, sample_order)
        return out

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, image_id: int) -> Path:
        return self.image_root / self.images[image_id]["file_name"]

    def load_image(self, image_id: int) -> Image.Image:
        path = self.image_path(image_id)
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except FileNotFoundError:
            raise ReferError(f"{path}: image not found") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ReferError(f"{path}: unreadable image ({e})") from None

    def ref_mask(self, ref: dict) -> np.ndarray:
        img = self.images[ref["image_id"]]
        ann = self.anns[ref["ann_id"]]
        try:
            return annotation_mask(ann["segmentation"], img["height"], img["width"])
        except Exception as e:
            raise ReferError(f"{self.instances_path}: annotation {ann.get('id')} has a bad segmentation ({e})") from None

    @staticmethod
    def sentence_text(sent: dict) -> str:
        return str(sent.get("sent") or sent.get("raw") or "")

    def __getitem__(self, index: int) -> dict:
        ref, sent = self.samples[index]
        img_info = self.images[ref["image_id"]]
        image = self.load_image(ref["image_id"])
        mask = self.ref_mask(ref)
        if image.size != (mask.shape[1], mask.shape[0]):
            raise ReferError(f"{self.image_path(ref['image_id'])}: image size {image.size} differs from "
                             f"instances.json's {mask.shape[1]}x{mask.shape[0]}")
        image_t, mask_t = self.transform(image, mask)
        text = self.sentence_text(sent)
        sample = {
            "image": image_t,
            "tokens": self.tokenizer([text])[0],
            "mask": mask_t,
            "meta": {
                "ref_id": ref["ref_id"],
                "sent_id": sent.get("sent_id"),
                "ann_id": ref["ann_id"],
                "image_id": ref["image_id"],
                "orig_h": int(img_info["height"]),
                "orig_w": int(img_info["width"]),
                "text": text,
                "kind": sent.get("kind"),
                "file_name": img_info["file_name"],
            },
        }
        if self.keep_original_mask:
            sample["orig_mask"] = torch.from_numpy(mask)
        return sample


def refer_collate(batch: list[dict]) -> dict:
    """Stack tensors of equal size; keep ``meta`` and ``orig_mask`` (sizes differ) as lists."""
    out = {
        "image": torch.stack([b["image"] for b in batch]),
        "tokens": torch.stack([b["tokens"] for b in batch]),
        "mask": torch.stack([b["mask"] for b in batch]),
        "meta": [b["meta"] for b in batch],
    }
    if "orig_mask" in batch[0]:
        out["orig_mask"] = [b["orig_mask"] for b in batch]
    return out
