"""How the ladder's rungs and the gaps between them move with the training and the pre-training budget.

    python -m bench.budget --multipliers 1,3 --rungs 1,2,3,4 --seeds 0,1,2   # the ladder at 1x and 3x
    python -m bench.budget --multipliers 10 --rungs 1,2 --reference-at 10    # 10x, with the reference
    python -m bench.budget --proxy-steps 300,600,3000                        # the proxy CLIP's budget instead
    python -m bench.budget --report                                          # redraw the report from its JSON

The stage-1 budget is sentences x epochs: 1x is the preset's (``max_train_samples`` x
``stage1_epochs``); kx takes k times as many training sentences where the split has them and makes up
the rest with epochs (rounded up). Stage 2 scales with it: a rung with the decoder trains ``stage2_epochs``
x k (rounded up) at kx (rungs without it keep their identity: stage 2 does not touch them). The
from-scratch reference (``--reference-at``) trains for k times the ladder's rung-1 time at 1x (the median of
the 1x rung-1 runs of seeds 0, 1, 2, reused from the ladder), so each budget sets it beside the rungs.
The proxy budget is the proxy CLIP's optimiser steps, each proxy pre-trained (and cached) on demand.
Every point is an ordinary ``bench.ablate`` run with ``--set`` (or ``--pretrained``) overrides, tracked in
MLflow and reused when run again, so a sweep can be grown in pieces across sessions (each piece is
resumable: a killed run continues from its last epoch): each command adds each of its points, as soon as
it ends, to those recorded in ``reports/<preset>/budget.json`` (a point at the same budget keeps the rungs it
had and takes the new ones) and redraws the report from all: mIoU per rung and the reference against the
budget, each step's gain with its paired bootstrap CI (test images and seeds resampled), swap mIoU, and
whether the ladder's order and each gain hold, grow or shrink. Numbers are SynthRef's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
from pathlib import Path

from bench.spine import presets as P
from bench.spine.assets import stage1_work, train_sentences
from risclip.config import LADDER

KINDS = ("position", "relation")
PER_RUNG = ("mIoU", "train_s", "swap", "generic", "position_select", "relation_select")  # a line's {rung: value} keys


def stage1_overrides(preset: P.Preset, k: float, available: int) -> list[str]:
    """``--set`` arguments giving ``k`` times the preset's stage-1 sentences x epochs."""
    if k == 1:
        return []
    base_n = preset.data.max_train_samples or available
    n = min(available, int(round(base_n * k)))
    epochs = math.ceil(k * stage1_work(preset, available) / n)
    return [f"data.max_train_samples={n}", f"train.stage1_epochs={epochs}"]


def budget_overrides(preset: P.Preset, k: float, available: int, decoder: bool) -> list[str]:
    """``--set`` arguments for budget ``k``: stage 1's (:func:`stage1_overrides`) and, for a rung with the decoder,
    ``stage2_epochs`` x k (rounded up): stage 2 scales with stage 1."""
    sets = stage1_overrides(preset, k, available)
    if decoder and k != 1 and preset.train.stage2_epochs > 0:
        sets.append(f"train.stage2_epochs={math.ceil(k * preset.train.stage2_epochs)}")
    return sets


def run_ablate(preset_name: str, components: list[str], seeds: str, sets: list[str], pretrained: str | None,
               extra: list[str]) -> list[dict]:
    """One ``bench.ablate`` invocation (every run tracked, reused when it exists); its rows."""
    from bench.spine import ablate

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "rows.json"
        argv = ["--preset", preset_name, "--seeds", seeds, "--no-baselines", "--output", str(out), *extra]
        for c in components:
            argv += ["--components", c]
        for s in sets:
            argv += ["--set", s]
        if pretrained:
            argv += ["--pretrained", pretrained]
        if ablate.main(argv) != 0:
            raise RuntimeError(f"bench.ablate {' '.join(argv)} failed")
        return json.loads(out.read_text())["rows"]


def rung_names(r: int) -> str:
    return ",".join(LADDER[r].names()[1:]) or "none"


