"""What a study is: a small declarative spec (search space, objective directions, budget, sampler and
pruner) that the runner (:mod:`studies.runner`) executes through the same spine as ``bench.ablate``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import optuna

from risclip.config import Components


@dataclass(frozen=True)
class TrialPlan:
    """What one trial trains: a variant, a seed, and ``--set``-style overrides of the preset."""

    components: Components
    seed: int = 0
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyContext:
    """Per-invocation settings a search space may read (e.g. the variant ``tune`` tunes)."""

    components: Components | None = None
    time_cap_s: float = 600.0
    seeds: tuple[int, ...] = (0, 1)
    fusion_points: int = 4  # CFE fusion points of the preset's backbone (min of the two towers' depths)
    # factorial: the components crossed (built-ins or registered plug-ins), value grounding on in every cell
    factors: tuple[str, ...] = ("adapters", "cfe", "ske", "decoder")


@dataclass(frozen=True)
class StudySpec:
    name: str
    description: str
    space: Callable[[optuna.Trial, StudyContext], TrialPlan]
    objectives: tuple[str, ...] = ("val_mIoU",)  # "val_mIoU" (maximise), "latency_ms" (minimise)
    default_trials: int = 12
    quick_trials: int = 2
    prune: bool = True  # per-epoch val mIoU to a median pruner (single objective only)
    sampler: Callable[[int, StudyContext], optuna.samplers.BaseSampler] = field(
        default=lambda seed, ctx: optuna.samplers.TPESampler(seed=seed))
    # a grid study lists its trials' parameters up front: they are enqueued when the study is created, and
    # workers pop them one by one (atomic in the storage), so K workers never run a cell twice
    grid: Callable[[StudyContext], list[dict]] | None = None
    # the preset's own settings as the first trial (a spec's ``space`` parameters; see studies.tune.preset_params)
    start_from_preset: bool = False
    budget_note: str = ""
    reports: str = ""  # what its report shows

    @property
    def directions(self) -> list[str]:
        return ["maximize" if o == "val_mIoU" else "minimize" for o in self.objectives]

    def describe_space(self) -> str:
        return (self.space.__doc__ or "").strip()


def log_uniform(trial: optuna.Trial, name: str, low: float, high: float) -> float:
    return trial.suggest_float(name, low, high, log=True)
