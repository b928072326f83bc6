"""``tune``: one variant's hyperparameters on val mIoU, pruned on per-epoch val mIoU."""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from risclip.config import Components

from .base import StudyContext, StudySpec, TrialPlan


@dataclass(frozen=True)
class Dim:
    """One searched parameter: a float range (``log`` or not), an int range, or a set of choices. The one
    place its bounds are written: :func:`tune_space` draws from it and :func:`preset_params` checks the
    preset's values against it."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple = ()

    def suggest(self, trial: optuna.Trial, name: str):
        if self.choices:
            return trial.suggest_categorical(name, list(self.choices))
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high))
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def contains(self, value) -> bool:
        if self.choices:
            return value in self.choices
        return value is not None and self.low <= value <= self.high


#: the tune space, by Optuna parameter name (the names are stored in studies: keep them)
SPACE: dict[str, Dim] = {
    "tau": Dim(0.3, 0.8),
    "value_path": Dim(choices=("maskclip", "clearclip")),
    "lr": Dim(1e-4, 3e-2, log=True),
    "stage1_epochs": Dim(2, 8, integer=True),
    "decoder_lr": Dim(1e-4, 3e-2, log=True),
    "dice_weight": Dim(0.25, 4.0, log=True),
    "focal_alpha": Dim(choices=(-1.0, 0.25, 0.5, 0.75)),
    "adapter_dim": Dim(choices=(16, 32, 64)),
    "cfe_lr_scale": Dim(0.1, 3.0, log=True),
    "cfe_dim": Dim(choices=(32, 64, 128)),
    "cfe_layers": Dim(choices=("all", "last_half", "last")),
    "ske_lr_scale": Dim(0.1, 3.0, log=True),
    "ske_form": Dim(choices=("maps", "joint")),
    "ske_dim": Dim(choices=(16, 32, 64)),
    "ske_blocks": Dim(1, 2, integer=True),
}


def _draw(trial: optuna.Trial, name: str):
    return SPACE[name].suggest(trial, name)


def _fusion_layers(where: str, n: int) -> list[int] | None:
    """``cfe_layers``'s choice as the fusion points it names (None: all ``n``)."""
    return {"all": None, "last_half": list(range(n // 2, n)), "last": [n - 1]}[where]


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
        sets.append(f"model.tau={_draw(trial, 'tau')}")
        sets.append(f"model.value_path={_draw(trial, 'value_path')}")
        return TrialPlan(comp, 0, tuple(sets))
    if comp.trains_patch_level:
        sets.append(f"train.lr={_draw(trial, 'lr')}")
        sets.append(f"train.stage1_epochs={_draw(trial, 'stage1_epochs')}")
    if comp.decoder:
        sets.append(f"train.decoder_lr={_draw(trial, 'decoder_lr')}")
    sets.append(f"train.dice_weight={_draw(trial, 'dice_weight')}")
    sets.append(f"train.focal_alpha={_draw(trial, 'focal_alpha')}")
    if comp.adapters:
        sets.append(f"model.adapter_dim={_draw(trial, 'adapter_dim')}")
    if comp.cfe:
        sets.append(f"train.cfe_lr_scale={_draw(trial, 'cfe_lr_scale')}")
        sets.append(f"model.cfe_dim={_draw(trial, 'cfe_dim')}")
        chosen = _fusion_layers(_draw(trial, "cfe_layers"), ctx.fusion_points)
        if chosen is not None:
            sets.append(f"model.cfe_layers={chosen}".replace(" ", ""))
    if comp.ske:
        sets.append(f"train.ske_lr_scale={_draw(trial, 'ske_lr_scale')}")
        form = _draw(trial, "ske_form")
        sets.append(f"model.ske_form={form}")
        if form == "maps":
            sets.append(f"model.ske_dim={_draw(trial, 'ske_dim')}")
        else:
            sets.append(f"model.ske_blocks={_draw(trial, 'ske_blocks')}")
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
    hand-set preset, alike for every rung. ``None`` where a preset value lies outside :data:`SPACE` (e.g. a
    paper preset's 256-wide CFE), rather than enqueue a trial the space cannot express."""
    m, t = preset.model, preset.train
    if not comp.trains_anything:
        p: dict = {"tau": m.tau, "value_path": m.value_path}
    else:
        p = {"dice_weight": t.dice_weight, "focal_alpha": t.focal_alpha}
        if comp.trains_patch_level:
            p.update(lr=t.lr, stage1_epochs=t.stage1_epochs)
        if comp.decoder:
            p["decoder_lr"] = t.decoder_lr
        if comp.adapters:
            p["adapter_dim"] = m.adapter_dim
        if comp.cfe:
            layers = None if m.cfe_layers is None else list(m.cfe_layers)
            if layers == list(range(fusion_points)):
                layers = None  # every fusion point, spelt out
            where = next((w for w in SPACE["cfe_layers"].choices if _fusion_layers(w, fusion_points) == layers), None)
            p.update(cfe_lr_scale=t.cfe_lr_scale, cfe_dim=m.cfe_dim, cfe_layers=where)
        if comp.ske:
            p.update(ske_lr_scale=t.ske_lr_scale, ske_form=m.ske_form)
            p.update({"ske_dim": m.ske_dim} if m.ske_form == "maps" else {"ske_blocks": m.ske_blocks})
    return p if all(SPACE[k].contains(v) for k, v in p.items()) else None