def run_point(preset_name: str, rungs: list[int], seeds: str, sets: list[str], pretrained: str | None,
              extra: list[str], decoder_sets: list[str] | None = None) -> list[dict]:
    """The rungs at one budget: those without the decoder with ``sets``, those with it with ``decoder_sets``
    (stage 2 scaled too), in two invocations so that each keeps the identity it has in the ladder. Neither trains
    the preset's from-scratch reference: that is :func:`run_reference_point`'s, at the ladder's 1x rung-1 time (left
    to ablate's default, a 3x point would train a reference at 3x rung 1's 3x time, filed as the preset's 1x)."""
    extra = [*extra, "--reference", ""]
    plain = [r for r in rungs if not LADDER[r].decoder]
    with_decoder = [r for r in rungs if LADDER[r].decoder]
    rows = []
    if plain:
        rows += run_ablate(preset_name, [rung_names(r) for r in plain], seeds, sets, pretrained, extra)
    if with_decoder:
        rows += run_ablate(preset_name, [rung_names(r) for r in with_decoder], seeds,
                           sets if decoder_sets is None else decoder_sets, pretrained, extra)
    return rows


def ladder_rung1_seconds(preset_name: str, extra: list[str]) -> float:
    """The median training time of rung 1 at 1x over seeds 0, 1, 2 (the ladder's runs, reused; trained if
    missing): what the reference's multiples apply to, as in the ladder report."""
    import statistics

    rows = run_ablate(preset_name, ["adapters"], "0,1,2", [], None, [*extra, "--reference", ""])
    return statistics.median(r["train_seconds"] for r in rows if r["kind"] == "variant")


def run_reference_point(preset_name: str, k: float, seeds: str, base_seconds: float, extra: list[str]) -> list[dict]:
    """The from-scratch reference at ``k`` times the ladder's rung-1 time, each seed (rung 1 at 1x rides along,
    reused)."""
    rows = run_ablate(preset_name, ["adapters"], seeds, [], None,
                      [*extra, "--reference", f"{k:g}", "--reference-seconds", f"{base_seconds:.3f}"])
    return [r for r in rows if r["kind"] == "reference"]


def sweep(a: argparse.Namespace, on_point=lambda point: None) -> list[dict]:
    """Every point of the sweep, in order; ``on_point`` gets each as soon as it is measured (the command
    records it in the report then, so a sweep stopped at its third point keeps its first two)."""
    from bench.proxy.pretrain_clip import pretrain
    from bench.spine.assets import ensure_data

    preset = P.build(a.preset)
    ensure_data(preset, None)
    rungs = [int(r) for r in a.rungs.split(",") if r.strip()]
    with_reference = {float(x) for x in (a.reference_at or "").split(",") if x.strip()}
    points = []
    if a.proxy_steps:
        for steps in [int(x) for x in a.proxy_steps.split(",")]:
            cfg = dataclasses.replace(preset.proxy_clip, steps=steps)
            path, summary = pretrain(cfg)
            rows = run_point(a.preset, rungs, a.seeds, [], str(path), a.extra)
            probes = {"retrieval": summary.get("val_retrieval_top1", math.nan),
                      **{k.replace("_probe", ""): v for k, v in summary.get("probes", {}).items() if not k.endswith("_n")}}
            points.append({"axis": "proxy steps", "budget": steps, "rows": rows, "probes": probes})
            on_point(points[-1])
        return points
    available = train_sentences(preset)
    base = ladder_rung1_seconds(a.preset, a.extra) if with_reference else None
    for k in [float(x) for x in a.multipliers.split(",")]:
        rows = run_point(a.preset, rungs, a.seeds, stage1_overrides(preset, k, available), None, a.extra,
                         budget_overrides(preset, k, available, decoder=True))
        if k in with_reference:
            rows += run_reference_point(a.preset, k, a.seeds, base, a.extra)
        points.append({"axis": "stage-1 budget (x preset)", "budget": k, "rows": rows,
                       **({"reference_base_seconds": base} if base else {})})
        on_point(points[-1])
    return points


