"""The from-scratch reference segmenter: it reads its text, trains deterministically, lowers its loss, and is
scored by the same evaluation as a rung."""

from __future__ import annotations

import pytest
import torch

from risclip.config import DataConfig, ModelConfig, TrainConfig
from risclip.engine import build_dataset, evaluate, evaluate_text_controls
from risclip.reference import ReferenceConfig, ReferenceSegmenter, seconds_per_epoch, train_reference

SMALL = ReferenceConfig(widths=(8, 16, 16, 24), word_dim=16, text_dim=16, heads=2, batch_size=8)


@pytest.fixture(scope="module")
def sets(synthref_root):
    data = DataConfig(data_root=str(synthref_root), max_train_samples=48, max_eval_samples=24)
    mcfg = ModelConfig.tiny(image_size=64)
    return build_dataset(data, mcfg, "train", train=True), build_dataset(data, mcfg, "val", train=False)


def test_output_depends_on_the_sentence_and_has_the_rungs_shapes():
    torch.manual_seed(0)
    model = ReferenceSegmenter(SMALL)
    for p in model.film.parameters():  # FiLM starts as the identity; give it something to say
        p.data.normal_(0, 0.5)
    model.set_stage(None)
    images = torch.randn(2, 3, 64, 64)
    a = torch.tensor([[49406, 320, 1746, 49407, 0, 0], [49406, 320, 2866, 49407, 0, 0]])
    b = torch.tensor([[49406, 320, 4516, 49407, 0, 0], [49406, 320, 2866, 49407, 0, 0]])
    out_a, out_b = model(images, a), model(images, b)
    assert out_a.mask_logits.shape == (2, 64, 64)
    assert not torch.allclose(out_a.mask_logits[0], out_b.mask_logits[0])  # another sentence, another mask
    torch.testing.assert_close(out_a.mask_logits[1], out_b.mask_logits[1])  # the same sentence, the same mask
    shared = model(images[:1], a, torch.tensor([0, 0]))  # the engine's one-image-per-sentence index
    torch.testing.assert_close(shared.mask_logits[0], model(images[:1], a[:1]).mask_logits[0])


def test_training_is_deterministic_lowers_the_loss_and_scores_like_a_rung(sets):
    train, val = sets
    m1, h1 = train_reference(train, SMALL, epochs=3, seed=0, progress=False)
    m2, h2 = train_reference(train, SMALL, epochs=3, seed=0, progress=False)
    assert [r["loss"] for r in h1] == [r["loss"] for r in h2]
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(v1, v2, msg=k)
    assert h1[-1]["loss"] < h1[0]["loss"]
    cfg = TrainConfig(eval_batch_size=8, progress=False)
    ev = evaluate(m1, val, cfg, torch.device("cpu"))
    assert 0.0 <= ev.metrics["mIoU"] <= 100.0 and len(ev.per_sample) == len(val)
    controls = evaluate_text_controls(m1, val, cfg, torch.device("cpu"))
    assert set(controls) == {"swap", "generic"} and 0.0 <= controls["swap"]["metrics"]["mIoU"] <= 100.0
    assert seconds_per_epoch(train, SMALL) > 0
    with pytest.raises(ValueError, match="at least 1"):
        train_reference(train, SMALL, epochs=0)


def test_cpu_amp_trains_the_reference_under_bf16_and_stays_out_of_the_old_identity(sets):
    import dataclasses

    train, val = sets
    assert "cpu_amp" not in SMALL.to_dict()  # identities of runs made before the field are unchanged
    amp = dataclasses.replace(SMALL, cpu_amp=True)
    assert amp.config_hash() != SMALL.config_hash()
    m, h = train_reference(train, amp, epochs=2, seed=0, progress=False)
    _, h32 = train_reference(train, SMALL, epochs=2, seed=0, progress=False)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in h)
    assert h[0]["loss"] != h32[0]["loss"] and abs(h[0]["loss"] - h32[0]["loss"]) < 0.05 * h32[0]["loss"]
    ev = evaluate(m, val, TrainConfig(eval_batch_size=8, progress=False, cpu_amp=True), torch.device("cpu"))
    assert 0.0 <= ev.metrics["mIoU"] <= 100.0
