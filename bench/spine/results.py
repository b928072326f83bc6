"""Result rows, their summaries over seeds, and the tables and files made of them (shared by
``bench.ablate``, ``bench.report`` and the studies; no CLI here)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from bench.spine.tracking import metric_key
from risclip.config import PAPER_MIOU
from risclip.metrics import METRIC_NAMES

KINDS = ("attribute", "position", "relation")  # SynthRef's expression kinds (RefCOCO sentences have none)
CONTROL_FIELDS = ("swap_mIoU", "generic_mIoU", *(f"{k}_swap_mIoU" for k in KINDS),
                  *(f"{k}_generic_mIoU" for k in KINDS))
ROW_FIELDS = ("kind", "rung", "components", "seed", "mIoU", "oIoU", "P@50", "P@60", "P@70", "P@80", "P@90",
              "select_mIoU", *CONTROL_FIELDS, "train_seconds", "inference_ms_per_image", "peak_memory_mb", "config_hash", "mlflow_run_id",
              "reused", "threshold", "fixed_mIoU")


def row_from_run(run, kind: str, components: str, seed: int | None, rung: int | None, reused: bool) -> dict:
    m = run.data.metrics
    row = {"kind": kind, "rung": rung, "components": components, "seed": seed}
    for name in METRIC_NAMES:
        row[name] = m.get(f"test_{metric_key(name)}", math.nan)
    row["select_mIoU"] = m.get("test_select_mIoU", math.nan)
    row.update(control_columns(m))
    # the mask cut test was scored at, and mIoU at the protocol's own cut when that one was chosen on val
    row.update(threshold=m.get("threshold", math.nan), fixed_mIoU=m.get("test_fixed_mIoU", math.nan))
    row.update(train_seconds=m.get("train_seconds", 0.0), inference_ms_per_image=m.get("inference_ms_per_image", math.nan),
               peak_memory_mb=m.get("peak_memory_mb", math.nan), config_hash=run.data.tags.get("run_hash", ""),
               mlflow_run_id=run.info.run_id, reused=reused)
    return row


def control_columns(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    """The text controls' CSV columns (:data:`CONTROL_FIELDS`) from a run's tracked metrics
    (``bench.variant.control_metrics``); NaN where a run has none."""
    out = {"swap_mIoU": metrics.get(f"{prefix}test_swap_mIoU", math.nan),
           "generic_mIoU": metrics.get(f"{prefix}test_generic_mIoU", math.nan)}
    for k in KINDS:
        for c in ("swap", "generic"):
            out[f"{k}_{c}_mIoU"] = metrics.get(f"{prefix}test_{k}_{c}_mIoU", math.nan)
    return out


def num(x) -> float:
    """A row's value as a float; NaN for a missing one (rows written before a column existed)."""
    try:
        return math.nan if x is None or x == "" else float(x)
    except (TypeError, ValueError):
        return math.nan


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample sd of the values that are not NaN (sd 0 for one value; NaN, NaN for none)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(rows: list[dict]) -> list[dict]:
    """One line per variant: mean and sd over seeds of every metric and cost."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["components"]), []).append(r)
    out = []
    for (kind, comp), rs in groups.items():
        line = {"kind": kind, "rung": rs[0]["rung"], "components": comp, "seeds": len(rs)}
        for k in (*METRIC_NAMES, "select_mIoU", *CONTROL_FIELDS, "train_seconds", "inference_ms_per_image", "peak_memory_mb",
                  "threshold", "fixed_mIoU"):
            line[k], line[f"{k}_sd"] = mean_sd([num(r.get(k)) for r in rs])
        line["paper_mIoU"] = PAPER_MIOU.get(comp) if kind == "variant" else None
        out.append(line)
    return out


def _cell(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def format_table(rows: list[dict]) -> str:
    lines = ["rung  components                          seeds  mIoU (mean ± sd)  oIoU (mean ± sd)  select mIoU  "
             "swap mIoU  generic mIoU  paper mIoU  train s  ms/img  peak MB"]
    for s in summarise(rows):
        rung = "-" if s["rung"] is None else str(s["rung"])
        paper = f"{s['paper_mIoU']:.2f}" if s["paper_mIoU"] is not None else "-"
        name = f"baseline: {s['components']}" if s["kind"] == "baseline" else s["components"]
        ms = "-" if math.isnan(s["inference_ms_per_image"]) else f"{s['inference_ms_per_image']:.1f}"
        mb = "-" if math.isnan(s["peak_memory_mb"]) else f"{s['peak_memory_mb']:.0f}"
        select = "-" if math.isnan(s["select_mIoU"]) else f"{s['select_mIoU']:.2f}"
        lines.append(f"{rung:<5} {name:<35} {s['seeds']:>5}  {s['mIoU']:6.2f} ± {s['mIoU_sd']:<6.2f}   "
                     f"{s['oIoU']:6.2f} ± {s['oIoU_sd']:<6.2f}   {select:>11}  {_cell(s['swap_mIoU']):>9}  "
                     f"{_cell(s['generic_mIoU']):>12}  {paper:>10}  {s['train_seconds']:7.0f}  "
                     f"{ms:>6}  {mb:>7}")
    lines.append("swap mIoU: each test sentence replaced by a sentence of another referent of its image, scored "
                 "against the true mask (a model that reads the text scores far lower than its mIoU); generic mIoU: "
                 "the sentence replaced by 'the object'")
    return "\n".join(lines)


def write_output(rows: list[dict], path: Path, facts: dict | None = None) -> None:
    """One row per variant and seed: CSV, or JSON ``{"rows": [...], **facts}`` (where and how they were made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = [{k: r.get(k) for k in ROW_FIELDS} for r in rows]
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps({**(facts or {}), "rows": clean}, indent=2))
        return
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=ROW_FIELDS)
        w.writeheader()
        w.writerows(clean)