def with_kinds(points: list[dict], tracking_uri: str, experiment: str) -> list[dict]:
    """Each row's per-kind select mIoU and, for the CIs, its per-expression IoUs with their images (read from
    the tracked runs; :func:`summary` turns them into intervals and drops them)."""
    from bench.spine.tracking import Tracker

    tracker = Tracker(tracking_uri, experiment)
    for p in points:
        for r in p["rows"]:
            m = tracker.get_run(r["mlflow_run_id"]).data.metrics
            for k in KINDS:
                r[f"{k}_select_mIoU"] = m.get(f"test_{k}_select_mIoU", math.nan)
            try:
                per = tracker.load_json(r["mlflow_run_id"], "metrics.json").get("per_sample", [])
            except OSError:
                per = []
            r["per_sample"] = {int(x["sent_id"]): (100.0 * float(x["iou"]), x.get("image_id")) for x in per}
    return points


def _table(rows: list[dict], seeds: list[int]) -> tuple[dict[int, dict[int, float]], dict[int, object]]:
    per_seed = {int(r["seed"]): {e: v[0] for e, v in r["per_sample"].items()} for r in rows}
    images = {e: v[1] for r in rows for e, v in r["per_sample"].items()}
    return per_seed, images


def gap_ci(lower: list[dict], upper: list[dict]) -> list[float] | None:
    """Paired bootstrap CI of mean(upper) - mean(lower) over the expressions both scored, seeds paired by number
    (a rung that trains nothing has one run for every seed), whole test images resampled where recorded."""
    from bench.reporting.bootstrap import paired_gap, table

    if not lower or not upper or not all(r.get("per_sample") for r in (*lower, *upper)):
        return None
    seeds = sorted({int(r["seed"]) for r in upper})
    a, images = _table(lower, seeds)
    b, _ = _table(upper, seeds)
    if len(a) > 1 and set(a) != set(b):
        return None
    common = sorted(set.intersection(*(set(x) for x in (*a.values(), *b.values()))))
    if not common:
        return None
    groups = [images.get(e) for e in common]
    g = paired_gap(table(a, common, seeds), table(b, common, seeds),
                   groups=groups if all(x is not None for x in groups) else None)
    return [g.estimate, g.low, g.high]


def summary(points: list[dict]) -> list[dict]:
    """Per budget: mean mIoU and swap mIoU per rung, the reference's, each gap (with its CI where the runs' per-
    expression IoUs were read), and rungs 1-2's position / relation select mIoU."""
    out = []
    for p in points:
        by_rung: dict[int, list[dict]] = {}
        refs = [r for r in p["rows"] if r.get("kind") == "reference"]
        for r in p["rows"]:
            if r.get("kind", "variant") == "variant":
                by_rung.setdefault(int(r["rung"]), []).append(r)
        mean = {g: sum(r["mIoU"] for r in rs) / len(rs) for g, rs in by_rung.items()}
        line = {"axis": p["axis"], "budget": p["budget"], "seeds": max(len(rs) for rs in by_rung.values()),
                "mIoU": mean, "train_s": {g: sum(r["train_seconds"] for r in rs) / len(rs) for g, rs in by_rung.items()},
                "swap": {g: sum(r.get("swap_mIoU", math.nan) for r in rs) / len(rs) for g, rs in by_rung.items()},
                "generic": {g: sum(r.get("generic_mIoU", math.nan) for r in rs) / len(rs) for g, rs in by_rung.items()}}
        line["gaps"] = {f"{g}-{g - 1}": mean[g] - mean[g - 1] for g in sorted(mean) if g - 1 in mean}
        cis = {f"{g}-{g - 1}": gap_ci(by_rung[g - 1], by_rung[g]) for g in sorted(mean) if g - 1 in mean}
        line["gap_ci"] = {k: v for k, v in cis.items() if v is not None}
        if refs:
            line["reference"] = {"mIoU": sum(r["mIoU"] for r in refs) / len(refs), "seeds": len(refs),
                                 "swap": sum(r.get("swap_mIoU", math.nan) for r in refs) / len(refs),
                                 "train_s": sum(r["train_seconds"] for r in refs) / len(refs)}
        if p.get("reference_base_seconds"):
            line["reference_base_seconds"] = p["reference_base_seconds"]
        if p.get("probes"):  # the proxy CLIP's own scores after pre-training (proxy-steps sweeps)
            line["probes"] = p["probes"]
        for k in KINDS:
            line[f"{k}_select"] = {g: sum(r.get(f"{k}_select_mIoU", math.nan) for r in rs) / len(rs)
                                   for g, rs in by_rung.items()}
        out.append(line)
    return out


