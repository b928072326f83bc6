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
from risclip.data.synthref import (
    COLOURS,
    KINDS,
    POSITION_PHRASES,
    POSITIONS,
    RELATION_PHRASES,
    RELATIONS,
    SynthRefConfig,
    generate,
    main,
)

from .conftest import TINY_SYNTHREF

BOTH = pytest.mark.parametrize("root", ["synthref_root", "dense_root"])


def _load(root):
    inst = json.loads((root / "synthref" / "instances.json").read_text())
    refs = pickle.loads((root / "synthref" / "refs(synth).p").read_bytes())
    return inst, refs


@BOTH
def test_drawn_objects_equal_decoded_masks(root, request):
    """Each annotation's decoded polygon covers exactly the pixels painted in the object's colour."""
    synthref_root = request.getfixturevalue(root)
    inst, _ = _load(synthref_root)
    images = {i["id"]: i for i in inst["images"]}
    for ann in inst["annotations"]:
        info = images[ann["image_id"]]
        pixels = np.asarray(Image.open(synthref_root / "images" / info["file_name"]), dtype=np.float32)
        mask = annotation_mask(ann["segmentation"], info["height"], info["width"])
        assert mask.sum() == pytest.approx(ann["area"])
        colour = np.array(COLOURS[ann["attributes"]["colour"]], np.float32)
        dist = np.linalg.norm(pixels - colour, axis=2)
        if ann["attributes"]["striped"]:  # stripes are painted at 72% of the colour
            dist = np.minimum(dist, np.linalg.norm(pixels - 0.72 * colour, axis=2))
        assert (dist[mask] < 45).mean() > 0.97, ann["id"]
        # the one-pixel ring around the object is background, not the object's colour
        ring = np.zeros_like(mask)
        ys, xs = np.nonzero(mask)
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ring[np.clip(ys + dy, 0, info["height"] - 1), np.clip(xs + dx, 0, info["width"] - 1)] = True
        ring &= ~mask
        assert (dist[ring] < 45).mean() < 0.2, ann["id"]


def _canonical(text):
    """The refcoco profile's other phrasings rewritten to the dense profile's one ("the leftmost X")."""
    for pos, forms in POSITION_PHRASES.items():
        for form in forms:
            m = re.fullmatch(form.replace("{d}", "(?P<d>.+)"), text)
            if m:
                return f"the {pos} {m['d']}"
    for rel, short in RELATION_PHRASES.items():
        text = re.sub(rf"(?<!to the )\b{short} the ", f"{rel} the ", text)
    return text


def _parse(text):
    words = _canonical(text).split()
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


@BOTH
def test_every_expression_picks_exactly_its_referent(root, request):
    """An independent reader of the sentences resolves each one to its ref's object, and only that one."""
    inst, refs = _load(request.getfixturevalue(root))
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


@BOTH
def test_captions_in_coco_format(root, request):
    caps = json.loads((request.getfixturevalue(root) / "synthref" / "captions.json").read_text())
    ids = {i["id"] for i in caps["images"]}
    assert len(caps["annotations"]) >= len(ids) == TINY_SYNTHREF.images
    assert all(a["image_id"] in ids and a["caption"] for a in caps["annotations"])


