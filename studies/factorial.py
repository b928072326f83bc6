"""``factorial``: every combination of adapters, CFE, SKE and the decoder (value grounding on), plus rung 0
with value grounding off, at 2+ seeds; the report gives main effects and pairwise interactions with
bootstrap confidence intervals (:mod:`studies.analysis`)."""

from __future__ import annotations

import itertools

import optuna

from risclip.config import Components

from .base import StudyContext, StudySpec, TrialPlan

FACTORS = ("adapters", "cfe", "ske", "decoder")


def variants() -> list[Components]:
    """The 16 combinations of the four factors with value grounding on, then rung 0 with it off."""
    combos = [Components(value=True, **dict(zip(FACTORS, bits))) for bits in itertools.product((False, True), repeat=4)]
    return [*combos, Components(value=False)]


def grid(seeds: tuple[int, ...]) -> dict[str, list]:
    return {"variant": list(range(len(variants()))), "seed": list(seeds)}


def factorial_space(trial: optuna.Trial, ctx: StudyContext) -> TrialPlan:
    """variant: one of the 17 (16 combinations with value grounding on, rung 0 with it off); seed: --seeds.
    Every cell of the grid once (enqueued up front), the preset's settings unchanged: the factorial measures the
    components, not their tuning (the ladder study tunes)."""
    v = trial.suggest_categorical("variant", grid(ctx.seeds)["variant"])
    seed = trial.suggest_categorical("seed", list(ctx.seeds))
    return TrialPlan(variants()[v], int(seed), ())


def cells(ctx: StudyContext) -> list[dict]:
    """Every (variant, seed) cell, enqueued when the study is created."""
    return [{"variant": v, "seed": s} for s in ctx.seeds for v in range(len(variants()))]


SPEC = StudySpec(
    name="factorial", description="the 16 combinations of adapters, CFE, SKE, decoder (+ rung 0 without value "
                                  "grounding) at 2+ seeds; main effects and interactions with bootstrap CIs",
    space=factorial_space, default_trials=34, quick_trials=34, prune=False, grid=cells,
    sampler=lambda seed, ctx: optuna.samplers.RandomSampler(seed=seed),
    budget_note="17 variants x seeds (default 2): one trial per grid cell, the preset's settings",
    reports="main effects and pairwise interactions in test mIoU with 95% bootstrap CIs (expressions and seeds "
            "resampled), overall and per expression kind, as a table and a heatmap",
)