WHY = {"vanishes": "its CI now holds zero", "grows": "the CIs do not overlap", "shrinks": "the CIs do not overlap",
       "holds": "the CIs overlap"}


def verdict(ci0: list[float], ci1: list[float]) -> str:
    """Whether a gain with CI ``ci0`` (estimate, low, high) at a smaller budget holds, grows, shrinks or vanishes at
    the larger budget where its CI is ``ci1`` (a key of :data:`WHY`): it moved only where the intervals do not
    overlap."""
    if ci0[1] > 0 and ci1[1] <= 0 <= ci1[2]:
        return "vanishes"
    if ci1[1] > ci0[2]:
        return "grows"
    if ci1[2] < ci0[1]:
        return "shrinks"
    return "holds"


def steps_between(seen: list[dict], gap: str) -> str:
    """With three budgets or more, the verdict from each budget to the next (where both have a CI), so a gain that
    shrinks and then holds does not read as one move from the smallest budget to the largest."""
    if len(seen) < 3:
        return ""
    parts = []
    for a, b in zip(seen, seen[1:]):
        ca, cb = a.get("gap_ci", {}).get(gap), b.get("gap_ci", {}).get(gap)
        if ca and cb:
            parts.append(f"{a['budget']:g}x to {b['budget']:g}x {verdict(ca, cb)}")
    return f" Step by step: {'; '.join(parts)}." if parts else ""


def trend_lines(lines: list[dict]) -> list[str]:
    """In words: whether the rungs keep their order at each budget, and whether each gain holds, grows, shrinks
    or vanishes from the smallest budget to the largest that measured it (by its CIs where they exist)."""
    out = []
    for s in lines:
        rungs = sorted(s["mIoU"])
        order = all(s["mIoU"][a] < s["mIoU"][b] for a, b in zip(rungs, rungs[1:]))
        ref = s.get("reference")
        beside = f"; the reference {ref['mIoU']:.2f}" if ref else ""
        values = ", ".join(f"rung {g} {s['mIoU'][g]:.2f}" for g in rungs)
        out.append(f"- At {s['budget']:g}x: the rungs {'keep' if order else 'do not keep'} the ladder's order "
                   f"({values}){beside}.")
    for gap in sorted({g for s in lines for g in s["gaps"]}):
        seen = [s for s in lines if gap in s["gaps"]]
        if len(seen) < 2:
            continue
        first, last = seen[0], seen[-1]
        ci0, ci1 = first.get("gap_ci", {}).get(gap), last.get("gap_ci", {}).get(gap)
        e0, e1 = first["gaps"][gap], last["gaps"][gap]
        step = f"rung {gap.replace('-', ' over ')}"
        if ci0 and ci1:
            v = verdict(ci0, ci1)
            out.append(f"- {step}: {ci0[0]:+.2f} [{ci0[1]:+.2f}, {ci0[2]:+.2f}] at {first['budget']:g}x, "
                       f"{ci1[0]:+.2f} [{ci1[1]:+.2f}, {ci1[2]:+.2f}] at {last['budget']:g}x: it {v} ({WHY[v]})."
                       + steps_between(seen, gap))
        else:
            out.append(f"- {step}: {e0:+.2f} at {first['budget']:g}x, {e1:+.2f} at {last['budget']:g}x (no CI: the "
                       f"runs' per-expression IoUs were not read).")
    return out


