"""Which tracked MLflow runs a report reads, said once for every report and experiment that asks: the latest
plain ladder (every rung, the preset as it is) on a draw, the latest tuned one, an invocation's rows with
each run's per-kind metrics, tuning probes, reruns of one config, and the invocation that really trained
the rungs an invocation reused. Reads runs; trains nothing."""

from __future__ import annotations

import math

import pandas as pd

from bench.spine.baselines import PROPOSAL_BASELINES
from bench.spine.presets import DEFAULT_PRESET
from bench.spine.proposals import ATTRIBUTE_FORMS, form_key
from bench.spine.results import KINDS, ROW_FIELDS, num, summarise
from bench.spine.tracking import Tracker
from risclip.config import LADDER


def is_plain_ladder(run, data_seed: str = "0") -> bool:
    """An invocation that ran every rung of the ladder with the preset as it is (no ``--set``, no ``--tuned``)
    on the given SynthRef draw (``--data-seed``; runs from before the tag existed are the preset's draw, 0)."""
    tags = run.data.tags
    return _whole_ladder(tags) and not tags.get("tuned") and on_draw(tags, data_seed)


def _whole_ladder(tags: dict) -> bool:
    """Every rung of the ladder, with no ``--set``."""
    return {str(c) for c in LADDER} <= set(tags.get("variants", "").split(";")) and not tags.get("overrides")


def latest_tuned_invocation(tracker: Tracker):
    """The latest finished invocation that ran every rung on a ladder study's chosen settings (``--tuned``)."""
    for r in tracker.runs({"kind": "invocation"}, limit=200):
        if r.data.tags.get("tuned") and _whole_ladder(r.data.tags) and on_draw(r.data.tags, "0"):
            return r
    return None


def latest_plain_ladder(tracker: Tracker, data_seed: str = "0"):
    """The latest finished plain-ladder invocation on that draw (:func:`is_plain_ladder`), or None."""
    return next((r for r in tracker.runs({"kind": "invocation"}, limit=200) if is_plain_ladder(r, data_seed)), None)


def variant_summaries(tracker: Tracker, parent) -> dict[str, dict]:
    """{components: :func:`bench.results.summarise` line} of an invocation's variants (reused runs included)."""
    return {s["components"]: s for s in summarise(tracker.load_json(parent.info.run_id, "results.json"))
            if s["kind"] == "variant"}


def latest_invocation(tracker: Tracker, run_id: str | None, data_seed: str = "0"):
    """The given parent run, or the latest finished invocation that ran the plain ladder on that draw."""
    if run_id:
        return tracker.get_run(run_id)
    run = latest_plain_ladder(tracker, data_seed)
    if run is None:
        raise LookupError(f"no finished bench.ablate ladder invocation (all five rungs, no --set) in experiment "
                          f"{tracker.experiment_id} of {tracker.uri}; run python -m bench.ablate first, or name "
                          f"one with --run-id")
    return run


def load_rows(tracker: Tracker, parent) -> pd.DataFrame:
    rows = tracker.load_json(parent.info.run_id, "results.json")
    df = pd.DataFrame(rows, columns=list(ROW_FIELDS))
    df["rung"] = pd.Series([None if r is None or (isinstance(r, float) and math.isnan(r)) else int(r)
                            for r in df["rung"]], dtype=object, index=df.index)
    for kind in KINDS:
        df[f"{kind}_mIoU"] = math.nan
        df[f"{kind}_select_mIoU"] = math.nan
    for f in ATTRIBUTE_FORMS:
        df[f"attribute_{form_key(f)}_select_mIoU"] = math.nan
    for i, r in df.iterrows():
        m = tracker.get_run(r["mlflow_run_id"]).data.metrics
        if r["kind"] in ("variant", "reference"):
            for f in ATTRIBUTE_FORMS:
                col = f"attribute_{form_key(f)}_select_mIoU"
                df.loc[i, col] = m.get(f"test_{col}", math.nan)
        for kind in KINDS:
            if r["kind"] in ("variant", "reference"):
                df.loc[i, f"{kind}_mIoU"] = m.get(f"test_{kind}_mIoU", math.nan)
                df.loc[i, f"{kind}_select_mIoU"] = m.get(f"test_{kind}_select_mIoU", math.nan)
            else:  # one run holds every baseline, its metrics prefixed by the baseline's name
                df.loc[i, f"{kind}_mIoU"] = m.get(f"{r['components']}/test_{kind}_mIoU", math.nan)
                if r["components"] in PROPOSAL_BASELINES:
                    df.loc[i, f"{kind}_select_mIoU"] = df.loc[i, f"{kind}_mIoU"]
    return df


