"""Shared fixtures: tiny data made on the fly (no downloads)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under ``pytest -n 2`` (the README's test command) two workers share 2 cores: each takes one thread, and so do
    # the processes its tests start (they inherit the environment), instead of four threads fighting over two.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from risclip.data.synthref import SynthRefConfig, generate  # noqa: E402

TINY_SYNTHREF = SynthRefConfig(images=40, seed=3, size=64)  # the default (refcoco) profile
TINY_DENSE = SynthRefConfig(images=40, seed=3, size=64, profile="dense")


@pytest.fixture(scope="session")
def synthref_root(tmp_path_factory) -> Path:
    """A 40-image, 64 px SynthRef (refcoco profile) written once per test session."""
    root = tmp_path_factory.mktemp("synthref")
    generate(root, TINY_SYNTHREF, progress=False)
    return root


@pytest.fixture(scope="session")
def dense_root(tmp_path_factory) -> Path:
    """The same with the dense profile."""
    root = tmp_path_factory.mktemp("dense")
    generate(root, TINY_DENSE, progress=False)
    return root


def write_refcoco_like(root: Path, dataset: str = "refcoco", split_by: str = "unc") -> Path:
    """A two-image dataset in the refer layout, with a polygon and an RLE annotation; returns image_root."""
    image_root = root / "train2014"
    image_root.mkdir(parents=True, exist_ok=True)
    ds = root / dataset
    ds.mkdir(parents=True, exist_ok=True)
    images = [
        {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "height": 20, "width": 30},
        {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "height": 16, "width": 16},
    ]
    for img in images:
        Image.fromarray(np.full((img["height"], img["width"], 3), 128, np.uint8)).save(image_root / img["file_name"])
    # ann 10: the rectangle x in [5, 15), y in [2, 12) as a polygon
    poly = [[5, 2, 15, 2, 15, 12, 5, 12]]
    # ann 11: an uncompressed RLE, column-major runs over a 16x16 image: 32 zeros, 16 ones (column 2), rest zeros
    rle = {"size": [16, 16], "counts": [32, 16, 256 - 48]}
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 1, "segmentation": poly, "area": 100.0,
         "bbox": [5, 2, 10, 10], "iscrowd": 0},
        {"id": 11, "image_id": 2, "category_id": 1, "segmentation": rle, "area": 16.0,
         "bbox": [2, 0, 1, 16], "iscrowd": 1},
    ]
    with open(ds / "instances.json", "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": 1, "name": "thing"}]}, f)

    def sent(i: int, text: str) -> dict:
        return {"raw": text, "sent": text, "tokens": text.split(), "sent_id": i}

    refs = [
        {"ref_id": 1, "ann_id": 10, "image_id": 1, "file_name": "COCO_train2014_000000000001_10.jpg",
         "split": "train", "category_id": 1, "sent_ids": [1, 2],
         "sentences": [sent(1, "the grey box"), sent(2, "box on the left")]},
        {"ref_id": 2, "ann_id": 11, "image_id": 2, "file_name": "COCO_train2014_000000000002_11.jpg",
         "split": "testA", "category_id": 1, "sent_ids": [3], "sentences": [sent(3, "the thin stripe")]},
    ]
    with open(ds / f"refs({split_by}).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    return image_root


@pytest.fixture()
def refcoco_root(tmp_path) -> tuple[Path, Path]:
    return tmp_path, write_refcoco_like(tmp_path)


@pytest.fixture(scope="session")
def quick_root(tmp_path_factory) -> Path:
    """The --quick preset's SynthRef and proxy CLIP, made once per test session (real-process tests)."""
    from bench.spine.assets import ensure_backbone, ensure_data
    from bench.spine.presets import DEFAULT_PRESET, get_preset, quick, with_data_root

    root = tmp_path_factory.mktemp("quick") / "data"
    preset = with_data_root(quick(get_preset(DEFAULT_PRESET)), str(root))
    ensure_data(preset, False)
    ensure_backbone(preset, False, None)
    return root
