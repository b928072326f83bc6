"""``tune``: one variant's hyperparameters on val mIoU, pruned on per-epoch val mIoU."""

from __future__ import annotations

import optuna

from risclip.config import Components

from .base import StudyContext, StudySpec, TrialPlan, log_uniform


def tune_space(trial: optuna.Trial, ctx: StudyContext) -> TrialPlan:
    """train.lr (1e-4..3e-2, log), train.cfe_lr_scale and train.ske_lr_scale (0.1..3, log, when on),
    train.decoder_lr (1e-4..3e-2, log, with the decoder), train.dice_weight (0.25..4, log),
    train.focal_alpha (-1 = off, 0.25, 0.5, 0.75), model.adapter_dim (16, 32, 64), model.cfe_dim (32, 64, 128),
    model.cfe_layers (all, last half, last), model.ske_form (maps, joint) with model.ske_dim (16, 32, 64) for
    maps or model.ske_blocks (1, 2) for joint, train.stage1_epochs (2..8), model.tau (0.3..0.8) and
    model.value_path (maskclip, clearclip) for rung 0 (the only things it has)."""
    comp = ctx.components or Components.from_names("adapters")
    sets: list[str] = []
    if not comp.trains_anything:
        sets.append(f"model.tau={trial.suggest_float('tau', 0.3, 0.8)}")
        sets.append(f"model.value_path={trial.suggest_categorical('value_path', ['maskclip', 'clearclip'])}")
        return TrialPlan(comp, 0, tuple(sets))
    if comp.trains_patch_level:
        sets.append(f"train.lr={log_uniform(trial, 'lr', 1e-4, 3e-2)}")
        sets.append(f"train.stage1_epochs={trial.suggest_int('stage1_epochs', 2, 8)}")
    if comp.decoder:
        sets.append(f"train.decoder_lr={log_uniform(trial, 'decoder_lr', 1e-4, 3e-2)}")
    sets.append(f"train.dice_weight={log_uniform(trial, 'dice_weight', 0.25, 4.0)}")
    sets.append(f"train.focal_alpha={trial.suggest_categorical('focal_alpha', [-1.0, 0.25, 0.5, 0.75])}")
    if comp.adapters:
        sets.append(f"model.adapter_dim={trial.suggest_categorical('adapter_dim', [16, 32, 64])}")
    if comp.cfe:
        sets.append(f"train.cfe_lr_scale={log_uniform(trial, 'cfe_lr_scale', 0.1, 3.0)}")
        sets.append(f"model.cfe_dim={trial.suggest_categorical('cfe_dim', [32, 64, 128])}")
        where = trial.suggest_categorical("cfe_layers", ["all", "last_half", "last"])
        n = ctx.fusion_points
        if where != "all":
            chosen = list(range(n // 2, n)) if where == "last_half" else [n - 1]
            sets.append(f"model.cfe_layers={chosen}".replace(" ", ""))
    if comp.ske:
        sets.append(f"train.ske_lr_scale={log_uniform(trial, 'ske_lr_scale', 0.1, 3.0)}")
        form = trial.suggest_categorical("ske_form", ["maps", "joint"])
        sets.append(f"model.ske_form={form}")
        if form == "maps":
            sets.append(f"model.ske_dim={trial.suggest_categorical('ske_dim', [16, 32, 64])}")
        else:
            sets.append(f"model.ske_blocks={trial.suggest_int('ske_blocks', 1, 2)}")
    return TrialPlan(comp, 0, tuple(sets))


SPEC = StudySpec(
    name="tune", description="one variant (--components) tuned on val mIoU; median pruning on per-epoch val mIoU",
    space=tune_space, default_trials=16, quick_trials=3,
    budget_note="16 trials, each within the time cap (--time-cap, default 600 s; a trial past it is pruned)",
    reports="optimisation history, parameter importances, the best trial's settings as --set arguments",
)
