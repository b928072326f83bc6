"""Text controls (swap and generic sentences): a model that ignores the text keeps its score, one that reads
it loses it; the swapped sentences name another referent of the same image, chosen reproducibly."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import pytest
import torch
import torch.nn.functional as F

from risclip.config import DataConfig, ModelConfig, TrainConfig
from risclip.data.controls import TextControl
from risclip.engine import build_dataset, evaluate, evaluate_text_controls
from risclip.metrics import get_protocol
from risclip.model import RISOutput


def _key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.numpy().tobytes()).hexdigest()


class StubModel:
    """Enough of RISCLIP's interface for ``evaluate``. ``reads_text``: the mask of the referent its sentence
    names (an oracle that looks the (image, sentence) pair up); otherwise the whole image, whatever it reads."""

    zero_shot = False

    def __init__(self, dataset, reads_text: bool) -> None:
        self.reads_text = reads_text
        self.lookup: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}
        for i in range(len(dataset)):
            s = dataset[i]
            self.lookup[_key(s["image"]), tuple(s["tokens"].tolist())] = s["mask"]

    def set_stage(self, stage) -> None:
        pass

    def __call__(self, images, tokens, index) -> RISOutput:
        imgs = images[index]
        out = []
        for img, tok in zip(imgs, tokens):
            if not self.reads_text:
                out.append(torch.full(img.shape[-2:], 10.0))
                continue
            mask = self.lookup.get((_key(img), tuple(tok.tolist())))
            out.append(torch.full(img.shape[-2:], -10.0) if mask is None else mask * 20.0 - 10.0)
        logits = torch.stack(out)
        return RISOutput(logits, logits, logits)

    def binarise(self, out, sizes, threshold=0.5):
        cut = math.log(threshold / (1 - threshold))
        return [F.interpolate(out.mask_logits[i][None, None], size=s, mode="bilinear", align_corners=False)[0, 0] > cut
                for i, s in enumerate(sizes)]


@pytest.fixture(scope="module")
def test_set(synthref_root):
    data = DataConfig(data_root=str(synthref_root), max_eval_samples=None)
    return build_dataset(data, ModelConfig.tiny(image_size=64), "train", train=False)


def test_swap_names_another_referent_of_the_same_image_reproducibly(test_set):
    swap = TextControl(test_set, "swap", seed=0)
    assert 0.5 < swap.fraction <= 1.0 and len(swap) == len(swap.indices)
    by_sent = {}
    for ref in test_set.refs:
        for s in ref["sentences"]:
            by_sent.setdefault(test_set.sentence_text(s), set()).add((ref["image_id"], ref["ann_id"]))
    for j, i in enumerate(swap.indices[:40]):
        ref, _ = test_set.samples[i]
        owners = by_sent[swap.texts[j]]
        # the new sentence is said of some other object of this image
        assert any(img == ref["image_id"] and ann != ref["ann_id"] for img, ann in owners)
    sample = swap[0]
    assert sample["meta"]["text"] == swap.texts[0] and sample["meta"]["true_text"] == test_set[swap.indices[0]]["meta"]["text"]
    assert torch.equal(sample["orig_mask"], test_set[swap.indices[0]]["orig_mask"])  # scored against the true mask
    assert TextControl(test_set, "swap", seed=0).texts == swap.texts  # seeded
    assert TextControl(test_set, "swap", seed=5).texts != swap.texts
    generic = TextControl(test_set, "generic")
    assert len(generic) == len(test_set) and {generic[i]["meta"]["text"] for i in range(3)} == {"the object"}
    with pytest.raises(ValueError, match="valid: swap, generic"):
        TextControl(test_set, "shuffle")


def test_a_model_that_ignores_the_text_keeps_its_score_one_that_reads_it_loses_it(test_set):
    cfg = TrainConfig(eval_batch_size=8, progress=False)
    blind = StubModel(test_set, reads_text=False)
    reader = StubModel(test_set, reads_text=True)
    for model, reads in ((blind, False), (reader, True)):
        true = evaluate(model, test_set, cfg, torch.device("cpu"))
        controls = evaluate_text_controls(model, test_set, cfg, torch.device("cpu"))
        swap = controls["swap"]
        kept = {int(test_set.samples[i][1]["sent_id"]) for i in TextControl(test_set, "swap").indices}
        true_on_swappable = sum(r["iou"] for r in true.per_sample if r["sent_id"] in kept) / len(kept) * 100
        assert swap["fraction"] == pytest.approx(len(kept) / len(test_set))
        assert set(swap["by_kind"]) <= set(true.by_kind) and swap["by_kind"]
        if not reads:  # text-blind: the same masks, the same score
            assert swap["metrics"]["mIoU"] == pytest.approx(true_on_swappable, abs=1e-6)
            assert controls["generic"]["metrics"]["mIoU"] == pytest.approx(true.metrics["mIoU"], abs=1e-6)
        else:  # reads the text: perfect on its own sentence, another object's mask under the swap
            assert true.metrics["mIoU"] > 99.0
            assert swap["metrics"]["mIoU"] < 0.2 * true_on_swappable
            assert controls["generic"]["metrics"]["mIoU"] < 1.0


def test_each_distinct_image_sentence_pair_runs_once_and_scores_as_if_run_for_every_sample(test_set, monkeypatch):
    import risclip.engine as E
    from risclip.config import Components
    from risclip.model import RISCLIP

    tokens = torch.tensor([[1, 2], [1, 2], [3, 4], [1, 2], [3, 4]])
    index = torch.tensor([0, 0, 0, 1, 1])
    rows, inverse = E.distinct_queries(tokens, index)
    assert rows.tolist() == [0, 2, 3, 4] and inverse.tolist() == [0, 0, 1, 2, 3]

    torch.manual_seed(0)
    mc = ModelConfig.tiny(image_size=64, components=Components.from_names("adapters,cfe"))
    model = RISCLIP.from_config(mc).eval()
    calls = []
    real = model.forward

    def counting(images, tok, idx):
        calls.append(len(idx))
        return real(images, tok, idx)

    monkeypatch.setattr(model, "forward", counting)
    cfg = TrainConfig(eval_batch_size=16, progress=False)
    deduped = evaluate_text_controls(model, test_set, cfg, torch.device("cpu"), controls=("generic",))["generic"]
    run_generic = sum(calls)
    calls.clear()
    monkeypatch.setattr(E.evaluation, "_forward_distinct", lambda m, images, tok, idx: m(images, tok, idx))
    plain = evaluate_text_controls(model, test_set, cfg, torch.device("cpu"), controls=("generic",))["generic"]
    assert run_generic < sum(calls) == len(test_set)  # 'the object' for every sentence: one pass per image per batch
    assert [r["sent_id"] for r in deduped["per_sample"]] == [r["sent_id"] for r in plain["per_sample"]]
    assert [r["iou"] for r in deduped["per_sample"]] == pytest.approx([r["iou"] for r in plain["per_sample"]], abs=1e-6)


def test_the_swap_control_takes_its_masks_from_the_test_pass_and_scores_the_same(test_set, monkeypatch):
    import risclip.engine as E
    from risclip.config import Components
    from risclip.model import RISCLIP

    torch.manual_seed(1)
    model = RISCLIP.from_config(ModelConfig.tiny(image_size=64, components=Components.from_names("adapters"))).eval()
    with torch.no_grad():  # a map that depends on the text, so that a wrong reuse would show
        for p in model.text_adapters.parameters():
            p.add_(0.05 * torch.randn_like(p))
    calls = []
    real = model.forward
    monkeypatch.setattr(model, "forward", lambda images, tok, idx: calls.append(len(idx)) or real(images, tok, idx))
    cfg = TrainConfig(eval_batch_size=16, progress=False)
    cpu = torch.device("cpu")
    memo = E.PredictionMemo()
    test = evaluate(model, test_set, cfg, cpu, memo=memo)
    assert 0 < len(memo) <= len(test.per_sample)  # one mask per distinct (image, sentence) pair
    calls.clear()
    reused = evaluate_text_controls(model, test_set, cfg, cpu, controls=("swap",), memo=memo)["swap"]
    assert sum(calls) == 0  # every swapped sentence is another referent's test sentence: nothing runs again
    fresh = evaluate_text_controls(model, test_set, cfg, cpu, controls=("swap",))["swap"]
    assert sum(calls) > 0
    assert [r["iou"] for r in reused["per_sample"]] == pytest.approx([r["iou"] for r in fresh["per_sample"]], abs=1e-6)
    assert reused["metrics"]["mIoU"] == pytest.approx(fresh["metrics"]["mIoU"], abs=1e-6)
    # a memo made at another cut is not taken for this one
    other = E.PredictionMemo()
    evaluate(model, test_set, cfg, cpu, protocols=(dataclasses.replace(get_protocol("ours"), threshold=0.3),), memo=other)
    calls.clear()
    evaluate_text_controls(model, test_set, cfg, cpu, controls=("swap",), memo=other)
    assert sum(calls) > 0
