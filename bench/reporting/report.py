"""Render the ladder report from tracked MLflow runs: ``reports/<preset>/ladder.md`` (+ ``.csv``, ``.png``; an
archived preset's under ``reports/archive/<preset>/``).

It reads the latest finished ``bench.ablate`` invocation of the preset's experiment (or the parent
run given by ``--run-id``): its rows, its child runs' per-kind metrics, and every other finished run
with the same config hash (forced reruns), which shows how well a seed reproduces.

  python -m bench.report                       # after: python -m bench.ablate (reports/synthref/ladder.md)
  python -m bench.report --preset synth-cpu    # an archived preset's ladder (reports/archive/synth-cpu/ladder.md)
  python -m bench.report --run-id <parent>     # a particular invocation
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.reporting.bootstrap import Gap  # noqa: E402
from bench.reporting.curves import anchor, curve_lines, curves_figure, load_curves  # noqa: E402
from bench.reporting.ladder_runs import (  # noqa: E402
    is_plain_ladder,
    latest_invocation,
    latest_plain_ladder,
    latest_tuned_invocation,
    load_rows,
    preset_of,
    rerun_spread,
    reused_rung_runs,
    timing_invocation,
    tuning_runs,
    variant_summaries,
)
from bench.reporting.per_expression import PerExpression  # noqa: E402
from bench.spine.baselines import ORACLE_BASELINES  # noqa: E402
from bench.spine.presets import DEFAULT_PRESET, pinned_command, report_dir  # noqa: E402
from bench.spine.proposals import ATTRIBUTE_FORMS, form_key  # noqa: E402
from bench.spine.results import KINDS, summarise  # noqa: E402
from bench.spine.tracking import DEFAULT_TRACKING_URI, Tracker  # noqa: E402
from risclip.config import LADDER, PAPER_MIOU  # noqa: E402


def default_stem(preset: str) -> str:
    """The report's file stem, in the preset's report folder (presets.report_dir)."""
    return "ladder"


def regenerate_command(preset: str, stem: str, draw: str = "0", run_id: str | None = None) -> str:
    """The ``bench.report`` command that writes this report again: the preset's experiment, the file stem where
    it is not the default one, the draw, and the parent run where the report would not pick it by itself."""
    base_stem = default_stem(preset) + (f"-draw{draw}" if draw != "0" else "")
    if preset == DEFAULT_PRESET:
        command = "python -m bench.report" + ("" if stem == base_stem else f" --name {stem}")
    elif stem == base_stem:
        command = f"python -m bench.report --preset {preset}"
    else:
        command = f"python -m bench.report --preset {preset} --name {stem}"
    if draw != "0":
        command += f" --data-seed {draw}"
    if run_id:
        command += f" --run-id {run_id}"
    return command


def ladder_figure(df: pd.DataFrame, path: Path) -> None:
    sns.set_theme(style="whitegrid", context="paper")
    v = df[df["kind"] == "variant"].copy()
    v = v[v["rung"].notna()]
    v["rung"] = v["rung"].astype(int)
    if v.empty:
        v = pd.DataFrame({"rung": [], "mIoU": []})
    fig, ax = plt.subplots(figsize=(9, 4.5))
    sns.pointplot(data=v, x="rung", y="mIoU", errorbar="sd", capsize=0.15, color="C0", ax=ax, label="ours: mIoU")
    for col, color, marker, label in (("swap_mIoU", "C1", "v", "ours: swap mIoU (another referent's sentence)"),
                                      ("generic_mIoU", "C2", "s", "ours: generic mIoU ('the object')")):
        if col in v and v[col].notna().any():
            sns.pointplot(data=v, x="rung", y=col, errorbar="sd", capsize=0.1, color=color, markers=marker,
                          linestyles="--", ax=ax, label=label)
    paper = [(i, PAPER_MIOU.get(str(c))) for i, c in enumerate(LADDER) if PAPER_MIOU.get(str(c)) is not None]
    if paper:
        ax.scatter([p[0] for p in paper], [p[1] for p in paper], marker="D", color="C3", zorder=5,
                   label="paper (RefCOCOg-UMD, ViT-B/16)")
    b = df[df["kind"] == "baseline"]
    for j, (_, r) in enumerate(b.iterrows()):
        ax.axhline(r["mIoU"], ls=":", color=f"C{j + 4}", lw=1, label=f"baseline: {r['components']}")
    ref = df[df["kind"] == "reference"]
    for j, (name, g) in enumerate(ref.groupby("components", sort=True)):
        ax.axhline(g["mIoU"].astype(float).mean(), ls="-.", color="k", lw=1.2 + j,
                   label=f"{name}, no CLIP (mean of {len(g)})")
    ax.set_xticks(range(len(LADDER)))
    ax.set_xticklabels([f"{i}\n{'+'.join(str(c).split('+')[1:]) or 'value'}" for i, c in enumerate(LADDER)],
                       fontsize=7)
    ax.set_xlabel("rung (components added)")
    ax.set_ylabel("test mIoU (mean ± sd over seeds)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(x: float, nd: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _kind_select(df: pd.DataFrame, components: str, kind: str) -> tuple[float, float]:
    """Mean and sd over seeds of a variant's select mIoU on one expression kind."""
    v = df[(df["kind"] == "variant") & (df["components"] == components)][f"{kind}_select_mIoU"].astype(float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def target_lines(variants: list[dict], baselines: list[dict], spread: pd.DataFrame, metrics: dict,
                 df: pd.DataFrame | None = None, minutes: float = 60.0,
                 per_expr: PerExpression | None = None, timed: bool = True, reused: int = 0,
                 timed_by=None) -> list[str]:
    """The SynthRef ladder's targets, each with the measured value and whether it is met. ``reused``: how many
    rung runs the invocation took from earlier ones (then its wall time times no ladder, unless ``timed_by``,
    the earlier invocation that trained all of them (:func:`timing_invocation`), times it)."""
    rungs = {s["rung"]: s for s in variants if s["rung"] is not None}
    out = []
    clock = dict(timed_by.data.metrics) if timed_by is not None else metrics
    ref = clock.get("reference_seconds", 0.0)
    wall = clock.get("wall_seconds", math.nan) - ref
    seeds = max((s["seeds"] for s in variants), default=0)
    less = f" less its from-scratch reference runs ({ref / 60:.1f} min)" if ref else ""
    if timed and set(range(len(LADDER))) <= set(rungs):  # an invocation of some rungs only times no ladder
        if reused and timed_by is not None:
            out.append(f"- Whole ladder, {seeds} seeds, in at most {minutes:.0f} minutes: {wall / 60:.1f} min "
                       f"({'met' if wall <= 60 * minutes else 'NOT met'}; wall time of invocation "
                       f"`{timed_by.info.run_id}`, which trained every rung run this one reused, "
                       f"`{timed_by.data.tags.get('command', '?')}`{less}; proxy CLIP and data cached)")
        elif reused:  # a run reused from an earlier invocation counts 0 s in this one's wall time
            out.append(f"- Whole ladder, {seeds} seeds, in at most {minutes:.0f} minutes: not timed by this invocation "
                       f"({reused} of its rung runs were reused from earlier ones, or their stage 1)")
        else:
            out.append(f"- Whole ladder, {seeds} seeds, in at most {minutes:.0f} minutes: {wall / 60:.1f} min "
                       f"({'met' if wall <= 60 * minutes else 'NOT met'}; wall time of this invocation{less}, proxy "
                       "CLIP and data cached)")
    for a, b in ((0, 1), (1, 2)):
        if a in rungs and b in rungs:
            gap = per_expr.gap(rungs[a]["components"], rungs[b]["components"]) if per_expr else None
            if gap is not None:
                out.append(f"- Rung {a} -> {b} raises mean mIoU, its paired bootstrap 95% CI over {gap.expressions} test "
                           f"expressions and {gap.seeds} seeds above zero: {gap.text()} "
                           f"({'met' if gap.low > 0 else 'NOT met'})")
                continue
            d = rungs[b]["mIoU"] - rungs[a]["mIoU"]
            sd2 = 2 * max(rungs[a]["mIoU_sd"], rungs[b]["mIoU_sd"])
            out.append(f"- Rung {a} -> {b} raises mean mIoU by more than twice the larger seed sd: {d:+.2f} vs "
                       f"{sd2:.2f} ({'met' if d > sd2 else 'NOT met'}; runs without per-expression IoUs)")
    if 2 in rungs and 3 in rungs:
        gap = per_expr.gap(rungs[2]["components"], rungs[3]["components"]) if per_expr else None
        if gap is not None:
            out.append(f"- Rung 3 is not below rung 2 (the CI's upper end at or above zero): {gap.text()} "
                       f"({'met' if gap.high >= 0 else 'NOT met'})")
        else:
            d = rungs[3]["mIoU"] - rungs[2]["mIoU"]
            sd = max(rungs[2]["mIoU_sd"], rungs[3]["mIoU_sd"])
            out.append(f"- Rung 3 is not below rung 2 by more than one sd: {d:+.2f} vs -{sd:.2f} "
                       f"({'met' if d >= -sd else 'NOT met'})")
    if 3 in rungs and 4 in rungs:
        gap = per_expr.gap(rungs[3]["components"], rungs[4]["components"]) if per_expr else None
        d = rungs[4]["mIoU"] - rungs[3]["mIoU"]
        out.append("- Rung 4 is above rung 3: " + (f"{gap.text()} ({'met' if gap.low > 0 else 'NOT met'}: CI above zero)"
                                                    if gap is not None else f"{d:+.2f} ({'met' if d > 0 else 'NOT met'})"))
    if df is not None and 1 in rungs and 2 in rungs:
        for kind in ("position", "relation"):
            m1, s1 = _kind_select(df, rungs[1]["components"], kind)
            m2, s2 = _kind_select(df, rungs[2]["components"], kind)
            d, sd2 = m2 - m1, 2 * max(s1, s2)
            gap = per_expr.gap(rungs[1]["components"], rungs[2]["components"], kind) if per_expr else None
            ci = f"; its {kind} mIoU gap, paired bootstrap 95% CI: {gap.text()}" if gap is not None else ""
            out.append(f"- CFE pays on {kind} expressions: rung 2's select mIoU above rung 1's by more than twice "
                       f"the larger seed sd: {m2:.2f} vs {m1:.2f} ({d:+.2f} vs {sd2:.2f}; "
                       f"{'met' if d > sd2 else 'NOT met'}{ci})")
    if not spread.empty:
        worst = spread["max_abs_diff"].max()
        out.append(f"- A rerun seed reproduces its mIoU within 0.5: largest difference {worst:.3f} "
                   f"({'met' if worst <= 0.5 else 'NOT met'})")
    if 0 in rungs:
        r0 = rungs[0]
        for b in baselines:
            if b["components"] in ORACLE_BASELINES:
                continue
            out.append(f"- Rung 0 ({r0['mIoU']:.2f}) beats baseline {b['components']} ({b['mIoU']:.2f}) in mIoU: "
                       f"{'met' if r0['mIoU'] > b['mIoU'] else 'NOT met'}")
        for b in baselines:
            if not math.isnan(b.get("select_mIoU", math.nan)) and not math.isnan(r0.get("select_mIoU", math.nan)):
                out.append(f"- Like for like, choosing among the same ground-truth instance masks: rung 0 "
                           f"({r0['select_mIoU']:.2f}) beats {b['components']} ({b['select_mIoU']:.2f}) in select "
                           f"mIoU: {'met' if r0['select_mIoU'] > b['select_mIoU'] else 'NOT met'}")
    return out


# the grounding targets (SynthRef models must ground their expression): a trained rung keeps
# at most this share of its mIoU when its sentence is swapped for another referent's; select mIoU floors
SWAP_SHARE_MAX = 1 / 3
GROUNDING_FLOORS = ((0, "attribute", 65.0), (1, "attribute", 85.0), (1, "position", 55.0))


def grounding_target_lines(variants: list[dict], df: pd.DataFrame, oracle_cap: float | None) -> list[str]:
    """Does the ladder read its text? Swap share of rungs 1-4, select floors of rungs 0 and 1 per kind, and
    rung 1's mIoU against half the stage-1 oracle cap."""
    rungs = {s["rung"]: s for s in variants if s["rung"] is not None}
    out = []
    for r in (1, 2, 3, 4):
        s = rungs.get(r)
        if s is None or math.isnan(s.get("swap_mIoU", math.nan)):
            continue
        share = s["swap_mIoU"] / s["mIoU"] if s["mIoU"] else math.nan
        out.append(f"- Rung {r} follows its text, swap mIoU at most a third of its mIoU: {s['swap_mIoU']:.2f} of "
                   f"{s['mIoU']:.2f} ({100 * share:.0f}%; {'met' if share <= SWAP_SHARE_MAX else 'NOT met'})")
    for r, kind, floor in GROUNDING_FLOORS:
        if r in rungs and f"{kind}_select_mIoU" in df:
            m, sd = _kind_select(df, rungs[r]["components"], kind)
            out.append(f"- Rung {r} picks the referent of {kind} expressions, select mIoU at least {floor:.0f}: "
                       f"{m:.2f} ± {sd:.2f} ({'met' if m >= floor else 'NOT met'})")
    if 1 in rungs and oracle_cap:
        m = rungs[1]["mIoU"]
        out.append(f"- Rung 1's mIoU at least half the stage-1 oracle cap ({oracle_cap:.1f}): {m:.2f} "
                   f"({'met' if m >= oracle_cap / 2 else 'NOT met'})")
    return out


def attribute_form_lines(rows: list[dict], df: pd.DataFrame) -> list[str]:
    """Attribute select split by the words that pick the referent (bench.spine.proposals.attribute_form), for
    the runs that recorded it: colour is a patch's own property, size is not."""
    cols = [f"attribute_{form_key(f)}_select_mIoU" for f in ATTRIBUTE_FORMS]
    if not any(c in df and df[c].astype(float).notna().any() for c in cols):
        return []
    out = ["## Attribute select by form (mean over seeds)", "",
           "Attribute expressions split by the words that pick their referent: the shape alone (\"the square\"), "
           "colour, size, or size and colour (`bench/spine/proposals.py: attribute_form`). Select mIoU: the share of "
           "referents the map picks among the image's instance masks.", "",
           "| rung | components | " + " | ".join(ATTRIBUTE_FORMS) + " |", "|---|---|" + "---|" * len(ATTRIBUTE_FORMS)]
    for s in rows:
        sub = df[(df["kind"] == s["kind"]) & (df["components"] == s["components"])]
        rung = s["rung"] if s["rung"] is not None else "-"
        out.append(f"| {rung} | {s['components']} | " + " | ".join(_fmt(_col(sub, c)) for c in cols) + " |")
    return out + [""]


def _col(sub: pd.DataFrame, col: str) -> float:
    return float(sub[col].astype(float).mean()) if col in sub and len(sub) else math.nan


def _control_cells(s: dict) -> str:
    """mIoU, swap mIoU, generic mIoU and text sensitivity cells of a summary line."""
    sens = s["mIoU"] - s.get("swap_mIoU", math.nan)
    return (f"{s['mIoU']:.2f} ± {s['mIoU_sd']:.2f} | {_fmt(s.get('swap_mIoU', math.nan))} | "
            f"{_fmt(s.get('generic_mIoU', math.nan))} | {_fmt(sens)}")


def _swap_share(tracker: Tracker, df: pd.DataFrame) -> str:
    """How many test sentences the swap could score (their image holds another referent)."""
    runs = df[df["kind"] == "variant"]["mlflow_run_id"]  # every variant scores the same swaps: one run says
    fraction = tracker.get_run(runs.iloc[0]).data.metrics.get("test_swap_fraction", math.nan) if len(runs) else math.nan
    share = "those" if math.isnan(fraction) else f"{100 * fraction:.1f}% of them"
    return f"the swap scores the test sentences whose image holds another referent: {share}"


def reference_lines(references: list[dict], variants: list[dict], per_expr: PerExpression,
                    curves: dict | None = None) -> list[str]:
    """The from-scratch reference (no CLIP) beside rung 1: what this data allows at rung 1's training time."""
    if not references:
        return []
    rung1 = next((v for v in variants if v["rung"] == 1), None)
    out = ["## From-scratch reference (no CLIP)", "",
           "A small text-conditioned segmenter of our own with no CLIP (`risclip/reference.py`: conv encoder with "
           "coordinate channels, GRU over the same tokens, FiLM and cross-attention, a light decoder), trained on the "
           "same train samples for a multiple of rung 1's median training time over its seeds, and scored exactly like a rung. A "
           "reference line, not a rung.", "",
           "| reference | seeds | mIoU | swap mIoU | generic mIoU | text sensitivity | select mIoU | minus rung 1, 95% CI | "
           "train s |", "|---|---|---|---|---|---|---|---|---|"]
    for s in references:
        gap = per_expr.gap(rung1["components"], s["components"], b_kind="reference") if rung1 else None
        curve = f" ([curve](#{anchor(s['components'])}))" if s["components"] in (curves or {}) else ""
        out.append(f"| {s['components']}{curve} | {s['seeds']} | {_control_cells(s)} | {_fmt(s['select_mIoU'])} | "
                   f"{gap.text() if gap is not None else '-'} | {_fmt(s['train_seconds'], 0)} |")
    if rung1:
        out += ["", f"Rung 1 trained {_fmt(rung1['train_seconds'], 0)} s on average over its seeds."]
    return out + [""]


def cut_lines(lines: list[dict]) -> list[str]:
    """The mask cut of each trained variant, when any was chosen on val (``train.threshold_from_val``): the cut
    (mean over seeds), mIoU there and mIoU at the protocol's own 0.5, from the same predictions."""
    chosen = [s for s in lines if not math.isnan(s.get("fixed_mIoU", math.nan))]
    if not chosen:
        return []
    out = ["## The mask cut, chosen on val", "",
           "Each trained variant's masks are cut where its val mIoU is best, among sigmoid 0.10, 0.15, ..., 0.90 "
           "(`train.threshold_from_val`, `risclip/engine/scoring.py`: one rule for every variant and the reference, chosen "
           "on val, never on test); test is then scored there, and the tables above use that cut. Beside it, the "
           "same predictions at the protocol's own cut of 0.5.", "",
           "| variant | cut (mean over seeds) | test mIoU at the cut | test mIoU at 0.5 | change |", "|---|---|---|---|---|"]
    for s in chosen:
        name = s["components"] if s["rung"] is None else f"rung {s['rung']}: {s['components']}"
        out.append(f"| {name} | {_fmt(s['threshold'])} ± {_fmt(s['threshold_sd'])} | {s['mIoU']:.2f} | "
                   f"{s['fixed_mIoU']:.2f} | {s['mIoU'] - s['fixed_mIoU']:+.2f} |")
    return out + [""]


def tuned_lines(tracker: Tracker, df: pd.DataFrame, variants: list[dict], baselines: list[dict],
                minutes: float, oracle_cap: float | None = None) -> list[str]:
    """The preset's ladder beside the ladder on a ``ladder`` study's chosen settings (the latest
    ``bench.ablate --tuned`` invocation), with the targets checked again on the tuned ladder."""
    import json

    tuned_parent = latest_tuned_invocation(tracker)
    if tuned_parent is None:
        return []
    tdf = load_rows(tracker, tuned_parent)
    tvariants = sorted([s for s in summarise(tdf.to_dict("records")) if s["kind"] == "variant"],
                       key=lambda s: s["rung"] if s["rung"] is not None else -1)
    tags = tuned_parent.data.tags
    chosen = {}
    where = os.path.relpath(tags["tuned"]) if os.path.isabs(tags["tuned"]) else tags["tuned"]
    try:
        chosen = json.loads(Path(tags["tuned"]).read_text())["variants"]
    except (OSError, KeyError, ValueError):
        pass
    by_comp = {s["components"]: s for s in variants}
    out = ["", "## The preset's ladder and the tuned ladder", "",
           f"Each rung tuned alike by the `ladder` study (settings chosen on val, `{where}`), then run with "
           f"`{tags.get('command', '?')}` (MLflow parent `{tuned_parent.info.run_id}`). Test mIoU, mean ± sd over seeds; "
           "select mIoU on position and relation expressions, preset -> tuned.", "",
           "| rung | components | trials | val mIoU, preset -> tuned | test mIoU, preset | test mIoU, tuned | change | "
           "position select | relation select |", "|---|---|---|---|---|---|---|---|---|"]
    for t in tvariants:
        p = by_comp.get(t["components"])
        c = chosen.get(t["components"], {})
        val_p = _fmt(c.get("preset_val_mIoU", math.nan))
        kinds = []
        for kind in ("position", "relation"):
            a = _kind_select(df, t["components"], kind)[0] if p else math.nan
            b = _kind_select(tdf, t["components"], kind)[0]
            kinds.append(f"{_fmt(a)} -> {_fmt(b)}")
        out.append(f"| {t['rung']} | {t['components']} | {c.get('trials', '-')} | {val_p} -> "
                   f"{_fmt(c.get('val_mIoU', math.nan))} | "
                   + (f"{p['mIoU']:.2f} ± {p['mIoU_sd']:.2f} ({p['seeds']})" if p else "-")
                   + f" | {t['mIoU']:.2f} ± {t['mIoU_sd']:.2f} ({t['seeds']}) | "
                   + (f"{t['mIoU'] - p['mIoU']:+.2f}" if p else "-") + f" | {kinds[0]} | {kinds[1]} |")
    out += ["", "Chosen settings (`--set`), per rung; a rung whose best val trial was the preset's own settings "
            "shows none:", ""]
    for t in tvariants:
        sets = chosen.get(t["components"], {}).get("overrides", [])
        same = chosen.get(t["components"], {}).get("from_preset")
        out.append(f"- rung {t['rung']} ({t['components']}): " + ("the preset's own settings" if same else
                                                                  " ".join(f"`{o}`" for o in sets) or "-"))
    out += ["", "### Targets, checked again on the tuned ladder", ""]
    out += target_lines(tvariants, baselines, pd.DataFrame(columns=["max_abs_diff"]),
                        dict(tuned_parent.data.metrics), tdf, minutes=minutes, timed=False)  # its time is the study's
    out += grounding_target_lines(tvariants, tdf, oracle_cap)
    return out


# the named forms a rung is scored with both ways: (rung, field, the preset's form, the other form)
FORMS = ((0, "model.value_path", "maskclip", "clearclip"), (3, "model.ske_form", "maps", "joint"))


def other_draw_lines(tracker: Tracker, variants: list[dict], draw: str,
                     per_expr: PerExpression | None = None) -> list[str]:
    """A fresh draw's ladder beside the committed draw's (the latest plain ladder on draw 0): does the shape
    hold on other data and other training seeds? With per-expression IoUs, the test-split target:
    the two draws' rung-1 means differ by less than the half-width of the committed draw's bootstrap 95% CI
    of that mean (expressions and seeds resampled), i.e. the fresh draw's mean lies inside it."""
    base = latest_plain_ladder(tracker, "0")
    if base is None:
        return []
    committed = variant_summaries(tracker, base)
    out = ["", "## Against the committed draw (data seed 0)", "",
           f"The committed draw's ladder is `{pinned_command(base.data.tags.get('command', '?'), preset_of(base))}` (seeds "
           f"{base.data.tags.get('seeds', '?')}); this draw was trained with other seeds. Test mIoU, mean ± sd "
           "(seeds); gains from the rung above.", "",
           "| rung | components | committed draw | gain | this draw (data seed " + draw + ") | gain |",
           "|---|---|---|---|---|---|"]
    prev_c = prev_n = None
    for s in variants:
        c = committed.get(s["components"])
        c_txt = f"{c['mIoU']:.2f} ± {c['mIoU_sd']:.2f} ({c['seeds']})" if c else "-"
        gain_c = f"{c['mIoU'] - prev_c:+.2f}" if c and prev_c is not None else "-"
        gain_n = f"{s['mIoU'] - prev_n:+.2f}" if prev_n is not None else "-"
        out.append(f"| {s['rung']} | {s['components']} | {c_txt} | {gain_c} | "
                   f"{s['mIoU']:.2f} ± {s['mIoU_sd']:.2f} ({s['seeds']}) | {gain_n} |")
        prev_c, prev_n = (c["mIoU"] if c else None), s["mIoU"]
    rung1 = next((s for s in variants if s["rung"] == 1), None)
    if per_expr is not None and rung1 is not None and rung1["components"] in committed:
        mine = per_expr.mean(rung1["components"])
        theirs = PerExpression(tracker, load_rows(tracker, base)).mean(rung1["components"])
        if mine is not None and theirs is not None:
            half = (theirs.high - theirs.low) / 2
            d = mine.estimate - theirs.estimate
            out += ["", f"- Test split large enough: the two draws' rung-1 means differ by less than the half-width of "
                        f"the committed draw's bootstrap 95% CI of its mean ({_resampled(theirs)}, "
                        f"{theirs.seeds} seeds): {d:+.2f} vs ±{half:.2f} "
                        f"({'met' if abs(d) < half else 'NOT met'}; committed {theirs.estimate:.2f} "
                        f"[{theirs.low:.2f}, {theirs.high:.2f}], this draw {mine.estimate:.2f} "
                        f"[{mine.low:.2f}, {mine.high:.2f}] over {mine.expressions} expressions)"]
            if abs(d) >= half:  # the draws also trained on different train splits, which this CI does not resample
                out.append("- The two draws differ in their train splits too; `python -m bench.cross_draw` scores both "
                           "draws' rung-1 models on both test splits, which tells the test split's share of this "
                           "difference from the training draw's.")
    return out


def _resampled(g: Gap) -> str:
    """What a CI resampled: whole images (the cluster bootstrap) or single expressions."""
    if g.images:
        return f"{g.expressions} expressions in {g.images} test images, resampled by image"
    return f"{g.expressions} expressions, resampled one by one"


def form_choice_lines(tracker: Tracker, df: pd.DataFrame, tuning: pd.DataFrame) -> list[str]:
    """Rung 0 with both value paths and rung 3 with both SKE forms, on val (where the choice is made)
    and test: the ladder's own runs beside the ``--set`` probes of the other form."""
    out = []
    for rung, field, own, other in FORMS:
        mine = df[(df["kind"] == "variant") & (df["rung"] == rung)].drop_duplicates("mlflow_run_id")
        probe = tuning[tuning["overrides"] == f"{field}={other}"] if not tuning.empty else tuning
        if mine.empty or probe.empty:
            continue
        val = [tracker.get_run(r).data.metrics.get("val_mIoU", math.nan) for r in mine["mlflow_run_id"]]
        v_own, v_other = float(pd.Series(val).mean()), float(probe["val_mIoU"].mean())
        out.append(f"| {rung} | `{field}` | {own}: {v_own:.2f} ({len(val)}) / {mine['mIoU'].mean():.2f} | "
                   f"{other}: {v_other:.2f} ({len(probe)}) / {probe['test_mIoU'].mean():.2f} | "
                   f"{own if v_own >= v_other else other} |")
    if not out:
        return []
    return ["", "## Named forms, chosen on val", "",
            "Mean val mIoU (seeds) / test mIoU of each form; the choice reads val only.", "",
            "| rung | field | the preset's form | the other form | val chooses |", "|---|---|---|---|---|", *out]


def dataset_lines(params: dict, proxy: dict | None) -> tuple[list[str], float | None]:
    """The data's RefCOCO-likeness and stage-1 oracle cap (``python -m risclip.data.synthref stats``) and
    the proxy CLIP's probes, where the data folder is on this machine; with the oracle cap's mIoU (area
    target; None where the data is not here)."""
    cap = None
    from risclip.data.stats import GridSpec, dataset_stats, format_stats

    out: list[str] = []
    root = params.get("data.data_root")
    size = int(params.get("model.image_size", 0) or 0)
    if root and Path(root).is_dir() and size:
        try:
            from risclip.backbone import patch_size  # an unknown backbone is a ValueError, reported below

            patch = patch_size(params.get("model.clip_model", ""))
            st = dataset_stats(root, params.get("data.dataset", "synthref"), params.get("data.split_by", "synth"),
                               params.get("data.test_split", "test"), GridSpec(size, patch))
            out += ["## The data", "", f"`python -m risclip.data.synthref stats {root} --image-size {size} "
                    f"--patch {patch}` (test split; the oracle cap bounds every stage-1 rung):", "", "```",
                    format_stats(st), "```", ""]
            cap = float(st["oracle"]["area_mIoU"])
        except (OSError, ValueError, KeyError) as e:
            out += ["## The data", "", f"(statistics unavailable: {e})", ""]
    probes = (proxy or {}).get("probes")
    if probes:
        out += ["Proxy CLIP probes on held-out caption-corpus images (true caption against a minimally changed "
                "false one; chance 50%): " + ", ".join(
                    f"{k} {probes[f'{k}_probe']:.1f}% of {probes[f'{k}_probe_n']:.0f}"
                    for k in ("attribute", "place", "relation") if f"{k}_probe" in probes) + ".", ""]
    return out, cap


def grids_figure(tracker: Tracker, df: pd.DataFrame, rungs: tuple[int, ...], path: Path) -> Path | None:
    """The val prediction grids (the same fixed samples) of the given rungs, each from its lowest seed, side by
    side."""
    import tempfile

    panels = []
    with tempfile.TemporaryDirectory() as d:
        for rung in rungs:
            sel = df[(df["kind"] == "variant") & (df["rung"] == rung)].sort_values("seed")
            if sel.empty:
                continue
            try:
                local = tracker.download(sel.iloc[0]["mlflow_run_id"], "val_predictions.png", Path(d) / str(rung))
            except Exception:  # a run without its grid (e.g. rung 0, nothing trained): left out
                continue
            panels.append((rung, sel.iloc[0]["components"], plt.imread(local)))
        if not panels:
            return None
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 12), squeeze=False)
        for ax, (rung, comp, im) in zip(axes[0], panels):
            ax.imshow(im)
            ax.set_title(f"rung {rung}: {comp}", fontsize=11)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
    return path


