"""The factorial analysis recovers planted effects from a synthetic table, with CIs that cover the truth."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from studies.analysis import effects_frame, factorial_effects

FACTORS = ["adapters", "cfe", "ske", "decoder"]


def _table(seeds=3, exprs=300, noise=4.0, seed=0):
    # planted: adapters +6, decoder +10, cfe +0, ske -2; interaction cfe x ske +8 (SKE helps only with CFE)
    rng = np.random.default_rng(seed)
    expr_effect = rng.normal(0, 10, exprs)  # expressions differ in difficulty, shared across variants
    rows = []
    for levels in itertools.product((0, 1), repeat=4):
        a, c, s, d = levels
        mean = 30 + 6 * a + 0 * c - 2 * s + 10 * d + 8 * c * s
        for sd in range(seeds):
            seed_shift = rng.normal(0, 0.5)  # training noise of one (variant, seed)
            iou = mean + expr_effect + seed_shift + rng.normal(0, noise, exprs)
            kinds = np.where(np.arange(exprs) % 3 == 0, "relation", "attribute")
            rows += [{**dict(zip(FACTORS, levels)), "seed": sd, "expr": i, "kind": k, "iou": v}
                     for i, (k, v) in enumerate(zip(kinds, iou))]
    return pd.DataFrame(rows)


def test_planted_main_effect_and_interaction_are_recovered():
    # truth under the module's definitions (averaged over the other factors with equal weight):
    # main effect of cfe = 0 + 8 * P(ske on) = 4; of ske = -2 + 8 * 0.5 = 2; adapters 6, decoder 10; cfe x ske = 8
    truth = {"adapters": 6, "cfe": 4, "ske": 2, "decoder": 10, "cfe x ske": 8, "adapters x cfe": 0}
    covered = {t: 0 for t in truth}
    replicates = 20
    for rep in range(replicates):
        df = effects_frame(factorial_effects(_table(seed=rep), FACTORS, n_boot=300, seed=rep,
                                             by_kind=False)).set_index("term")
        for term, value in truth.items():
            covered[term] += int(df.loc[term, "low"] <= value <= df.loc[term, "high"])
        # the planted effects are found with the right sign every time
        assert df.loc["cfe x ske", "low"] > 0 and df.loc["decoder", "low"] > 0 and df.loc["ske", "high"] > 0
    # 95% intervals: each should cover its truth in about 19 of 20 replicates; allow sampling slack
    for term, n in covered.items():
        assert n >= 16, (term, n)


def test_per_kind_effects_and_unbalanced_design_is_an_error():
    df = effects_frame(factorial_effects(_table(seeds=2, exprs=90), FACTORS, n_boot=100))
    assert set(df["kind"]) == {"all", "attribute", "relation"}
    bad = _table(seeds=2, exprs=30)
    bad = bad[~((bad["adapters"] == 1) & (bad["cfe"] == 1) & (bad["ske"] == 1) & (bad["decoder"] == 1))]
    try:
        factorial_effects(bad, FACTORS, n_boot=10, by_kind=False)
    except ValueError as e:
        assert "16 variants" in str(e)
    else:
        raise AssertionError("an incomplete design must be refused")


def test_an_image_column_resamples_whole_images_and_widens_a_ci_that_varies_by_image():
    # the decoder's effect differs by image (shared by that image's 5 expressions): resampling expressions one
    # by one treats 300 correlated expressions as independent; resampling the 60 images does not
    rng = np.random.default_rng(3)
    image = np.repeat(np.arange(60), 5)
    per_image = rng.normal(0, 8, 60)[image]
    rows = []
    for levels in itertools.product((0, 1), repeat=4):
        for sd in range(2):
            iou = 30 + 10 * levels[3] * (1 + per_image / 10) + rng.normal(0, 1, 300)
            rows += [{**dict(zip(FACTORS, levels)), "seed": sd, "expr": i, "kind": "attribute", "iou": v,
                      "image": int(image[i])} for i, v in enumerate(iou)]
    df = pd.DataFrame(rows)

    def width(frame):
        eff = effects_frame(factorial_effects(frame, FACTORS, n_boot=300, by_kind=False)).set_index("term")
        return eff.loc["decoder", "high"] - eff.loc["decoder", "low"], eff.loc["decoder", "estimate"]

    (clustered, est_c), (flat, est_f) = width(df), width(df.drop(columns="image"))
    assert est_c == est_f and clustered > 1.6 * flat
    assert width(df.assign(image=None))[0] == flat  # an image missing anywhere: expressions are resampled


def test_simple_effects_read_each_component_added_first_and_last():
    # planted: cfe adds 0 alone, and 8 where ske is on; ske adds -2 alone and +6 where cfe is on
    df = effects_frame(factorial_effects(_table(seeds=3, exprs=300), FACTORS, n_boot=300, by_kind=False,
                                         simple=True)).set_index("term")
    truth = {"cfe first": 0, "cfe last": 8, "ske first": -2, "ske last": 6, "adapters first": 6,
             "adapters last": 6, "decoder first": 10, "decoder last": 10}
    assert set(df.index) == set(truth)
    for term, value in truth.items():
        assert abs(df.loc[term, "estimate"] - value) < 1.0, (term, df.loc[term, "estimate"])
    assert df.loc["cfe last", "low"] > 4 and df.loc["cfe first", "high"] < 4  # the two ends differ
