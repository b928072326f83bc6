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


def preset_params(preset, comp: Components, fusion_points: int = 4) -> dict | None:
    """The preset's own settings as :func:`tune_space` parameters for ``comp``: the ``ladder`` study enqueues
    them as every rung's first trial, so each rung's tuning starts from (and on val can only improve on) the
    hand-set preset, alike for every rung. ``None`` where a preset value lies outside the space (e.g. a
    paper preset's 256-wide CFE), rather than enqueue a trial the space cannot express."""
    m, t = preset.model, preset.train
    if not comp.trains_anything:
        p = {"tau": m.tau, "value_path": m.value_path}
        return p if 0.3 <= m.tau <= 0.8 else None
    p: dict = {"dice_weight": t.dice_weight, "focal_alpha": t.focal_alpha}
    ok = 0.25 <= t.dice_weight <= 4.0 and t.focal_alpha in (-1.0, 0.25, 0.5, 0.75)
    if comp.trains_patch_level:
        p.update(lr=t.lr, stage1_epochs=t.stage1_epochs)
        ok &= 1e-4 <= t.lr <= 3e-2 and 2 <= t.stage1_epochs <= 8
    if comp.decoder:
        p["decoder_lr"] = t.decoder_lr
        ok &= 1e-4 <= t.decoder_lr <= 3e-2
    if comp.adapters:
        p["adapter_dim"] = m.adapter_dim
        ok &= m.adapter_dim in (16, 32, 64)
    if comp.cfe:
        n = fusion_points
        layers = None if m.cfe_layers is None else list(m.cfe_layers)
        where = {None: "all", tuple(range(n)): "all", tuple(range(n // 2, n)): "last_half", (n - 1,): "last"}.get(
            None if layers is None else tuple(layers))
        p.update(cfe_lr_scale=t.cfe_lr_scale, cfe_dim=m.cfe_dim, cfe_layers=where)
        ok &= where is not None and m.cfe_dim in (32, 64, 128) and 0.1 <= t.cfe_lr_scale <= 3.0
    if comp.ske:
        p.update(ske_lr_scale=t.ske_lr_scale, ske_form=m.ske_form)
        ok &= 0.1 <= t.ske_lr_scale <= 3.0
        if m.ske_form == "maps":
            p["ske_dim"] = m.ske_dim
            ok &= m.ske_dim in (16, 32, 64)
        else:
            p["ske_blocks"] = m.ske_blocks
            ok &= m.ske_blocks in (1, 2)
    return p if ok else None