def render(tracker: Tracker, parent, out_dir: Path, stem: str) -> Path:
    df = load_rows(tracker, parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / f"{stem}.csv", index=False)
    ladder_figure(df, out_dir / f"{stem}.png")
    summary = summarise(df.to_dict("records"))
    variants = sorted([s for s in summary if s["kind"] == "variant"],
                      key=lambda s: (s["rung"] is None, s["rung"] if s["rung"] is not None else 0, s["components"]))
    baselines = [s for s in summary if s["kind"] == "baseline"]
    references = sorted([s for s in summary if s["kind"] == "reference"], key=lambda s: s["components"])
    per_expr = PerExpression(tracker, df)
    tags, metrics = parent.data.tags, dict(parent.data.metrics)
    if "proxy_clip_val_retrieval_top1" in metrics and "proxy_clip_pretrain_seconds" not in metrics:
        try:
            metrics["proxy_clip_pretrain_seconds"] = tracker.load_json(parent.info.run_id, "proxy_clip.json")["seconds"]
        except (OSError, KeyError, ValueError):
            pass
    metrics["reference_seconds"] = sum(  # trained and scored in this invocation: not the ladder's time
        float(r["train_seconds"]) + tracker.get_run(r["mlflow_run_id"]).data.metrics.get("eval_seconds", 0.0)
        for _, r in df[df["kind"] == "reference"].iterrows() if str(r["reused"]) not in ("True", "true", "1"))
    preset = tags.get("preset", "?")
    if preset.startswith("synth"):
        title, whose = "SynthRef", ("**Every number in the tables below is ours, measured on SynthRef, our synthetic "
                                    "benchmark, with a small proxy CLIP pre-trained on SynthRef captions. The `paper "
                                    "mIoU` column is the paper's (RefCOCOg-UMD test, CLIP ViT-B/16), printed beside ours "
                                    "only to compare the shape of the ladder.**")
    else:
        params = parent.data.params
        title = f"{params.get('data.dataset', '?')} ({params.get('data.split_by', '?')}, {params.get('data.test_split', '?')})"
        whose = (f"**Every number in the tables below was measured here, on {title} with the data and weights this "
                 f"invocation was given; the `paper mIoU` column is the paper's (RefCOCOg-UMD test, CLIP ViT-B/16), "
                 f"quoted. Metrics use protocol `ours` (docs/design.md).**")
    draw = tags.get("data_seed", "0") or "0"
    command = regenerate_command(preset, stem, draw, None if is_plain_ladder(parent, draw) else parent.info.run_id)
    if draw != "0":
        title += f", fresh draw with data seed {draw}"
    lines = [f"# RISCLIP ladder on {title} ({preset})", "", whose, "",
             f"- Runs produced by: `{pinned_command(tags.get('command', 'python -m bench.ablate'), preset)}`",
             f"- This report regenerated by: `{command}` (figure `{stem}.png`, raw rows `{stem}.csv`)",
             f"- git revision {tags.get('git_revision', '?')}, data fingerprint {tags.get('data_fingerprint', '?')}, "
             f"MLflow parent run `{parent.info.run_id}`",
             f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}; "
             f"wall time of the invocation {_fmt(metrics.get('wall_seconds', math.nan), 0)} s "
             f"(runs it reused from earlier invocations count 0 here)"]
    if "proxy_clip_val_retrieval_top1" in metrics:
        lines.append(f"- Proxy CLIP: val image-to-caption top-1 retrieval "
                     f"{metrics['proxy_clip_val_retrieval_top1']:.1f}%, pre-trained once in "
                     f"{_fmt(metrics.get('proxy_clip_pretrain_seconds', math.nan), 0)} s and cached")
    proxy = None
    if "proxy_clip_val_retrieval_top1" in metrics:
        try:
            proxy = tracker.load_json(parent.info.run_id, "proxy_clip.json")
        except (OSError, LookupError, ValueError):
            proxy = None
    data_lines, oracle_cap = dataset_lines(dict(parent.data.params), proxy)
    lines += [""] + data_lines
    lines += ["## Ladder", "", f"![mIoU per rung]({stem}.png)", "",
              "| rung | components | seeds | mIoU | swap mIoU | generic mIoU | text sensitivity | oIoU | P@50 | P@90 | "
              "select mIoU | paper mIoU | gain, 95% CI | CI above 0 | train s | ms/img | peak MB |", "|" + "---|" * 17]
    curves = load_curves(tracker, df)
    prev = None
    for s in variants:
        gain, sep = "-", "-"
        if prev is not None and s["rung"] is not None and prev["rung"] is not None:
            gap = per_expr.gap(prev["components"], s["components"])
            if gap is not None:
                gain, sep = gap.text(), ("yes" if gap.low > 0 else "no")
            else:
                gain = f"{s['mIoU'] - prev['mIoU']:+.2f}"
        key = f"rung {s['rung']}"
        curve = f" ([curve](#{anchor(key)}))" if key in curves else ""
        lines.append(f"| {s['rung'] if s['rung'] is not None else '-'} | {s['components']}{curve} | {s['seeds']} | "
                     + _control_cells(s) + f" | {s['oIoU']:.2f} ± {s['oIoU_sd']:.2f} | {_fmt(s['P@50'])} | "
                     f"{_fmt(s['P@90'])} | {_fmt(s['select_mIoU'])} ± {_fmt(s['select_mIoU_sd'])} | "
                     f"{_fmt(s['paper_mIoU'])} | {gain} | {sep} | "
                     f"{_fmt(s['train_seconds'], 0)} | {_fmt(s['inference_ms_per_image'], 1)} | "
                     f"{_fmt(s['peak_memory_mb'], 0)} |")
        if s["rung"] is not None:
            prev = s
    lines += ["", "Does the model read its text? `swap mIoU`: each test sentence whose image holds another referent "
              "is replaced by a sentence of that other referent (a seeded choice, the same for every variant) and the "
              "prediction is scored against the *true* mask; a model that masks the object its sentence names scores "
              "near zero there, one that segments objects whatever the text says scores about its mIoU. `generic "
              "mIoU`: every sentence replaced by 'the object'. `text sensitivity` = mIoU - swap mIoU "
              f"({_swap_share(tracker, df)}; `risclip/data/controls.py`).", "",
              "`gain` is the change in mean mIoU from the rung above, with its paired bootstrap 95% CI: test "
              "expressions and seeds resampled together, the same draw for both rungs (`bench/reporting/bootstrap.py`; every "
              "test expression is scored; where the runs recorded each expression's image, whole test images are "
              "resampled with all their expressions). `select mIoU` scores the variant's map as a chooser "
              "among the image's ground-truth instance masks (the one with the highest mean map value; "
              "`bench/spine/proposals.py`), the terms the oracle-proposal baselines below play on; on SynthRef it is the "
              "share of expressions whose referent was chosen. `ms/img` (batch 1) and `peak MB` (growth of the "
              "resident set during one forward pass, measured in a fresh process) come from `bench/costs/profiling.py`.", "",
              "## Text-blind baselines", "",
              "| baseline | mIoU | oIoU | P@50 | select mIoU |", "|---|---|---|---|---|"]
    for s in baselines:
        lines.append(f"| {s['components']} | {s['mIoU']:.2f} | {s['oIoU']:.2f} | {_fmt(s['P@50'])} | "
                     f"{_fmt(s['select_mIoU'])} |")
    lines += ["", "`largest-object` and `random-object` pick a ground-truth instance mask (oracle proposals) without "
              "reading the text; `centre-blob` is sized to the mean referent area on train; `objectness` is the union "
              "of every instance mask of the image (what a model that segments all objects and ignores the text "
              "would score). A text-blind prediction scores the same under both controls.", ""]
    lines += reference_lines(references, variants, per_expr, curves)
    lines += cut_lines([*variants, *references])
    curve_section = curve_lines(curves, curves_figure(curves, out_dir / f"{stem}-curves.png"))
    lines += curve_section + ([""] if curve_section else [])
    lines += [
              "## mIoU by expression kind (mean over seeds)", "",
              "mIoU, then select mIoU in brackets, then swap mIoU after the slash.", "",
              "| rung | components | " + " | ".join(KINDS) + " |", "|---|---|" + "---|" * len(KINDS)]
    for s in variants + references + baselines:
        sub = df[(df["kind"] == s["kind"]) & (df["components"] == s["components"])]
        rung = s["rung"] if s["rung"] is not None else "-"
        name = f"baseline: {s['components']}" if s["kind"] == "baseline" else s["components"]
        lines.append(f"| {rung} | {name} | "
                     + " | ".join(f"{_fmt(sub[f'{k}_mIoU'].mean())} ({_fmt(sub[f'{k}_select_mIoU'].mean())})"
                                  f" / {_fmt(_col(sub, f'{k}_swap_mIoU'))}" for k in KINDS) + " |")
    lines += [""] + attribute_form_lines(variants + references, df)
    spread = rerun_spread(tracker, df)
    lines += ["## Targets, checked from the numbers above", ""] + target_lines(
        variants, baselines, spread, metrics, df, minutes=30.0 if preset == "synth-cpu" else 60.0, per_expr=per_expr,
        reused=(reused := reused_rung_runs(df, tracker)),
        timed_by=timing_invocation(tracker, df, parent.info.run_id) if reused else None)
    lines += grounding_target_lines(variants, df, oracle_cap)
    if draw == "0":
        lines += tuned_lines(tracker, df, variants, baselines, 30.0 if preset == "synth-cpu" else 60.0, oracle_cap)
    else:
        lines += other_draw_lines(tracker, variants, draw, per_expr)
    grids = grids_figure(tracker, df, (1, 2, 4), out_dir / f"{stem}-grids.png")
    if grids is not None:
        first_seed = int(df[df["kind"] == "variant"]["seed"].min())
        lines += ["", f"## What each component changes (val, the same samples, seed {first_seed})", "",
                  f"![val predictions of rungs 1, 2 and 4]({grids.name})"]
    tuning = tuning_runs(tracker, data_seed=draw)
    if not tuning.empty:
        lines += ["", "## Tuning probes (`--set`), newest first", "",
                  "Single runs that changed one preset field, tracked in the same store; choices are made on val. "
                  "Rerun one with `python -m bench.ablate --components <components> --seeds <seed> <overrides>`.",
                  "", "| overrides | components | seed | val mIoU | test mIoU | select mIoU |", "|---|---|---|---|---|---|"]
        for _, r in tuning.iterrows():
            args = " ".join(f"--set {o}" for o in r["overrides"].split(";"))
            lines.append(f"| `{args}` | {r['components']} | {r['seed']} | {_fmt(r['val_mIoU'])} | "
                         f"{_fmt(r['test_mIoU'])} | {_fmt(r['select_mIoU'])} |")
    lines += form_choice_lines(tracker, df, tuning)
    lines += ["", "## Reproducibility", ""]
    if spread.empty:
        lines.append("No variant was rerun with the same config hash (`--force`), so nothing to compare yet.")
    else:
        lines += ["Finished runs sharing a config hash (a seed rerun with `--force`):", "",
                  "| components | seed | runs | largest mIoU difference |", "|---|---|---|---|"]
        for _, r in spread.iterrows():
            lines.append(f"| {r['components']} | {r['seed']} | {r['runs']} | {r['max_abs_diff']:.3f} |")
    path = out_dir / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow store (default %(default)s)")
    p.add_argument("--preset", default=DEFAULT_PRESET, help="the preset whose ladder to report (default %(default)s)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default risclip-<preset>)")
    p.add_argument("--run-id", default=None, help="parent run of the invocation to report (default: the latest)")
    p.add_argument("--out-dir", default=None, help="where to write (default reports/<preset>; an archived preset's: "
                                                   "reports/archive/<preset>)")
    p.add_argument("--data-seed", type=int, default=None, metavar="N",
                   help="report the ladder on the fresh SynthRef draw N (bench.ablate --data-seed N; "
                        "file reports/<preset>/ladder-drawN.md)")
    p.add_argument("--name", default=None, help="file stem (default ladder; ladder-drawN for --data-seed N)")
    a = p.parse_args(argv)
    try:
        tracker = Tracker(a.tracking_uri, a.experiment or f"risclip-{a.preset}")
        draw = "0" if a.data_seed is None else str(a.data_seed)
        stem = a.name or default_stem(a.preset) + (f"-draw{draw}" if draw != "0" else "")
        path = render(tracker, latest_invocation(tracker, a.run_id, draw), Path(a.out_dir or report_dir(a.preset)), stem)
    except (LookupError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0

