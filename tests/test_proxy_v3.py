"""The pieces of the candidate v3 proxy CLIP recipes (bench.proxy_trials): hard negatives, the v3 caption
vocabulary, region pairs, a second resolution, the spread train subset, and config identities that earlier
runs keep."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.proxy.negatives import OPPOSITES, hard_negative
from bench.proxy.pretrain_clip import PretrainConfig, pretrain
from risclip.config import DataConfig
from risclip.data.alttext import CorpusConfig, alt_text, corpus_path, corpus_scene, generate_corpus
from risclip.data.scenes import COLOURS, SHAPES

OBJS = [{"shape": "circle", "colour": "red"}, {"shape": "square", "colour": "blue"}]


def test_a_hard_negative_changes_one_word_and_is_false_of_the_image():
    rng = np.random.default_rng(0)
    for caption in ["a red circle on the left and a blue square above it", "two squares, the left one blue",
                    "the leftmost square is blue", "a large striped red circle"]:
        for _ in range(20):
            neg = hard_negative(caption, OBJS, rng)
            diff = [(a, b) for a, b in zip(caption.split(), neg.split()) if a != b]
            assert len(diff) == 1 and len(caption.split()) == len(neg.split()), (caption, neg)
            old, new = (w.strip(",") for w in diff[0])
            if old.rstrip("s") in SHAPES:
                assert new.rstrip("s") in SHAPES and new.rstrip("s") not in {"circle", "square"}
            elif old in COLOURS:
                assert new in COLOURS and new not in {"red", "blue"}
            else:
                assert OPPOSITES[old] == new
    assert hard_negative("an empty picture", OBJS, rng) is None
    every = [{"shape": s, "colour": c} for s in SHAPES for c in COLOURS]
    assert hard_negative("a red circle", every, rng) is None  # nothing is absent: no sure negative


def test_v3_vocabulary_adds_superlatives_and_keeps_v2_captions_as_they_were():
    v2 = CorpusConfig(images=300, vocabulary="v2")
    v3 = CorpusConfig(images=300, vocabulary="v3")
    caps2 = [c for i in range(300) for c in corpus_scene(i, v2)[2]]
    caps3 = [c for i in range(300) for c in corpus_scene(i, v3)[2]]
    words3 = {w for c in caps3 for w in c.replace(",", "").split()}
    words2 = {w for c in caps2 for w in c.replace(",", "").split()}
    assert {"leftmost", "over"} & words3 and not {"leftmost", "rightmost", "topmost", "bottommost", "over", "under"} & words2
    # v2's draws are untouched by v3's code: the same scene, the same two captions as the plain call
    rng = np.random.default_rng([0, 7919, 5])
    from risclip.data.scenes import SynthRefConfig, make_scene_refcoco, render

    objs = make_scene_refcoco(rng, SynthRefConfig(images=300, profile="refcoco"))
    render(objs, rng, SynthRefConfig(images=300, profile="refcoco"))
    assert [alt_text(objs, rng, 128) for _ in range(2)] == corpus_scene(5, v2)[2]
    with pytest.raises(ValueError, match="vocabulary"):
        CorpusConfig(vocabulary="v9")


def test_v3_corpus_lives_beside_v2_and_v2_file_has_no_vocabulary_field(tmp_path):
    generate_corpus(tmp_path, CorpusConfig(images=4))
    generate_corpus(tmp_path, CorpusConfig(images=4, vocabulary="v3"))
    assert corpus_path(tmp_path).is_file() and corpus_path(tmp_path, "v3").is_file()
    assert corpus_path(tmp_path) != corpus_path(tmp_path, "v3")
    assert "vocabulary" not in json.loads(corpus_path(tmp_path).read_text())["info"]["config"]
    assert json.loads(corpus_path(tmp_path, "v3").read_text())["info"]["config"]["vocabulary"] == "v3"


def test_v3_fields_leave_v1_and_v2_cache_names_unchanged():
    # the names of the cached v1 and v2 proxies (their config hash) from before the v3 fields existed
    v2 = PretrainConfig(data_root="x", image_size=64, steps=600, corpus_images=10000)
    assert v2.cache_path().name.startswith("RIS-Tiny-2ebe605a49e4-")
    v3 = PretrainConfig(data_root="x", image_size=64, steps=600, corpus_images=10000, hard_negatives=True)
    assert v3.cache_path().name != v2.cache_path().name


def test_v3_pretraining_with_regions_negatives_and_a_second_resolution(tmp_path):
    cfg = PretrainConfig(data_root=str(tmp_path), clip_model="RIS-Tiny-AP", image_size=32, steps=3, batch_size=8,
                         corpus_images=24, vocabulary="v3", hard_negatives=True, region_fraction=0.5,
                         hires_steps=2, hires_size=64)
    path, summary = pretrain(cfg, progress=False)
    assert path.is_file() and np.isfinite(summary["final_loss"]) and summary["base_checkpoint"]
    again, _ = pretrain(cfg, progress=False)
    assert again == path  # cached


def test_spread_subset_covers_more_images_and_keeps_the_hash_of_first(synthref_root):
    from risclip.data.refer import ReferDataset

    first = ReferDataset(synthref_root, "synthref", "synth", "train", synthref_root / "images", max_samples=20)
    spread = ReferDataset(synthref_root, "synthref", "synth", "train", synthref_root / "images", max_samples=20,
                          sample_order="spread")
    again = ReferDataset(synthref_root, "synthref", "synth", "train", synthref_root / "images", max_samples=20,
                         sample_order="spread")
    assert len(spread.samples) == 20 and [s[1]["sent_id"] for s in spread.samples] == [s[1]["sent_id"] for s in again.samples]
    assert len({r["image_id"] for r, _ in spread.samples}) > len({r["image_id"] for r, _ in first.samples})
    # the field added later stays out of the hash while it holds its old value: earlier runs keep their identity
    assert "train_subset" not in DataConfig().to_dict()
    assert DataConfig(train_subset="spread").config_hash() != DataConfig().config_hash()
    assert DataConfig.from_dict(DataConfig(train_subset="spread").to_dict()).train_subset == "spread"
    with pytest.raises(ValueError, match="train_subset"):
        DataConfig(train_subset="odd")