def load_lines(saved: Path) -> list[dict]:
    """The points a sweep has recorded in ``saved`` (JSON keys back to rung numbers); [] if none yet."""
    if not saved.is_file():
        return []
    lines = json.loads(saved.read_text())
    for s in lines:
        for key in PER_RUNG:
            if key in s:
                s[key] = {int(g): v for g, v in s[key].items()}
    return lines


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """Grow a sweep in pieces: a new point at a recorded budget replaces what it measured again (rung by rung; the
    reference) and keeps the rest, the others stay, in budget order. A piece may train fewer rungs than the rest
    (e.g. only rungs 1-2 at 10x); its table row leaves the missing rungs empty."""
    by_budget = {s["budget"]: s for s in old}
    for s in new:
        held = by_budget.get(s["budget"])
        if held is None or held.get("axis") != s.get("axis"):
            by_budget[s["budget"]] = s
            continue
        merged = dict(held)
        for key in PER_RUNG:
            merged[key] = {**held.get(key, {}), **s.get(key, {})}
        mean = merged["mIoU"]
        merged["gaps"] = {f"{g}-{g - 1}": mean[g] - mean[g - 1] for g in sorted(mean) if g - 1 in mean}
        merged["gap_ci"] = {k: v for k, v in {**held.get("gap_ci", {}), **s.get("gap_ci", {})}.items()
                            if k in merged["gaps"]}
        for key in ("reference", "reference_base_seconds", "probes"):
            if key in s:
                merged[key] = s[key]
        merged["seeds"] = max(held.get("seeds", 0), s.get("seeds", 0))
        merged["command"] = "; ".join(dict.fromkeys(c for c in (held.get("command"), s.get("command")) if c))
        by_budget[s["budget"]] = merged
    return [by_budget[k] for k in sorted(by_budget)]