def test_cli_writes_and_rejects_bad_arguments(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "d"), "--images", "3", "--seed", "1", "--size", "64", "--no-progress"]) == 0
    assert (tmp_path / "d" / "synthref" / "refs(synth).p").is_file()
    assert "3 images" in capsys.readouterr().out
    r = subprocess.run([sys.executable, "-m", "risclip.data.synthref", "--out", str(tmp_path / "e"), "--images", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--images must be at least 1" in r.stderr and "Traceback" not in r.stderr


def _pixels_and_files(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(np.asarray(Image.open(p)).tobytes() if p.suffix == ".png" else p.read_bytes())
    return h.hexdigest()


def test_dense_profile_is_byte_identical_to_the_first_generator(tmp_path):
    """Golden digest of the first generator's output (commit 5a67804) for these arguments: pixels, both
    JSON files and the refs pickle. The refcoco profile must never change what --profile dense writes."""
    generate(tmp_path, SynthRefConfig(images=12, seed=5, size=96, profile="dense"), progress=False)
    assert _pixels_and_files(tmp_path) == "bb7fb7dff237fea05241fee1e7644cd30eabe1dda142674e8861170f55dcebf8"


@pytest.fixture(scope="module")
def refcoco_128(tmp_path_factory):
    root = tmp_path_factory.mktemp("rc128")
    generate(root, SynthRefConfig(images=160, seed=1, size=128), progress=False)
    return root


def test_refcoco_profile_has_refcoco_traits_and_a_high_oracle_cap(refcoco_128):
    from risclip.data.stats import GridSpec, dataset_stats

    st = dataset_stats(refcoco_128, split="train", spec=GridSpec(128, 8))
    area = st["referent_area_pct"]
    assert area["median"] >= 7.0 and area["under_3pct_share"] < 10.0
    assert st["same_category_per_ref"]["share_2_to_4"] > 70.0  # most referents share their shape with 1-3 others
    assert st["objects_per_image"]["mean"] <= 5.0
    assert all(15.0 < v < 50.0 for v in st["kinds_pct"].values()) and set(st["kinds_pct"]) == set(KINDS)
    assert st["oracle"]["area_mIoU"] >= 85.0
    # the dense profile's grid caps stage 1 far lower: the stats tell the two apart
    coarse = dataset_stats(refcoco_128, split="train", spec=GridSpec(128, 32))
    assert coarse["oracle"]["area_mIoU"] < st["oracle"]["area_mIoU"] - 10
    sizes = st["size_words_vs_area"]
    assert sizes["sized_expressions"] > 0 and 0.0 <= sizes["agree_pct"] <= 100.0


def test_size_words_are_checked_against_the_areas():
    """The stats command's size check compares the sentence's size word with areas, not size labels with size
    labels: a shrunk "large" object is caught even where every other object of its shape is labelled large."""
    from risclip.data.stats import _size_words_agree

    def obj(i, area, cat=1, label="large"):
        return {"id": i, "category_id": cat, "area": area, "attributes": {"size": label}}

    big, small, bigger = obj(1, 500.0), obj(2, 200.0, label="small"), obj(3, 900.0)  # bigger: labelled large too
    assert _size_words_agree("the large square", big, [big, small]) is True
    assert _size_words_agree("the small red square", small, [big, small]) is True
    assert _size_words_agree("the large square", big, [big, small, bigger]) is False  # a larger one of its shape
    assert _size_words_agree("the large square", big, [big, obj(4, 100.0, cat=2)]) is False  # nothing to contrast
    assert _size_words_agree("the square on the left", big, [big, small]) is None  # no size word
    assert _size_words_agree("the circle above the small square", big, [big, small]) is None  # on the anchor only


def test_oracle_loses_only_corners_of_a_mask_made_of_whole_patches():
    """Bilinear upsampling of a perfect patch map keeps whole-patch edges exactly and rounds off each
    corner (there a pixel mixes four patches); one patch more in each direction loses more."""
    import torch

    from risclip.data.stats import GridSpec, oracle_masks

    mask = np.zeros((64, 64), bool)
    mask[16:40, 8:32] = True  # whole 8-px patches
    gt = torch.from_numpy(mask)
    for pred in oracle_masks(mask, GridSpec(64, 8)).values():
        lost = gt & ~pred
        assert not (pred & ~gt).any() and 0 < lost.sum() <= 4 * 6
        assert not lost[20:36, :].any() and not lost[:, 12:28].any()  # only near the four corners
    small = np.zeros((64, 64), bool)
    small[20:28, 20:28] = True  # one patch: the oracle keeps less of it
    assert oracle_masks(small, GridSpec(64, 8))["area"].sum() < small.sum() - 4


def test_stats_cli_prints_the_statistics_and_rejects_bad_input(refcoco_128, tmp_path, capsys):
    assert main(["stats", str(refcoco_128), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "referent area" in out and "stage-1 oracle cap, 16x16" in out
    assert main(["stats", str(refcoco_128), "--json", "--split", "train"]) == 0
    assert json.loads(capsys.readouterr().out)["oracle"]["grid"].startswith("16x16")
    assert main(["stats", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SystemExit):
        main(["stats", str(refcoco_128), "--image-size", "100", "--patch", "8"])


def test_caption_corpus_is_its_own_and_names_places_and_relations(refcoco_128, tmp_path):
    from risclip.data.alttext import MAX_WORDS

    assert main(["captions", "--out", str(tmp_path), "--images", "120", "--no-progress"]) == 0
    caps = json.loads((tmp_path / "caption_corpus" / "captions.json").read_text())
    texts = [a["caption"] for a in caps["annotations"]]
    assert len(texts) == 240 and len(caps["objects"]) == 120
    assert all(len(t.split()) <= MAX_WORDS for t in texts)
    joined = " ".join(texts)
    for word in ("on the left", "at the top", "above it", "to the right of it", "the left one", "in the middle"):
        assert word in joined, word
    # weakly grounded: most captions say nothing about where things are
    spatial = [t for t in texts if re.search(r"left|right|top|bottom|above|below|middle", t)]
    assert 0.15 < len(spatial) / len(texts) < 0.6
    # no corpus image is an image of the RIS splits
    ris = {np.asarray(Image.open(p)).tobytes() for p in (refcoco_128 / "images").glob("*.png")}
    corpus = {np.asarray(Image.open(p)).tobytes() for p in (tmp_path / "caption_corpus" / "images").glob("*.png")}
    assert len(corpus) == 120 and not ris & corpus


def test_unknown_profile_is_refused(tmp_path):
    with pytest.raises(ValueError, match="valid: refcoco, dense"):
        generate(tmp_path, SynthRefConfig(images=1, profile="coco"), progress=False)
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--profile", "coco"])


def test_extra_test_images_grow_test_alone(tmp_path):
    base = SynthRefConfig(images=20, seed=3, size=64)
    grown = SynthRefConfig(images=20, seed=3, size=64, extra_test_images=8)
    generate(tmp_path / "a", base, progress=False)
    generate(tmp_path / "b", grown, progress=False)
    (inst_a, refs_a), (inst_b, refs_b) = _load(tmp_path / "a"), _load(tmp_path / "b")
    assert len(inst_b["images"]) == 28
    first = [r for r in refs_b if r["image_id"] <= 20]
    assert first == refs_a  # the first 20 images' refs, splits and sentences are unchanged
    for i in range(20):  # and so are their pixels
        name = f"synthref_{i:06d}.png"
        assert (tmp_path / "a" / "images" / name).read_bytes() == (tmp_path / "b" / "images" / name).read_bytes()
    extra = [r for r in refs_b if r["image_id"] > 20]
    assert extra and {r["split"] for r in extra} == {"test"}
    assert "extra_test_images" not in inst_a["info"]["config"]  # earlier draws' records stay equal
    assert inst_b["info"]["config"]["extra_test_images"] == 8
