"""Main effects and pairwise interactions of a 2^k factorial ablation, with bootstrap confidence intervals.

Input: one row per (variant, seed, expression) with the variant's factor levels (0/1), the seed, the
expression id, its kind and its IoU (in percent). Definitions, averaged over the levels of every other
factor with equal weight (a balanced design):

* main effect of A: mean IoU with A on minus mean IoU with A off;
* interaction of A and B: how much A's effect changes when B is switched on,
  ``(y[A1,B1] - y[A0,B1]) - (y[A1,B0] - y[A0,B0])``, each cell averaged over the other factors.

Confidence intervals (95%, percentile bootstrap) resample both sources of noise the ladder has: the
test expressions (with replacement, the same draw for every variant, so effects stay paired) and the
seeds (with replacement, the same draw for every variant). Where every row names its expression's test
image (an ``image`` column, recorded since the grounded presets), whole images are resampled with all their
expressions instead (a cluster bootstrap: expressions of one image are not independent). Answers what a cumulative ladder cannot:
does SKE help without CFE, does the decoder's gain depend on the patch-level components.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Effect:
    term: str  # "cfe" or "cfe x ske"
    estimate: float
    low: float
    high: float
    kind: str = "all"

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _effects(y: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``y`` (V,) variant means, ``levels`` (V, k) 0/1. Returns k main effects then C(k,2) interactions."""
    k = levels.shape[1]
    out = []
    for a in range(k):
        out.append(y[levels[:, a] == 1].mean() - y[levels[:, a] == 0].mean())
    for a, b in itertools.combinations(range(k), 2):
        cell = {(la, lb): y[(levels[:, a] == la) & (levels[:, b] == lb)].mean() for la in (0, 1) for lb in (0, 1)}
        out.append((cell[1, 1] - cell[0, 1]) - (cell[1, 0] - cell[0, 0]))
    return np.array(out)


def _simple_effects(y: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Each factor's effect at the two ends of every cumulative ladder: switched on with every other factor
    off (added first), then with every other factor on (added last). Returns 2k values in that order."""
    k = levels.shape[1]
    index = {tuple(v): i for i, v in enumerate(levels.tolist())}
    first, last = [], []
    for a in range(k):
        alone = tuple(int(j == a) for j in range(k))
        without = tuple(int(j != a) for j in range(k))
        first.append(y[index[alone]] - y[index[(0,) * k]])
        last.append(y[index[(1,) * k]] - y[index[without]])
    return np.array(first + last)


def simple_terms(factors: list[str]) -> list[str]:
    return [*(f"{f} first" for f in factors), *(f"{f} last" for f in factors)]


def terms(factors: list[str]) -> list[str]:
    return [*factors, *(f"{a} x {b}" for a, b in itertools.combinations(factors, 2))]


def factorial_effects(df: pd.DataFrame, factors: list[str], value: str = "iou", n_boot: int = 2000,
                      seed: int = 0, by_kind: bool = True, simple: bool = False) -> list[Effect]:
    """Effects overall (and per expression kind) with bootstrap CIs. ``df`` columns: the factors (0/1),
    ``seed``, ``expr`` (expression id), ``kind``, and ``value``; optionally ``image`` (the expression's
    image: images are then resampled whole). Every variant must have every seed and every expression (a
    full, balanced factorial). ``simple``: instead of main effects and interactions, each factor added first
    and added last (:func:`_simple_effects`, terms ``"<factor> first"`` and ``"<factor> last"``)."""
    stat, names = (_simple_effects, simple_terms(factors)) if simple else (_effects, terms(factors))
    results: list[Effect] = []
    groups = [("all", df)]
    if by_kind and "kind" in df:
        groups += [(k, g) for k, g in df.groupby("kind")]
    for kind, g in groups:
        variants = g[factors].drop_duplicates().sort_values(factors).to_numpy()
        seeds = np.sort(g["seed"].unique())
        exprs = np.sort(g["expr"].unique())
        if len(variants) != 2 ** len(factors):
            raise ValueError(f"a full 2^{len(factors)} design needs {2 ** len(factors)} variants, got {len(variants)}")
        # cube (variant, seed, expression)
        vi = {tuple(v): i for i, v in enumerate(variants)}
        si = {s: i for i, s in enumerate(seeds)}
        ei = {e: i for i, e in enumerate(exprs)}
        cube = np.full((len(variants), len(seeds), len(exprs)), np.nan)
        for row in g[[*factors, "seed", "expr", value]].itertuples(index=False):
            cube[vi[tuple(row[:len(factors)])], si[row[-3]], ei[row[-2]]] = row[-1]
        if np.isnan(cube).any():
            raise ValueError("unbalanced design: some (variant, seed, expression) cells are missing")
        point = stat(cube.mean(axis=(1, 2)), variants)
        members = _image_members(g, ei)
        rng = np.random.default_rng(seed)
        boots = np.empty((n_boot, len(point)))
        for b in range(n_boot):
            s = rng.integers(0, len(seeds), len(seeds))
            if members is None:
                e = rng.integers(0, len(exprs), len(exprs))
            else:
                e = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
            boots[b] = stat(cube[:, s][:, :, e].mean(axis=(1, 2)), variants)
        low, high = np.percentile(boots, [2.5, 97.5], axis=0)
        for t, est, lo, hi in zip(names, point, low, high):
            results.append(Effect(t, float(est), float(lo), float(hi), kind))
    return results


def _image_members(g: pd.DataFrame, ei: dict) -> list[np.ndarray] | None:
    """The expression indices (``ei``) of each test image, when every row names its image; else None."""
    if "image" not in g or g["image"].isna().any():
        return None
    pairs = g[["expr", "image"]].drop_duplicates("expr")
    return [np.array([ei[e] for e in grp["expr"]]) for _, grp in pairs.groupby("image")]


def effects_frame(effects: list[Effect]) -> pd.DataFrame:
    return pd.DataFrame([{"kind": e.kind, "term": e.term, "estimate": e.estimate, "low": e.low, "high": e.high,
                          "excludes_zero": e.excludes_zero} for e in effects])
