"""How the gaps between the ladder's rungs move with the training and the pre-training budget.

    python -m bench.budget                                  # stage-1 budget 1x, 3x, 10x; seed 0; rungs 0-3
    python -m bench.budget --multipliers 1,3 --seeds 0,1    # a part of it (every run is reused later)
    python -m bench.budget --proxy-steps 300,600,3000       # the proxy CLIP's pre-training budget instead
    python -m bench.budget --report                         # only redraw reports/<preset>/budget.md from the store

The stage-1 budget is sentences x epochs: 1x is the preset's (``max_train_samples`` x
``stage1_epochs``); kx takes k times as many training sentences where the split has them and makes up
the rest with epochs (rounded up). The proxy budget is the v2 proxy CLIP's optimiser steps, each
proxy pre-trained (and cached) on demand. Every point is an ordinary ``bench.ablate`` run with
``--set`` (or ``--pretrained``) overrides, tracked in MLflow and reused when run again, so a sweep can
be grown in pieces across sessions: each command adds its points to those recorded in
``reports/<preset>/budget.json`` (a point at the same budget is replaced) and redraws the report from
all. The report plots each gap (rung 1 - rung 0, 2 - 1, 3 - 2) and the position and relation select
mIoU of rungs 1 and 2 against the budget; numbers are SynthRef's.
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
from risclip.config import LADDER

KINDS = ("position", "relation")


def stage1_overrides(preset: P.Preset, k: float, available: int) -> list[str]:
    """``--set`` arguments giving ``k`` times the preset's stage-1 sentences x epochs."""
    base_n, base_e = preset.data.max_train_samples or available, preset.train.stage1_epochs
    if k == 1:
        return []
    n = min(available, int(round(base_n * k)))
    epochs = math.ceil(k * base_n * base_e / n)
    return [f"data.max_train_samples={n}", f"train.stage1_epochs={epochs}"]


def train_sentences(preset: P.Preset) -> int:
    from risclip.data.refer import load_refs

    d = preset.data
    refs = load_refs(Path(d.data_root) / d.dataset / f"refs({d.split_by}).p")
    return sum(len(r["sentences"]) for r in refs if r.get("split") == d.train_split)


def run_point(preset_name: str, rungs: list[int], seeds: str, sets: list[str], pretrained: str | None,
              extra: list[str]) -> list[dict]:
    from bench.spine import ablate

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "rows.json"
        argv = ["--preset", preset_name, "--seeds", seeds, "--no-baselines", "--output", str(out), *extra]
        for r in rungs:
            argv += ["--components", ",".join(LADDER[r].names()[1:]) or "none"]
        for s in sets:
            argv += ["--set", s]
        if pretrained:
            argv += ["--pretrained", pretrained]
        if ablate.main(argv) != 0:
            raise RuntimeError(f"bench.ablate {' '.join(argv)} failed")
        return json.loads(out.read_text())["rows"]


def sweep(a: argparse.Namespace) -> list[dict]:
    from bench.proxy.pretrain_clip import pretrain
    from bench.spine.assets import ensure_data

    preset = P.build(a.preset)
    ensure_data(preset, None)
    rungs = [int(r) for r in a.rungs.split(",")]
    points = []
    if a.proxy_steps:
        for steps in [int(x) for x in a.proxy_steps.split(",")]:
            cfg = dataclasses.replace(preset.proxy_clip, steps=steps)
            path, summary = pretrain(cfg)
            rows = run_point(a.preset, rungs, a.seeds, [], str(path), a.extra)
            probes = {"retrieval": summary.get("val_retrieval_top1", math.nan),
                      **{k.replace("_probe", ""): v for k, v in summary.get("probes", {}).items() if not k.endswith("_n")}}
            points.append({"axis": "proxy steps", "budget": steps, "rows": rows, "probes": probes})
    else:
        available = train_sentences(preset)
        for k in [float(x) for x in a.multipliers.split(",")]:
            rows = run_point(a.preset, rungs, a.seeds, stage1_overrides(preset, k, available), None, a.extra)
            points.append({"axis": "stage-1 budget (x preset)", "budget": k, "rows": rows})
    return points


def with_kinds(points: list[dict], tracking_uri: str, experiment: str) -> list[dict]:
    from bench.spine.tracking import Tracker

    tracker = Tracker(tracking_uri, experiment)
    for p in points:
        for r in p["rows"]:
            m = tracker.get_run(r["mlflow_run_id"]).data.metrics
            for k in KINDS:
                r[f"{k}_select_mIoU"] = m.get(f"test_{k}_select_mIoU", math.nan)
    return points


