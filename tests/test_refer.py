import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from risclip.data.refer import ReferDataset, ReferError, annotation_mask, load_refs, refer_collate
from risclip.data.transforms import ResizeNormalize


def test_polygon_decoding():
    m = annotation_mask([[5, 2, 15, 2, 15, 12, 5, 12]], 20, 30)
    assert m.shape == (20, 30) and m.dtype == bool
    ys, xs = np.nonzero(m)
    # pycocotools rasterises the closed rectangle [5, 15] x [2, 12]
    assert xs.min() == 5 and ys.min() == 2
    assert xs.max() in (14, 15) and ys.max() in (11, 12)
    assert 100 <= m.sum() <= 121


def test_uncompressed_and_compressed_rle_decoding():
    rle = {"size": [16, 16], "counts": [32, 16, 208]}
    m = annotation_mask(rle, 16, 16)
    expected = np.zeros((16, 16), bool)
    expected[:, 2] = True  # runs are column-major
    assert np.array_equal(m, expected)
    from pycocotools import mask as mask_utils

    compressed = mask_utils.encode(np.asfortranarray(expected.astype(np.uint8)))
    compressed["counts"] = compressed["counts"].decode("ascii")  # as it appears in JSON
    assert np.array_equal(annotation_mask(compressed, 16, 16), expected)


def test_reads_refcoco_layout(refcoco_root):
    root, image_root = refcoco_root
    ds = ReferDataset(root, "refcoco", "unc", "train", image_root, image_size=32, keep_original_mask=True)
    assert len(ds) == 2  # one sample per sentence
    s = ds[0]
    assert s["image"].shape == (3, 32, 32)
    assert s["tokens"].dtype == torch.long and s["tokens"].shape == (77,)
    assert s["mask"].shape == (32, 32) and set(s["mask"].unique().tolist()) <= {0.0, 1.0}
    assert s["meta"]["orig_h"] == 20 and s["meta"]["orig_w"] == 30
    assert s["meta"]["text"] == "the grey box" and s["meta"]["ref_id"] == 1 and s["meta"]["sent_id"] == 1
    assert s["orig_mask"].shape == (20, 30) and s["orig_mask"].sum() >= 100
    batch = refer_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 32, 32) and len(batch["meta"]) == 2 and len(batch["orig_mask"]) == 2
    rle_ds = ReferDataset(root, "refcoco", "unc", "testA", image_root, image_size=16)
    assert rle_ds[0]["mask"].sum() == 16


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    target = tmp_path / "pwned.txt"

    class Evil:
        def __reduce__(self):
            return (open, (str(target), "w"))

    bad = tmp_path / "refs(unc).p"
    bad.write_bytes(pickle.dumps([{"ref_id": 1, "payload": Evil()}], protocol=2))
    with pytest.raises(ReferError, match=r"refs\(unc\)\.p.*refused global"):
        load_refs(bad)
    assert not target.exists()


def test_plain_containers_and_sets_are_admitted(tmp_path):
    p = tmp_path / "refs.p"
    p.write_bytes(pickle.dumps([{"a": (1, 2.5, "x", None, True), "s": {1, 2}}], protocol=2))
    assert load_refs(p) == [{"a": (1, 2.5, "x", None, True), "s": {1, 2}}]


def test_missing_data_root(tmp_path):
    with pytest.raises(ReferError, match="nowhere.*data_root does not exist"):
        ReferDataset(tmp_path / "nowhere", "refcoco", "unc", "train", tmp_path)


def test_missing_instances(refcoco_root):
    root, image_root = refcoco_root
    (root / "refcoco" / "instances.json").unlink()
    with pytest.raises(ReferError, match=r"instances\.json.*not found"):
        ReferDataset(root, "refcoco", "unc", "train", image_root)


def test_missing_refs_file(refcoco_root):
    root, image_root = refcoco_root
    with pytest.raises(ReferError, match=r"refs\(google\)\.p: refs file not found"):
        ReferDataset(root, "refcoco", "google", "train", image_root)


def test_unknown_split(refcoco_root):
    root, image_root = refcoco_root
    with pytest.raises(ReferError, match="unknown split 'test' for refcoco.*testA, testB"):
        ReferDataset(root, "refcoco", "unc", "test", image_root)


def _rewrite_refs(root: Path, **changes):
    path = root / "refcoco" / "refs(unc).p"
    refs = pickle.loads(path.read_bytes())
    refs[0].update(changes)
    path.write_bytes(pickle.dumps(refs, protocol=2))


def test_ref_with_absent_annotation(refcoco_root):
    root, image_root = refcoco_root
    _rewrite_refs(root, ann_id=999)
    with pytest.raises(ReferError, match="ref 1 names ann_id 999"):
        ReferDataset(root, "refcoco", "unc", "train", image_root)


def test_ref_with_absent_image(refcoco_root):
    root, image_root = refcoco_root
    _rewrite_refs(root, image_id=777)
    with pytest.raises(ReferError, match="ref 1 names image_id 777"):
        ReferDataset(root, "refcoco", "unc", "train", image_root)


def test_unreadable_and_missing_image(refcoco_root):
    root, image_root = refcoco_root
    ds = ReferDataset(root, "refcoco", "unc", "train", image_root)
    path = image_root / "COCO_train2014_000000000001.jpg"
    path.write_bytes(b"this is not a jpeg")
    with pytest.raises(ReferError, match="COCO_train2014_000000000001.jpg: unreadable image"):
        ds[0]
    path.unlink()
    with pytest.raises(ReferError, match="COCO_train2014_000000000001.jpg: image not found"):
        ds[0]


def test_errors_are_one_line(refcoco_root):
    root, image_root = refcoco_root
    with pytest.raises(ReferError) as e:
        ReferDataset(root, "refcoco", "unc", "val2", image_root)
    assert "\n" not in str(e.value)


def test_transform_keeps_masks_binary():
    t = ResizeNormalize(8)
    m = np.zeros((5, 7), bool)
    m[1:4, 2:5] = True
    out = t.mask(m)
    assert out.shape == (8, 8) and set(out.unique().tolist()) == {0.0, 1.0}


def test_parsed_files_are_shared_but_a_changed_file_is_read_again(refcoco_root):
    root, image_root = refcoco_root
    refs_path = root / "refcoco" / "refs(unc).p"
    assert load_refs(refs_path) is load_refs(refs_path)  # train, val and test datasets parse it once
    assert len(ReferDataset(root, "refcoco", "unc", "train", image_root)) == 2
    _rewrite_refs(root, sentences=[{"raw": "x", "sent": "x", "tokens": ["x"], "sent_id": 9}])
    assert len(ReferDataset(root, "refcoco", "unc", "train", image_root)) == 1
