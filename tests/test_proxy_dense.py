"""The dense region-phrase loss of the proxy CLIP (PretrainConfig.dense_weight): regions rebuilt from the
corpus's own scenes, phrases of them, a loss that trains the patches, and config identities."""

from __future__ import annotations

import numpy as np
import torch

from bench.proxy.pretrain_clip import (
    CaptionPairs,
    PretrainConfig,
    _corpus_splits,
    dense_phrase,
    dense_region_loss,
    ensure_corpus,
    image_and_patches,
    pretrain,
)
from risclip.backbone import create_clip
from risclip.data.alttext import CorpusConfig, corpus_scene


def _pairs(tmp_path, images=12, size=32):
    cfg = PretrainConfig(data_root=str(tmp_path), clip_model="RIS-Tiny-AP", image_size=size, steps=2, batch_size=4,
                         corpus_images=images, dense_weight=1.0)
    ensure_corpus(cfg, progress=False)
    splits, image_dir = _corpus_splits(cfg)
    return cfg, CaptionPairs(cfg.captions_file(), image_dir, splits["train"], size, cfg.context_length), image_dir


def test_dense_regions_are_the_corpus_objects_masks_on_the_patch_grid(tmp_path):
    cfg, pairs, image_dir = _pairs(tmp_path)
    pairs.add_dense(32, 8, cfg.seed, image_dir.parent)
    assert len(pairs.dense_spans) == len(pairs.ids)
    for k, i in enumerate(pairs.ids):
        lo, hi = pairs.dense_spans[k]
        _, objs, _ = corpus_scene(i - 1, CorpusConfig(images=12))
        assert hi - lo == len(objs)
        for o, w in zip(objs, pairs.dense_weights[lo:hi]):
            # the share of each of the 4x4 patches the object covers: their mean is its share of the image
            assert w.shape == (16,) and 0 <= w.min() and w.max() <= 1
            assert abs(float(w.mean()) - o.mask.mean()) < 1e-5
            assert all(o.shape in t for t in pairs.dense_texts[lo + list(objs).index(o)])
    # the masks are cached per grid and read back equal
    assert (image_dir.parent / "dense-masks-4x4.pt").is_file()
    again = CaptionPairs(cfg.captions_file(), image_dir, set(pairs.ids), 32, cfg.context_length)
    again.add_dense(32, 8, cfg.seed, image_dir.parent)
    assert torch.equal(again.dense_weights, pairs.dense_weights)


def test_dense_phrase_names_the_shape_and_sometimes_the_place():
    rng = np.random.default_rng(0)
    o = type("O", (), {"shape": "triangle", "colour": "red", "size": "small", "striped": False, "cx": 10.0, "cy": 64.0})
    phrases = [dense_phrase(o, 128, rng) for _ in range(200)]
    assert all(p.startswith("a ") and "triangle" in p for p in phrases)
    assert 0 < sum(p.endswith("on the left") for p in phrases) < 200


def test_dense_batch_labels_point_at_each_regions_phrase(tmp_path):
    cfg, pairs, image_dir = _pairs(tmp_path)
    pairs.add_dense(32, 8, cfg.seed, image_dir.parent)
    weights, owner, tokens, label = pairs.dense_batch(np.array([0, 2]), np.random.default_rng(0))
    spans = [pairs.dense_spans[0], pairs.dense_spans[2]]
    assert len(weights) == sum(hi - lo for lo, hi in spans) == len(owner) == len(label)
    assert owner.tolist() == [b for b, (lo, hi) in enumerate(spans) for _ in range(lo, hi)]
    assert int(label.max()) < len(tokens) and len(set(label.tolist())) == len(tokens)  # every phrase is someone's


