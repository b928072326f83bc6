"""``pareto``: val mIoU up, inference latency down (``bench.costs.profiling``, the benchmark suite's measuring
code), over components and widths; the Pareto front plotted and listed."""

from __future__ import annotations

import optuna

from risclip.config import Components

from .base import StudyContext, StudySpec, TrialPlan


def pareto_space(trial: optuna.Trial, ctx: StudyContext) -> TrialPlan:
    """the factors (on/off each, value grounding on; default adapters, cfe, ske, decoder; --factors), model.adapter_dim (16, 32, 64),
    model.cfe_dim (32, 64, 128), model.decoder_dims (narrow 32-24-16-8, preset 64-48-32-16, wide 128-96-64-32).
    Two objectives: val mIoU (maximise) and batch-1 inference ms per image (minimise)."""
    flags = {f: trial.suggest_categorical(f, [False, True]) for f in ctx.factors}
    comp = Components.from_flags({"value": True, **flags})
    sets: list[str] = []
    if comp.adapters:
        sets.append(f"model.adapter_dim={trial.suggest_categorical('adapter_dim', [16, 32, 64])}")
    if comp.cfe:
        sets.append(f"model.cfe_dim={trial.suggest_categorical('cfe_dim', [32, 64, 128])}")
    if comp.decoder:
        dims = {"narrow": "[32,24,16,8]", "preset": "[64,48,32,16]", "wide": "[128,96,64,32]"}
        sets.append(f"model.decoder_dims={dims[trial.suggest_categorical('decoder_width', list(dims))]}")
    return TrialPlan(comp, 0, tuple(sets))


SPEC = StudySpec(
    name="pareto", description="val mIoU against inference latency over components and widths (NSGA-II)",
    space=pareto_space, objectives=("val_mIoU", "latency_ms"), default_trials=24, quick_trials=3, prune=False,
    sampler=lambda seed, ctx: optuna.samplers.NSGAIISampler(seed=seed, population_size=8),
    budget_note="24 trials (3 NSGA-II generations of 8); multi-objective studies cannot prune",
    reports="the Pareto front (plot and list) of val mIoU against batch-1 latency",
)
