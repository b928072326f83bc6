"""``ladder``: every rung tuned with the same number of trials and the same time cap, chosen on val;
then each rung's chosen settings re-run with 3 seeds and scored on test (``bench.ablate --tuned``).

Each rung is its own Optuna study, ``<study name>-rung<r>``, over :func:`studies.tune.tune_space` (rung 0
tunes its zero-shot threshold tau, the only thing it has). The chosen settings go to
``studies/tuned/<preset>.json`` with their provenance (study, storage, trial, val mIoU, git revision);
``python -m bench.ablate --tuned`` runs the ladder on them, and the report sets that ladder beside the
preset's. Nothing is chosen on test. Every rung's first trial is the preset's own settings
(:func:`studies.tune.preset_params`; at seed 0 it reuses the preset ladder's run when one is stored), so the
sampler's draws compete with the hand-set schedule on equal terms in every rung.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.trial import TrialState

from risclip.config import LADDER

from .base import StudySpec
from .tune import tune_space

TUNED_DIR = Path(__file__).parent / "tuned"


def rung_study_name(base: str, rung: int) -> str:
    return f"{base}-rung{rung}"


def tuned_path(preset: str) -> Path:
    return TUNED_DIR / f"{preset}.json"


def choose(storage, base: str, git_rev: str, storage_url: str) -> dict:
    """The best COMPLETE trial of every rung's study, on val, and the val mIoU of the preset's own settings
    (each rung's first trial) beside it."""
    chosen = {}
    for rung, comp in enumerate(LADDER):
        study = optuna.load_study(study_name=rung_study_name(base, rung), storage=storage)
        best = study.best_trial
        first = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if t.user_attrs.get("from_preset")]
        chosen[str(comp)] = {"rung": rung, "overrides": [o for o in best.user_attrs.get("overrides", "").split(";") if o],
                             "val_mIoU": best.value, "study": study.study_name, "trial": best.number,
                             "from_preset": bool(best.user_attrs.get("from_preset")),
                             "preset_val_mIoU": first[0].value if first else None,
                             "storage": storage_url, "git_revision": git_rev,
                             "mlflow_run_id": best.user_attrs.get("mlflow_run_id", ""),
                             # finished trials, as the report counts them (a FAIL was retried as another trial)
                             "trials": len(study.get_trials(deepcopy=False,
                                                            states=(TrialState.COMPLETE, TrialState.PRUNED)))}
    return chosen


def write_tuned(preset: str, chosen: dict, command: str, out: str | Path | None = None) -> Path:
    path = Path(out) if out else tuned_path(preset)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"preset": preset, "made_by": command, "chosen_on": "val", "variants": chosen},
                               indent=2, sort_keys=True) + "\n")
    return path


def read_tuned(path: str | Path) -> dict[str, list[str]]:
    """``{components: [--set assignments]}`` from a tuned file (the ``--tuned`` input of bench.ablate)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no tuned settings (make them with python -m studies run ladder)")
    data = json.loads(p.read_text())
    return {k: list(v["overrides"]) for k, v in data["variants"].items()}


SPEC = StudySpec(
    name="ladder", description="every rung tuned alike on val (same trials, same time cap), then 3 seeds on test",
    space=tune_space, default_trials=8, quick_trials=2, start_from_preset=True,
    budget_note="8 trials per rung (5 rungs: 40 trials; the first is the preset's own settings), each within "
                "the time cap, then 3 seeds of each chosen rung",
    reports="the tuned ladder beside the preset's, each rung's chosen settings and their provenance",
)