def test_dense_loss_trains_the_patch_tokens_and_falls(tmp_path):
    cfg, pairs, image_dir = _pairs(tmp_path, size=32)
    pairs.add_dense(32, 8, cfg.seed, image_dir.parent)
    torch.manual_seed(0)
    model = create_clip("RIS-Tiny-AP", None, 32)
    model.requires_grad_(True)
    index = np.arange(len(pairs))
    batch = pairs.dense_batch(index, np.random.default_rng(0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        pooled, patches = image_and_patches(model, pairs.images[index])
        assert pooled.shape[0] == len(index) and patches.shape[1] == 16
        loss = dense_region_loss(model, patches, *batch)
        opt.zero_grad()
        loss.backward()
        assert model.visual.conv1.weight.grad.abs().sum() > 0  # the patches themselves are trained
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_dense_pretraining_runs_and_has_its_own_cache_name(tmp_path):
    cfg = PretrainConfig(data_root=str(tmp_path), clip_model="RIS-Tiny-AP", image_size=32, steps=3, batch_size=8,
                         corpus_images=24, dense_weight=1.0)
    path, summary = pretrain(cfg, progress=False)
    assert path.is_file() and np.isfinite(summary["final_loss"])
    plain = PretrainConfig(data_root=str(tmp_path), clip_model="RIS-Tiny-AP", image_size=32, steps=3, batch_size=8,
                           corpus_images=24)
    assert plain.cache_path() != path
    # the field added later stays out of the hash at its default: the ap trial's proxy keeps its name
    ap = PretrainConfig(data_root="x", clip_model="RIS-Tiny-AP", image_size=64, steps=600, corpus_images=10000)
    assert ap.cache_path().name.startswith("RIS-Tiny-AP-b4010d91c90a-")


def _obj(shape, cx, cy, colour="red", size="small"):
    return type("O", (), {"shape": shape, "cx": cx, "cy": cy, "colour": colour, "size": size, "striped": False})


def test_superlatives_hold_among_the_objects_of_one_shape_by_a_margin():
    from bench.proxy.pretrain_clip import superlative_words

    a, b, c = _obj("square", 10.0, 50.0), _obj("square", 80.0, 60.0), _obj("circle", 40.0, 100.0)
    assert superlative_words(a, [a, b, c]) == ["leftmost", "topmost"]
    assert superlative_words(b, [a, b, c]) == ["rightmost", "bottommost"]
    assert superlative_words(c, [a, b, c]) == []  # the only circle: no superlative among its shape
    close = _obj("square", 14.0, 90.0)  # 4 px right of a: too close to call leftmost
    assert "leftmost" not in superlative_words(a, [a, close])


def test_dense_negatives_flip_place_then_size_then_shape_or_colour():
    from bench.proxy.pretrain_clip import dense_negative

    rng = np.random.default_rng(0)
    obj = {"shape": "square", "colour": "red"}
    assert dense_negative("a small red square on the left", obj, rng) == "a small red square on the right"
    assert dense_negative("the topmost square", obj, rng) == "the bottommost square"
    assert dense_negative("a large red square", obj, rng) == "a small red square"
    neg = dense_negative("a red square", obj, rng)
    assert neg != "a red square" and len(neg.split()) == 3 and ("red" not in neg or "square" not in neg)


def test_dense_batch_with_negatives_adds_false_phrases_and_keeps_labels(tmp_path):
    cfg, pairs, image_dir = _pairs(tmp_path)
    pairs.add_dense(32, 8, cfg.seed, image_dir.parent, superlatives=True)
    index = np.arange(len(pairs))
    w, owner, tokens, label = pairs.dense_batch(index, np.random.default_rng(1))
    w2, owner2, tokens2, label2 = pairs.dense_batch(index, np.random.default_rng(1), np.random.default_rng(2))
    assert torch.equal(w, w2) and torch.equal(owner, owner2)
    assert len(tokens2) > len(tokens)  # the negatives join as phrases no region owns
    assert len(set(label2.tolist())) == len(tokens)  # the regions' own phrases are the same set as without
    words = {t for pair in pairs.dense_texts for p in pair for t in p.split()}
    assert words & {"leftmost", "rightmost", "topmost", "bottommost"}


def test_sincos_position_codes_are_fixed_distinct_and_stay_frozen_in_pretraining(tmp_path):
    import pytest

    from bench.proxy.pretrain_clip import sincos_position_embedding

    e = sincos_position_embedding(4, 4, 16)
    assert e.shape == (17, 16) and e[0].abs().sum() == 0
    assert torch.cdist(e[1:], e[1:]).add(torch.eye(16) * 9).min() > 0.1  # every patch its own code
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_position_embedding(4, 4, 18)
    with pytest.raises(ValueError, match="pos_embed"):
        PretrainConfig(pos_embed="rope")
    cfg = PretrainConfig(data_root=str(tmp_path), clip_model="RIS-Tiny-AP", image_size=32, steps=3, batch_size=8,
                         corpus_images=24, pos_embed="sincos")
    path, _ = pretrain(cfg, progress=False)
    clip = create_clip("RIS-Tiny-AP", str(path), 32)
    assert torch.allclose(clip.visual.positional_embedding, sincos_position_embedding(4, 4, 192))
    assert cfg.cache_path() != PretrainConfig(data_root=str(tmp_path), clip_model="RIS-Tiny-AP", image_size=32,
                                              steps=3, batch_size=8, corpus_images=24).cache_path()


def test_patch_size_is_read_from_the_backbone_config():
    import pytest

    from risclip.backbone import BackboneError, patch_size

    assert (patch_size("RIS-Tiny"), patch_size("RIS-Tiny-AP"), patch_size("ViT-B-16"), patch_size("ViT-L-14-336")) == (8, 8, 16, 14)
    with pytest.raises(BackboneError):
        patch_size("not-a-model")
