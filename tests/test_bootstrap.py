"""bench.bootstrap: paired gaps over expressions and seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.reporting.bootstrap import paired_gap, table


def test_a_constant_shift_is_found_exactly_and_noise_straddles_zero():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 100, size=(3, 400))
    shifted = paired_gap(a, a + 5.0)
    assert shifted.estimate == pytest.approx(5.0) and shifted.low == pytest.approx(5.0) and shifted.excludes_zero
    noise = paired_gap(a, a + rng.normal(0, 20, size=a.shape))
    assert noise.low < 0 < noise.high and not noise.excludes_zero
    assert "[" in shifted.text() and shifted.expressions == 400 and shifted.seeds == 3


def test_a_rung_that_trains_nothing_stands_for_every_seed_and_tables_pair_expressions():
    rung0 = {0: {1: 10.0, 2: 20.0, 3: 30.0}}
    rung1 = {0: {1: 20.0, 2: 30.0, 3: 40.0, 4: 0.0}, 1: {1: 30.0, 2: 40.0, 3: 50.0}}
    exprs = [1, 2, 3]  # expressions every run scored
    a, b = table(rung0, exprs, [0, 1]), table(rung1, exprs, [0, 1])
    assert a.shape == b.shape == (2, 3) and (a[0] == a[1]).all()
    gap = paired_gap(a, b)
    assert gap.estimate == pytest.approx(15.0) and 10.0 <= gap.low <= gap.high <= 20.0
    with pytest.raises(ValueError, match="different expressions"):
        paired_gap(a, b[:, :2])


def test_a_rung_mean_ci_covers_its_mean_and_narrows_with_more_expressions():
    from bench.reporting.bootstrap import mean_ci

    rng = np.random.default_rng(1)
    small, large = rng.uniform(0, 100, size=(3, 100)), rng.uniform(0, 100, size=(3, 2500))
    a, b = mean_ci(small), mean_ci(large)
    assert a.low < a.estimate < a.high and a.estimate == pytest.approx(small.mean())
    assert (b.high - b.low) < 0.4 * (a.high - a.low)  # width shrinks as 1/sqrt(expressions)
    assert mean_ci(np.full((2, 50), 7.0)).low == pytest.approx(7.0)
    with pytest.raises(ValueError, match="non-empty"):
        mean_ci(np.zeros((0, 3)))


def test_cut_lines_show_the_val_cut_beside_the_fixed_one_only_when_chosen():
    from bench.reporting.report import cut_lines

    fixed = {"rung": 1, "components": "value+adapters", "mIoU": 40.0, "fixed_mIoU": math.nan,
             "threshold": 0.5, "threshold_sd": 0.0}
    assert cut_lines([fixed]) == []
    chosen = {**fixed, "mIoU": 43.5, "fixed_mIoU": 40.0, "threshold": 0.3, "threshold_sd": 0.05}
    ref = {"rung": None, "components": "reference (1x rung-1 time)", "mIoU": 61.0, "fixed_mIoU": 61.5,
           "threshold": 0.55, "threshold_sd": 0.0}
    text = "\n".join(cut_lines([chosen, ref]))
    assert "| rung 1: value+adapters | 0.30 ± 0.05 | 43.50 | 40.00 | +3.50 |" in text
    assert "| reference (1x rung-1 time) | 0.55 ± 0.00 | 61.00 | 61.50 | -0.50 |" in text


def test_resampling_whole_images_widens_the_ci_of_correlated_expressions():
    from bench.reporting.bootstrap import mean_ci

    rng = np.random.default_rng(2)
    per_image = rng.uniform(0, 100, size=(3, 150))
    t = np.repeat(per_image, 4, axis=1)  # four expressions per image, each scoring its image's IoU
    images = np.repeat(np.arange(150), 4)
    flat, clustered = mean_ci(t), mean_ci(t, groups=images)
    assert flat.images == 0 and clustered.images == 150 and clustered.expressions == 600
    assert clustered.estimate == pytest.approx(flat.estimate)
    assert (clustered.high - clustered.low) > 1.6 * (flat.high - flat.low)  # about 2x: sqrt(4)
    # one expression per image: the same resampling as expressions one by one
    single = rng.uniform(0, 100, size=(3, 200))
    a, b = mean_ci(single), mean_ci(single, groups=np.arange(200))
    assert (a.low, a.high) == pytest.approx((b.low, b.high))
    with pytest.raises(ValueError, match="one label per expression"):
        mean_ci(single, groups=np.arange(10))
