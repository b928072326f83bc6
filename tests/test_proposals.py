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
