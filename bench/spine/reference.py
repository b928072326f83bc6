"""The from-scratch reference (:mod:`risclip.reference`, no CLIP) as a row of the ladder: trained on the
same train samples as the rungs for a multiple of rung 1's training time, scored exactly like a rung
(test mIoU, select mIoU, text controls), tracked and reused like a variant (kind ``reference``).

The budget is wall time: ``multiplier`` x rung 1's median training seconds over the seeds of the same
invocation. It is
turned into a whole number of epochs before training starts, by timing a few steps
(:func:`risclip.reference.seconds_per_epoch`), so that the schedule is known up front and the run is
deterministic given that number; the epochs and the seconds actually spent are logged beside it. The run's
identity holds the multiplier, not the seconds, so a rerun on a slower or faster machine reuses it.
"""

from __future__ import annotations

import math
import time

from tqdm import tqdm

from bench.spine.proposals import ProposalSelection
from bench.spine.results import row_from_run
from bench.spine.variant import Scores, log_variant
from risclip.engine import LearningCurve, RunResult, build_dataset, resolve_device, score_trained
from risclip.identity import data_identity, identity_hash
from risclip.reference import ReferenceConfig, seconds_per_epoch, train_reference

REFERENCE_KIND = "reference"


def reference_name(multiplier: float) -> str:
    return f"reference ({multiplier:g}x rung-1 time)"


def parse_multipliers(text: str) -> tuple[float, ...]:
    """``"1,3"`` -> (1.0, 3.0); an empty string: none."""
    try:
        values = tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise ValueError(f"--reference takes comma-separated multiples of rung 1's training time, e.g. 1,3 "
                         f"(got {text!r})") from None
    if any(v <= 0 or math.isnan(v) for v in values):
        raise ValueError(f"--reference multiples must be positive (got {text!r})")
    return tuple(dict.fromkeys(values))


def reference_identity(cfg: ReferenceConfig, multiplier: float, seed: int, data: dict, fingerprint: str,
                       threshold_from_val: bool = False, beside: str = "") -> str:
    """The reference run's identity. Its budget is ``multiplier`` x rung 1's measured time, which is not part of it
    (a wall time is never the same twice); what sets that time is: the preset (data, fingerprint) and ``beside``, the
    ``--set`` overrides of the invocation whose rung 1 it is measured against, so a reference trained beside a rung 1
    run three times longer is not the preset's (an empty ``beside``, the ladder's own case, keeps the identities
    recorded before it existed)."""
    ident = {"reference": cfg.to_dict(), "multiplier": multiplier, "seed": seed, "data": data_identity(data),
             "data_fingerprint": fingerprint}
    if beside:
        ident["beside_overrides"] = beside
    if threshold_from_val:  # scored at its own val cut, as the rungs are (TrainConfig.threshold_from_val)
        ident["cut"] = "val"
    return identity_hash(ident)


def default_config(preset) -> ReferenceConfig:
    """The reference a preset trains: the rungs' CPU autocast (TrainConfig.cpu_amp) for it too, as its budget is
    rung 1's wall time."""
    return ReferenceConfig(cpu_amp=preset.train.cpu_amp)


def canonical(overrides: str) -> str:
    """``--set`` assignments (";"-joined) in one order, so the same overrides given in another order name one run."""
    return ";".join(sorted({o for o in overrides.split(";") if o}))


def reference_hash(ctx, multiplier: float, seed: int, cfg: ReferenceConfig | None = None) -> str:
    """The run identity of the reference at ``multiplier`` for ``seed`` under ``ctx``'s preset, data and ``--set``
    overrides (rung 1's measured time is not part of it, so whether it is reusable is known before rung 1 runs)."""
    preset = ctx.preset
    return reference_identity(cfg or default_config(preset), multiplier, seed, preset.data.to_dict(), ctx.fingerprint,
                              preset.train.threshold_from_val, beside=canonical(getattr(ctx, "overrides", "")))


def run_reference(ctx, multiplier: float, seed: int, rung1_seconds: float,
                  cfg: ReferenceConfig | None = None) -> dict:
    """Train and score the reference at ``multiplier`` x ``rung1_seconds`` (or reuse the finished run)."""
    preset = ctx.preset
    cfg = cfg or default_config(preset)
    name = reference_name(multiplier)
    run_hash = reference_hash(ctx, multiplier, seed, cfg)
    found = None if ctx.force else ctx.tracker.find_finished(run_hash)
    if found is not None:
        tqdm.write(f"{name} seed {seed}: reusing finished run {found.info.run_id[:8]} (hash {run_hash})")
        return row_from_run(found, REFERENCE_KIND, name, seed, None, reused=True)
    device = resolve_device(ctx.device)
    train_set = build_dataset(preset.data, preset.model, preset.data.train_split, train=True)
    per_epoch = seconds_per_epoch(train_set, cfg, seed, device=device)
    budget = multiplier * rung1_seconds
    epochs = max(1, round(budget / per_epoch))
    tags = {"run_hash": run_hash, "config_hash": run_hash, "kind": REFERENCE_KIND, "components": name,
            "seed": str(seed), "rung": "", "preset": ctx.preset.name, "git_revision": ctx.git_rev,
            "data_fingerprint": ctx.fingerprint, "multiplier": f"{multiplier:g}"}
    run_id = ctx.tracker.start(f"{name} s{seed}", tags, parent_id=ctx.parent_id)
    with ctx.tracker.ending(run_id):
        ctx.tracker.log_params(run_id, {"reference": cfg.to_dict(), "multiplier": multiplier, "seed": seed,
                                        "epochs": epochs, "budget_seconds": round(budget, 1),
                                        "estimated_seconds_per_epoch": round(per_epoch, 2),
                                        "data": preset.data.to_dict()})
        val_set = build_dataset(preset.data, preset.model, preset.data.val_split, train=False)
        curve = LearningCurve(val_set, preset.train, device) if preset.train.learning_curve and len(val_set) else None
        t0 = time.perf_counter()
        model, history = train_reference(train_set, cfg, epochs, seed=seed, device=device, progress=ctx.progress,
                                         epoch_end=(lambda m: curve(m, 2)) if curve is not None else None)
        train_seconds = time.perf_counter() - t0 - (curve.seconds if curve is not None else 0.0)
        for row in history:
            ctx.tracker.log_metrics(run_id, {"reference_loss": row["loss"], "reference_epoch_seconds": row["seconds"],
                                             **{f"reference_{k}": float(v) for k, v in row.items() if k.startswith("val_")}},
                                    step=int(row["epoch"]))
        eval_cfg = preset.train
        t1 = time.perf_counter()
        test_set = build_dataset(preset.data, preset.model, preset.data.test_split, train=False)
        selection = ProposalSelection(test_set)
        sc = score_trained(model, test_set, val_set, eval_cfg, device, evaluators=(selection,), text_controls=True, label="reference")
        result = RunResult(components=name, model_hash=cfg.config_hash(), train_hash=str(epochs),
                           metrics=sc.test.metrics, by_kind=sc.test.by_kind, val_metrics=sc.val_metrics,
                           history=history, train_seconds=train_seconds, eval_seconds=time.perf_counter() - t1,
                           eval_samples=len(test_set), protocol_metrics=sc.test.protocols, per_sample=sc.test.per_sample,
                           controls=sc.controls, threshold=sc.threshold, val_cuts=sc.val_cuts)
        log_variant(ctx.tracker, run_id, Scores(result, selection.compute()), {"epochs": float(epochs),
                                                                              "budget_seconds": budget})
    return row_from_run(ctx.tracker.get_run(run_id), REFERENCE_KIND, name, seed, None, reused=False)