def on_draw(tags: dict, data_seed: str) -> bool:
    """An invocation on the given SynthRef draw (runs from before the ``data_seed`` tag are draw 0)."""
    return (tags.get("data_seed", "0") or "0") == data_seed


def tuning_runs(tracker: Tracker, limit: int = 40, data_seed: str = "0") -> pd.DataFrame:
    """Finished variant runs of invocations that used ``--set`` (tuning probes) on the given draw, newest
    first: a probe on another draw scored other data, so it is never set beside this draw's runs."""
    parents = tracker.runs({"kind": "invocation"}, limit=500)
    overrides = {p.info.run_id: p.data.tags["overrides"] for p in parents
                 if p.data.tags.get("overrides") and on_draw(p.data.tags, data_seed)}
    rows = []
    for r in tracker.runs({"kind": "variant"}):
        parent = r.data.tags.get("mlflow.parentRunId")
        if parent not in overrides:
            continue
        m = r.data.metrics
        rows.append({"overrides": overrides[parent], "components": r.data.tags.get("components", ""),
                     "seed": r.data.tags.get("seed", ""), "val_mIoU": m.get("val_mIoU", math.nan),
                     "test_mIoU": m.get("test_mIoU", math.nan), "select_mIoU": m.get("test_select_mIoU", math.nan)})
        if len(rows) >= limit:
            break
    return pd.DataFrame(rows, columns=["overrides", "components", "seed", "val_mIoU", "test_mIoU", "select_mIoU"])


def rerun_spread(tracker: Tracker, df: pd.DataFrame) -> pd.DataFrame:
    """For each variant row, every finished run with its config hash: the largest mIoU difference."""
    out = []
    variants = df[df["kind"] == "variant"].drop_duplicates("config_hash")  # rung 0: one run serves every seed
    for _, r in variants.iterrows():
        runs = tracker.finished_children("run_hash", r["config_hash"])
        values = [x.data.metrics.get("test_mIoU") for x in runs if "test_mIoU" in x.data.metrics]
        if len(values) > 1:
            out.append({"components": r["components"], "seed": int(r["seed"]), "runs": len(values),
                        "max_abs_diff": max(values) - min(values)})
    return pd.DataFrame(out, columns=["components", "seed", "runs", "max_abs_diff"])


def reused_rung_runs(df: pd.DataFrame, tracker: Tracker | None = None) -> int:
    """How many of an invocation's trained rung runs cost it less than their training: runs it reused from
    earlier invocations, and (with ``tracker``) runs of rungs 1-3 that loaded their stage 1 from the shared cache
    (rung 4 loads rung 3's within the same invocation by design)."""
    # rung 0 trains nothing: its one run serves every seed (reused within the invocation) and costs seconds
    number = df["rung"].map(num)
    rungs = df[(df["kind"] == "variant") & (number != 0)]
    flag = rungs["reused"].map(lambda x: str(x).lower() in ("true", "1")).astype(bool)
    count = int(flag.sum())
    if tracker is not None:
        for _, r in rungs[~flag].iterrows():
            if num(r["rung"]) in (1, 2, 3):
                tags = tracker.get_run(r["mlflow_run_id"]).data.tags
                count += tags.get("stage1_reused") == "True"
    return count


def timing_invocation(tracker: Tracker, df: pd.DataFrame, parent_id: str):
    """Where an invocation reused its rung runs (a ladder re-run to add the from-scratch reference, say): the one
    earlier invocation that trained every one of them, if there is one and it reused none itself, else None.
    Its wall time is then the ladder's."""
    number = df["rung"].map(num)
    rungs = df[(df["kind"] == "variant") & (number != 0)]
    parents = set()
    for run_id in rungs["mlflow_run_id"]:
        parents.add(tracker.get_run(run_id).data.tags.get("mlflow.parentRunId"))
    if len(parents) != 1 or None in parents or parent_id in parents:
        return None
    earlier = tracker.get_run(parents.pop())
    if earlier.info.status != "FINISHED" or reused_rung_runs(load_rows(tracker, earlier), tracker):
        return None
    return earlier


def preset_of(run) -> str:
    """The preset a parent run was made with (bench.ablate tags every invocation with it)."""
    return run.data.tags.get("preset") or DEFAULT_PRESET
