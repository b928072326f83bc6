"""Paired bootstrap confidence intervals for the ladder's gaps, over test expressions *and* seeds.

A gap between two rungs judged against twice the seed sd ignores the larger noise source on a small test
split: which expressions it happens to hold (a fresh SynthRef draw moved rung 1 by 6.6 mIoU where the seed
sd was 0.1). Here each rung is a (seeds x expressions) table of per-expression IoUs; one bootstrap draw
resamples the seeds (with replacement) and the expressions (with replacement), the *same* draw for both
rungs, so the gap stays paired; the interval is the 2.5th and 97.5th percentiles of the resampled gaps.
A rung that trains nothing (rung 0) has one run that serves every seed: its row repeats.

Expressions of one image are not independent draws: they share the scene, often the referent, and the
image's difficulty. Where the runs recorded each expression's image (``image_id`` in ``per_sample``, on every run
since the grounded presets), the bootstrap resamples *images* with all their expressions (a cluster bootstrap), which is what
another sample of test images would do; runs without it fall back to resampling expressions, which
understates the interval (on synth-refcoco-grounded's rung 1: +-1.53 against +-1.76 over images).

The factorial study's effects (``studies/analysis.py``) use the same resampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Gap:
    estimate: float
    low: float
    high: float
    expressions: int
    seeds: int
    images: int = 0  # the groups resampled (0: expressions were resampled one by one)

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def text(self, nd: int = 2) -> str:
        return f"{self.estimate:+.{nd}f} [{self.low:+.{nd}f}, {self.high:+.{nd}f}]"


def table(per_seed: dict[int, dict[int, float]], expressions: list[int] | None = None,
          seeds: list[int] | None = None) -> np.ndarray:
    """(seeds, expressions) array from ``{seed: {expression id: IoU}}``; a single run stands for every seed
    in ``seeds`` (a rung that trains nothing). Expressions default to those every seed scored."""
    runs = list(per_seed.values())
    if not runs:
        raise ValueError("no runs")
    if expressions is None:
        expressions = sorted(set.intersection(*(set(r) for r in runs)))
    if seeds is not None and len(per_seed) == 1:
        runs = runs * len(seeds)
    elif seeds is not None:
        runs = [per_seed[s] for s in seeds]
    return np.array([[r[e] for e in expressions] for r in runs], dtype=float)


def paired_gap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0,
               groups: np.ndarray | list | None = None) -> Gap:
    """Mean of ``b`` minus mean of ``a`` with a 95% percentile-bootstrap CI; ``a`` and ``b`` are (seeds,
    expressions) tables over the same expressions in the same order (seed rows paired by position).
    ``groups`` (one label per expression column, e.g. its image): resample whole groups instead of single
    expressions; each bootstrap mean weighs every drawn expression alike, as the estimate does."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two tables score different expressions ({a.shape[1]} vs {b.shape[1]})")
    n_s = max(a.shape[0], b.shape[0])
    if a.shape[0] != n_s:
        a = np.repeat(a, n_s, axis=0) if a.shape[0] == 1 else a
    if b.shape[0] != n_s:
        b = np.repeat(b, n_s, axis=0) if b.shape[0] == 1 else b
    if a.shape != b.shape:
        raise ValueError(f"unpaired tables: {a.shape} vs {b.shape}")
    n_e = a.shape[1]
    rng = np.random.default_rng(seed)
    diff = b - a
    boots = np.empty(n_boot)
    if groups is None:
        for i in range(n_boot):
            s = rng.integers(0, n_s, n_s)
            e = rng.integers(0, n_e, n_e)
            boots[i] = diff[s][:, e].mean()
    else:
        labels = np.asarray(groups)
        if labels.shape != (n_e,):
            raise ValueError(f"groups: need one label per expression ({n_e}), got shape {labels.shape}")
        _, inverse = np.unique(labels, return_inverse=True)
        n_g = int(inverse.max()) + 1
        sums = np.zeros((n_s, n_g))  # each seed's IoU sum per group, and each group's size
        np.add.at(sums, (slice(None), inverse), diff)
        sizes = np.bincount(inverse, minlength=n_g).astype(float)
        for i in range(n_boot):
            s = rng.integers(0, n_s, n_s)
            g = rng.integers(0, n_g, n_g)
            boots[i] = sums[s][:, g].sum() / (n_s * sizes[g].sum())
    low, high = np.percentile(boots, [2.5, 97.5])
    return Gap(float(diff.mean()), float(low), float(high), n_e, n_s, 0 if groups is None else n_g)


def mean_ci(t: np.ndarray, n_boot: int = 2000, seed: int = 0, groups: np.ndarray | list | None = None) -> Gap:
    """Mean of a (seeds, expressions) table with its 95% percentile-bootstrap CI, seeds and expressions
    resampled together as in :func:`paired_gap`: how far another sample of test expressions (and seeds)
    could move one rung's mean. Returned as a :class:`Gap` from zero."""
    if t.ndim != 2 or t.size == 0:
        raise ValueError(f"need a non-empty (seeds, expressions) table, got shape {t.shape}")
    return paired_gap(np.zeros_like(t), t, n_boot=n_boot, seed=seed, groups=groups)
