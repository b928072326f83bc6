"""Referent selection among instance masks (bench/spine/proposals.py)."""

from __future__ import annotations

import torch

from bench.spine.proposals import ProposalSelection


def test_select_picks_the_instance_with_the_highest_mean_score():
    inst = torch.zeros(3, 8, 8, dtype=torch.bool)
    inst[0, :4, :4] = True  # large, moderately scored
    inst[1, 6:, 6:] = True  # small, highest mean
    inst[2, :4, 5:] = True  # contains the single highest pixel but a low mean
    score = torch.zeros(8, 8)
    score[:4, :4] = 1.0
    score[6:, 6:] = 2.0
    score[0, 7] = 10.0
    assert torch.equal(ProposalSelection.select(score, inst), inst[1])
    assert not ProposalSelection.select(score, inst[:0]).any()


def test_attribute_forms_split_attribute_select_by_the_words_that_pick_the_referent(synthref_root):
    from types import SimpleNamespace

    from torch.utils.data import DataLoader

    from bench.spine.proposals import attribute_form
    from risclip.data.refer import ReferDataset, refer_collate

    assert [attribute_form(t) for t in ("the square", "the red square", "the large square", "the small red circle")] \
        == ["shape", "colour", "size", "size+colour"]
    assert attribute_form("the leftmost red square") == "colour"  # the words, whatever the kind
    ds = ReferDataset(synthref_root, "synthref", "synth", "train", synthref_root / "images", image_size=64,
                      keep_original_mask=True)
    sel = ProposalSelection(ds)
    want: dict[str, int] = {}
    for batch in DataLoader(ds, batch_size=16, collate_fn=refer_collate):
        sel.process(batch, SimpleNamespace(mask_logits=batch["mask"].float() * 10 - 5))  # a map that is the mask
        for m in batch["meta"]:
            if m["kind"] == "attribute":
                want[attribute_form(m["text"])] = want.get(attribute_form(m["text"]), 0) + 1
    out = sel.compute()
    assert want and {f: int(v["count"]) for f, v in out["by_form"].items()} == want
    assert all(v["mIoU"] == 100.0 for v in out["by_form"].values())
    sel.reset()  # empties both meters
    assert len(sel.forms.kinds_in_order()) == 0 and len(sel.meter.kinds_in_order()) == 0