def _cell(values: dict, g: int, digits: int = 2) -> str:
    """Rung ``g``'s value in a table cell; '-' where the point did not train that rung (or measured nothing)."""
    v = values.get(g, math.nan)
    return "-" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def write_report(lines_in: list[dict], out_dir: Path, stem: str, command: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    axis = lines_in[0]["axis"]
    xs = [s["budget"] for s in lines_in]
    rungs = sorted({g for s in lines_in for g in s["mIoU"]})
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(15, 4))
    for g in rungs:
        ax0.plot(xs, [s["mIoU"].get(g, math.nan) for s in lines_in], marker="o", label=f"rung {g}")
    if any(s.get("reference") for s in lines_in):
        ax0.plot(xs, [s["reference"]["mIoU"] if s.get("reference") else math.nan for s in lines_in], "k--", marker="s",
                 label="from-scratch reference")
    ax0.set(xscale="log", xlabel=axis, ylabel="mIoU (test)", title="each rung against the budget")
    ax0.legend(fontsize=8)
    for gap in sorted({g for s in lines_in for g in s["gaps"]}):
        ys = [s["gaps"].get(gap, math.nan) for s in lines_in]
        cis = [s.get("gap_ci", {}).get(gap) for s in lines_in]
        err = [[max(0.0, y - c[1]) if c else 0 for y, c in zip(ys, cis)],
               [max(0.0, c[2] - y) if c else 0 for y, c in zip(ys, cis)]]
        ax1.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"rung {gap.replace('-', ' - ')}")
    ax1.axhline(0, color="grey", lw=0.8)
    ax1.set(xscale="log", xlabel=axis, ylabel="mIoU gain (test), 95% CI", title="each step's gain")
    ax1.legend(fontsize=8)
    for k, colour in zip(KINDS, ("tab:blue", "tab:red")):  # one colour per kind: rung 1 dashed, rung 2 solid
        for g, style in ((1, "--"), (2, "-")):
            ax2.plot(xs, [s[f"{k}_select"].get(g, math.nan) for s in lines_in], style, color=colour, marker="o",
                     label=f"{k}, rung {g}")
    ax2.set(xscale="log", xlabel=axis, ylabel="select mIoU (test)", title="does CFE pay on spatial expressions?")
    ax2.legend(fontsize=8)
    for ax in (ax0, ax1, ax2):  # label the budgets themselves, not powers of ten
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=110)
    plt.close(fig)
    commands = list(dict.fromkeys(c for s in lines_in
                                  for c in (s.get("command") or command or "python -m bench.budget").split("; ")))
    md = [f"# Ladder gaps against {axis} (SynthRef; our numbers, not the paper's)", "",
          "- Made by: " + "; ".join(f"`{c}`" for c in commands)
          + "; every point is a tracked `bench.ablate` run, reused when run again, and each command adds its points "
          "to the ones recorded before.",
          f"- This report: `python -m bench.budget --report"
          f"{'' if axis.startswith('stage') else ' --proxy-steps ' + ','.join(f'{x:g}' for x in xs)}` (redraws it from "
          f"`{stem}.json`).", "",
          f"![gaps]({stem}.png)", "",
          "| budget | seeds | " + " | ".join(f"rung {g} mIoU" for g in rungs) + " | gaps | position select (1 / 2) | "
          "relation select (1 / 2) | train s per rung |", "|" + "---|" * (len(rungs) + 6)]
    for s in lines_in:
        gaps = ", ".join(f"{k}: {v:+.2f}" for k, v in s["gaps"].items())
        md.append(f"| {s['budget']:g} | {s['seeds']} | " + " | ".join(_cell(s["mIoU"], g) for g in rungs)
                  + f" | {gaps} | {_cell(s['position_select'], 1, 1)} / {_cell(s['position_select'], 2, 1)}"
                  f" | {_cell(s['relation_select'], 1, 1)} / {_cell(s['relation_select'], 2, 1)} | "
                  + ", ".join(_cell(s["train_s"], g, 0) for g in rungs) + " |")
    if any(LADDER[g].decoder for g in rungs):
        md += ["", "Train s: each rung's mean training seconds over its seeds. A rung with the decoder counts its stage 2 "
               "alone where its stage 1 came from the stage-1 cache (the rung before it, same components, trained it "
               "first, as in the ladder and in each budget point)."]
    if any(s.get("gap_ci") for s in lines_in):
        gaps = sorted({g for s in lines_in for g in s["gaps"]})
        md += ["", "Each step's gain in test mIoU with its 95% paired bootstrap CI (test images and seeds resampled, "
               "`bench/reporting/bootstrap.py`):", "",
               "| budget | " + " | ".join(f"rung {g.replace('-', ' - ')}" for g in gaps) + " |", "|" + "---|" * (len(gaps) + 1)]
        for s in lines_in:
            cells = []
            for g in gaps:
                c = s.get("gap_ci", {}).get(g)
                cells.append(f"{c[0]:+.2f} [{c[1]:+.2f}, {c[2]:+.2f}]" if c else
                             (f"{s['gaps'][g]:+.2f}" if g in s["gaps"] else "-"))
            md.append(f"| {s['budget']:g} | " + " | ".join(cells) + " |")
        most = max(s.get("seeds", 0) for s in lines_in)
        fewer = [s for s in lines_in if s.get("seeds", 0) < most]
        if fewer:
            md += ["", "At " + ", ".join(f"{s['budget']:g}x ({s['seeds']} seed{'s' if s['seeds'] != 1 else ''})"
                                       for s in fewer)
                   + " fewer seeds ran than at the other budgets: "
                   + ("a one-seed CI resamples test images alone, without the seed-to-seed spread, so it reads "
                      "narrower than the others" if any(s["seeds"] == 1 for s in fewer) else
                      "those CIs carry less of the seed-to-seed spread")
                   + ", and a verdict against it leans towards 'grows' or 'shrinks'."]
    if any(s.get("swap") for s in lines_in):
        with_ref = any(s.get("reference") for s in lines_in)
        generic = any(not math.isnan(v) for s in lines_in for v in s.get("generic", {}).values())

        def control(s: dict, g: int) -> str:
            cell = _cell(s.get("swap", {}), g)
            return cell + (f" / {_cell(s.get('generic', {}), g)}" if generic else "")

        md += ["", "Swap mIoU (each test sentence replaced by another referent's sentence of its image, scored against "
               "the true mask: a model that reads its text scores far lower than its mIoU)"
               + (" / generic mIoU (the sentence replaced by 'the object': what the image alone gives)" if generic else "")
               + (" and the from-scratch reference (no CLIP; trained for the budget times the ladder's rung-1 time)"
                  if with_ref else "") + ":", "",
               "| budget | " + " | ".join(f"rung {g} swap" + (" / generic" if generic else "") for g in rungs)
               + (" | reference mIoU | reference swap | reference seeds | reference train s" if with_ref else "") + " |",
               "|" + "---|" * (len(rungs) + 1 + (4 if with_ref else 0))]
        for s in lines_in:
            ref = s.get("reference")
            tail = ""
            if with_ref:
                tail = (f" | {ref['mIoU']:.2f} | {ref['swap']:.2f} | {ref['seeds']} | {ref['train_s']:.0f}" if ref
                        else " | - | - | - | -")
            md.append(f"| {s['budget']:g} | " + " | ".join(control(s, g) for g in rungs)
                      + tail + " |")
    md += ["", "## What holds, grows or shrinks with training", "", *trend_lines(lines_in)]
    with_probes = [s for s in lines_in if s.get("probes")]
    if with_probes:
        names = list(dict.fromkeys(k for s in with_probes for k in s["probes"]))
        md += ["", "The proxy CLIP after each pre-training budget, on its held-out captions (%; `bench/proxy/pretrain_clip.py`): "
               "retrieval top-1 among the batch, and the attribute, place and relation probes (the true caption against "
               "the same caption with one attribute, or left/right and above/below, swapped; chance 50).", "",
               "| budget | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        md += [f"| {s['budget']:g} | " + " | ".join(f"{s['probes'].get(k, math.nan):.1f}" for k in names) + " |"
               for s in with_probes]
    path = out_dir / f"{stem}.md"
    path.write_text("\n".join(md) + "\n")
    (out_dir / f"{stem}.json").write_text(json.dumps(lines_in, indent=2, default=str))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.budget", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=P.DEFAULT_PRESET, type=P.preset_name, metavar="NAME", help=P.preset_help(P.DEFAULT_PRESET))
    p.add_argument("--multipliers", default="1,3,10", help="stage-1 budgets as multiples of the preset's (default %(default)s)")
    p.add_argument("--proxy-steps", default=None, help="sweep the proxy CLIP's pre-training steps instead, e.g. 300,600,3000")
    p.add_argument("--rungs", default="0,1,2,3", help="ladder rungs to train at each point (default %(default)s)")
    p.add_argument("--reference-at", default=None, metavar="MULTIPLIERS",
                   help="also train the from-scratch reference at these budgets (of --multipliers), for k times the "
                        "ladder's rung-1 time at 1x, every seed")
    p.add_argument("--seeds", default="0", help="default %(default)s (one seed is enough above 1x)")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    p.add_argument("--out-dir", default=None, help="default reports/<preset>")
    p.add_argument("--report", action="store_true", help="only redraw the report from the points already run")
    a = p.parse_args(argv)
    a.extra = ["--tracking-uri", a.tracking_uri, "--no-progress"]
    stem = "proxy-budget" if a.proxy_steps else "budget"
    out_dir = Path(a.out_dir or P.report_dir(a.preset))
    saved = out_dir / f"{stem}.json"
    try:
        if a.report:
            lines = load_lines(saved)
            if not lines:
                raise FileNotFoundError(f"{saved}: no sweep recorded yet; run python -m bench.budget first")
            path = write_report(lines, out_dir, stem)
        else:
            command = ("python -m bench.budget " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
            written: list[Path] = []

            def record(point: dict) -> None:  # each point joins the report as it ends; those recorded before stay
                new = summary(with_kinds([point], a.tracking_uri, f"risclip-{a.preset}"))
                for s in new:
                    s["command"] = command
                written.append(write_report(merge(load_lines(saved), new), out_dir, stem))
                print(f"recorded the point at {point['budget']:g} in {written[-1]}", flush=True)

            sweep(a, record)
            path = written[-1]
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0