def summary(points: list[dict]) -> list[dict]:
    """Per budget: mean mIoU per rung, the gaps, and rungs 1-2's position / relation select mIoU."""
    out = []
    for p in points:
        by_rung: dict[int, list[dict]] = {}
        for r in p["rows"]:
            by_rung.setdefault(int(r["rung"]), []).append(r)
        mean = {g: sum(r["mIoU"] for r in rs) / len(rs) for g, rs in by_rung.items()}
        line = {"axis": p["axis"], "budget": p["budget"], "seeds": max(len(rs) for rs in by_rung.values()),
                "mIoU": mean, "train_s": {g: sum(r["train_seconds"] for r in rs) / len(rs) for g, rs in by_rung.items()}}
        line["gaps"] = {f"{g}-{g - 1}": mean[g] - mean[g - 1] for g in sorted(mean) if g - 1 in mean}
        if p.get("probes"):  # the proxy CLIP's own scores after pre-training (proxy-steps sweeps)
            line["probes"] = p["probes"]
        for k in KINDS:
            line[f"{k}_select"] = {g: sum(r.get(f"{k}_select_mIoU", math.nan) for r in rs) / len(rs)
                                   for g, rs in by_rung.items()}
        out.append(line)
    return out


def load_lines(saved: Path) -> list[dict]:
    """The points a sweep has recorded in ``saved`` (JSON keys back to rung numbers); [] if none yet."""
    if not saved.is_file():
        return []
    lines = json.loads(saved.read_text())
    for s in lines:
        for key in ("mIoU", "train_s", "position_select", "relation_select"):
            s[key] = {int(g): v for g, v in s[key].items()}
    return lines


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """Grow a sweep in pieces: a new point replaces a recorded one at the same budget, the others stay, in
    budget order. A piece may train fewer rungs than the rest (e.g. only rungs 0-2 at 10x); its table row
    leaves the missing rungs empty."""
    by_budget = {s["budget"]: s for s in old}
    by_budget.update({s["budget"]: s for s in new})
    return [by_budget[k] for k in sorted(by_budget)]


def write_report(lines_in: list[dict], out_dir: Path, stem: str, command: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    axis = lines_in[0]["axis"]
    xs = [s["budget"] for s in lines_in]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for gap in sorted({g for s in lines_in for g in s["gaps"]}):
        ax1.plot(xs, [s["gaps"].get(gap, math.nan) for s in lines_in], marker="o", label=f"rung {gap.replace('-', ' - ')}")
    ax1.axhline(0, color="grey", lw=0.8)
    ax1.set(xscale="log", xlabel=axis, ylabel="mIoU gap (test)", title="gaps between rungs")
    ax1.legend(fontsize=8)
    for k in KINDS:
        for g, style in ((1, "--"), (2, "-")):
            ax2.plot(xs, [s[f"{k}_select"].get(g, math.nan) for s in lines_in], style, marker="o", label=f"{k}, rung {g}")
    ax2.set(xscale="log", xlabel=axis, ylabel="select mIoU (test)", title="does CFE pay on spatial expressions?")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):  # label the budgets themselves, not powers of ten
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=110)
    plt.close(fig)
    rungs = sorted({g for s in lines_in for g in s["mIoU"]})
    commands = list(dict.fromkeys(s.get("command") or command or "python -m bench.budget" for s in lines_in))
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
        md.append(f"| {s['budget']:g} | {s['seeds']} | " + " | ".join(f"{s['mIoU'].get(g, math.nan):.2f}" for g in rungs)
                  + f" | {gaps} | {s['position_select'].get(1, math.nan):.1f} / {s['position_select'].get(2, math.nan):.1f}"
                  f" | {s['relation_select'].get(1, math.nan):.1f} / {s['relation_select'].get(2, math.nan):.1f} | "
                  + ", ".join(f"{s['train_s'][g]:.0f}" if g in s["train_s"] else "-" for g in rungs) + " |")
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
        else:
            new = summary(with_kinds(sweep(a), a.tracking_uri, f"risclip-{a.preset}"))
            command = ("python -m bench.budget " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
            for s in new:
                s["command"] = command
            lines = merge(load_lines(saved), new)  # the points recorded before stay in the report
        path = write_report(lines, out_dir, stem)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
