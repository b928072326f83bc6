"""Optuna studies over RISCLIP variants: each a small declarative module (search space, objective,
budget, report) run through the same spine as ``bench.ablate`` (``bench.spine.variant``, ``run_variant``).

  python -m studies list
  python -m studies run NAME [--preset P] [--trials N] [--workers K] [--storage URL] [--quick]
  python -m studies report NAME
"""

from __future__ import annotations

from . import factorial, ladder, pareto, tune
from .base import StudySpec

STUDIES: dict[str, StudySpec] = {m.SPEC.name: m.SPEC for m in (tune, ladder, factorial, pareto)}


def get_study(name: str) -> StudySpec:
    if name not in STUDIES:
        raise ValueError(f"unknown study '{name}'; valid: {', '.join(STUDIES)}")
    return STUDIES[name]
