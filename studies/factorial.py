"""``factorial``: every combination of the factors (by default adapters, CFE, SKE and the decoder; any registered
component, plug-ins included, with ``--factors``), value grounding on, plus rung 0 with value grounding off, at
2+ seeds; the report gives main effects and pairwise interactions with bootstrap confidence intervals
(:mod:`studies.analysis`)."""

from __future__ import annotations

import itertools

import optuna

from risclip.config import Components

from .base import StudyContext, StudySpec, TrialPlan

DEFAULT_FACTORS: tuple[str, ...] = StudyContext().factors
FACTORS = DEFAULT_FACTORS  # the default design's factors (a study records its own: studies.report.factors_of)


def variants(factors: tuple[str, ...] = DEFAULT_FACTORS) -> list[Components]:
    """The 2^k combinations of the k factors with value grounding on, then rung 0 with it off."""
    combos = [Components.from_flags({"value": True, **dict(zip(factors, bits))})
              for bits in itertools.product((False, True), repeat=len(factors))]
    return [*combos, Components(value=False)]


def check_factors(factors: tuple[str, ...]) -> tuple[str, ...]:
    """Factors that the registry knows, distinct, two or more, value grounding not among them; every cell of
    the design must satisfy each component's requirements."""
    from risclip import registry

    if len(factors) < 2 or len(set(factors)) != len(factors):
        raise ValueError(f"--factors takes two or more distinct component names (got {','.join(factors)})")
    for f in factors:
        if f == "value":
            raise ValueError("--factors: value grounding is on in every cell (rung 0 without it is added)")
        registry.get(f)
    for c in variants(factors):
        c.check_requirements()
    return factors


def grid(seeds: tuple[int, ...], factors: tuple[str, ...] = DEFAULT_FACTORS) -> dict[str, list]:
    return {"variant": list(range(len(variants(factors)))), "seed": list(seeds)}


def factorial_space(trial: optuna.Trial, ctx: StudyContext) -> TrialPlan:
    """variant: one of the 2^k + 1 (every combination of the k factors with value grounding on, rung 0 with it
    off; 17 for the default four); seed: --seeds. Every cell of the grid once (enqueued up front), the preset's
    settings unchanged: the factorial measures the components, not their tuning (the ladder study tunes)."""
    v = trial.suggest_categorical("variant", grid(ctx.seeds, ctx.factors)["variant"])
    seed = trial.suggest_categorical("seed", list(ctx.seeds))
    return TrialPlan(variants(ctx.factors)[v], int(seed), ())


def cells(ctx: StudyContext) -> list[dict]:
    """Every (variant, seed) cell, enqueued when the study is created."""
    return [{"variant": v, "seed": s} for s in ctx.seeds for v in range(len(variants(ctx.factors)))]


SPEC = StudySpec(
    name="factorial", description="the 16 combinations of adapters, CFE, SKE, decoder (+ rung 0 without value "
                                  "grounding) at 2+ seeds; main effects and interactions with bootstrap CIs",
    space=factorial_space, default_trials=34, quick_trials=34, prune=False, grid=cells,
    sampler=lambda seed, ctx: optuna.samplers.RandomSampler(seed=seed),
    budget_note="17 variants x seeds (default 2): one trial per grid cell, the preset's settings",
    reports="main effects and pairwise interactions in test mIoU with 95% bootstrap CIs (expressions and seeds "
            "resampled), overall and per expression kind, as a table and a heatmap",
)
