import hashlib
import json
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from risclip.data.refer import ReferDataset, annotation_mask
from risclip.data.synthref import COLOURS, KINDS, POSITIONS, RELATIONS, SynthRefConfig, generate, main

from .conftest import TINY_SYNTHREF


def _load(root):
    inst = json.loads((root / "synthref" / "instances.json").read_text())
    refs = pickle.loads((root / "synthref" / "refs(synth).p").read_bytes())
    return inst, refs


def test_drawn_objects_equal_decoded_masks(synthref_root):
    """Each annotation's decoded polygon covers exactly the pixels painted in the object's colour."""
    inst, _ = _load(synthref_root)
    images = {i["id"]: i for i in inst["images"]}
    for ann in inst["annotations"]:
        info = images[ann["image_id"]]
        pixels = np.asarray(Image.open(synthref_root / "images" / info["file_name"]), dtype=np.float32)
        mask = annotation_mask(ann["segmentation"], info["height"], info["width"])
        assert mask.sum() == pytest.approx(ann["area"])
        colour = np.array(COLOURS[ann["attributes"]["colour"]], np.float32)
        dist = np.minimum(np.linalg.norm(pixels - colour, axis=2), np.linalg.norm(pixels - 0.72 * colour, axis=2))
        assert (dist[mask] < 45).mean() > 0.97, ann["id"]
        # the one-pixel ring around the object is background, not the object's colour
        ring = np.zeros_like(mask)
        ys, xs = np.nonzero(mask)
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ring[np.clip(ys + dy, 0, info["height"] - 1), np.clip(xs + dx, 0, info["width"] - 1)] = True
        ring &= ~mask
        assert (dist[ring] < 45).mean() < 0.2, ann["id"]


def _parse(text):
    words = text.split()
    assert words[0] == "the"
    words = words[1:]
    pos = words.pop(0) if words[0] in POSITIONS else None
    rel = None
    for r in sorted(RELATIONS, key=len, reverse=True):
        m = re.search(rf"\b{r}\b the ", " ".join(words))
        if m:
            head, tail = " ".join(words)[: m.start()].split(), " ".join(words)[m.end():].split()
            return pos, head, r, tail
    return pos, words, rel, None


def _matches(desc, attrs):
    return all(w in (attrs["shape"], attrs["colour"], attrs["size"]) for w in desc)


def test_every_expression_picks_exactly_its_referent(synthref_root):
    """An independent reader of the sentences resolves each one to its ref's object, and only that one."""
    inst, refs = _load(synthref_root)
    margin = TINY_SYNTHREF.margin_fraction * TINY_SYNTHREF.size
    by_image = {}
    for a in inst["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    kinds = set()
    for ref in refs:
        objs = by_image[ref["image_id"]]
        for s in ref["sentences"]:
            kinds.add(s["kind"])
            pos, head, rel, anchor = _parse(s["sent"])
            cands = [o for o in objs if _matches(head, o["attributes"])]
            if pos:
                axis, sign = POSITIONS[pos]
                key = "cx" if axis == 0 else "cy"
                cands.sort(key=lambda o: sign * o["attributes"][key], reverse=True)
                assert len(cands) >= 2 and sign * (cands[0]["attributes"][key] - cands[1]["attributes"][key]) >= margin
                cands = cands[:1]
                assert s["kind"] == "position"
            elif rel:
                anchors = [o for o in objs if _matches(anchor, o["attributes"])]
                assert len(anchors) == 1, s["sent"]
                assert len(cands) >= 2, s["sent"]  # the relation is needed
                axis, sign = RELATIONS[rel]
                key = "cx" if axis == 0 else "cy"
                cands = [o for o in cands if sign * (o["attributes"][key] - anchors[0]["attributes"][key]) > 0]
                assert s["kind"] == "relation"
            else:
                assert s["kind"] == "attribute"
            assert [o["id"] for o in cands] == [ref["ann_id"]], s["sent"]
    assert kinds == set(KINDS)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_and_seed_dependent(tmp_path):
    cfg = SynthRefConfig(images=6, seed=11, size=64)
    generate(tmp_path / "a", cfg, progress=False)
    generate(tmp_path / "b", cfg, progress=False)
    generate(tmp_path / "c", SynthRefConfig(images=6, seed=12, size=64), progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_loader_reads_synthref_with_kinds_and_splits(synthref_root):
    total = 0
    for split in ("train", "val", "test"):
        ds = ReferDataset(synthref_root, "synthref", "synth", split, synthref_root / "images", image_size=64,
                          context_length=24)
        total += len(ds)
        assert len(ds) > 0
        s = ds[0]
        assert s["meta"]["kind"] in KINDS and s["mask"].sum() > 0
    refs = pickle.loads((synthref_root / "synthref" / "refs(synth).p").read_bytes())
    assert total == sum(len(r["sentences"]) for r in refs)


def test_captions_in_coco_format(synthref_root):
    caps = json.loads((synthref_root / "synthref" / "captions.json").read_text())
    ids = {i["id"] for i in caps["images"]}
    assert len(caps["annotations"]) >= len(ids) == TINY_SYNTHREF.images
    assert all(a["image_id"] in ids and a["caption"].startswith("a ") for a in caps["annotations"])


def test_cli_writes_and_rejects_bad_arguments(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "d"), "--images", "3", "--seed", "1", "--size", "64", "--no-progress"]) == 0
    assert (tmp_path / "d" / "synthref" / "refs(synth).p").is_file()
    assert "3 images" in capsys.readouterr().out
    r = subprocess.run([sys.executable, "-m", "risclip.data.synthref", "--out", str(tmp_path / "e"), "--images", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--images must be at least 1" in r.stderr and "Traceback" not in r.stderr
