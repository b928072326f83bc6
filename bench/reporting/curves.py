"""Learning curves in the ladder report: each trained rung's val mIoU after every epoch of stage 1 and stage 2
(``TrainConfig.learning_curve``, logged in each run's ``metrics.json`` history), so that a reader sees whether a
rung was still climbing when its budget ran out. Renders only; trains nothing."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

# a rung whose val mIoU rose by more than this over its last epoch is called still climbing
CLIMBING_POINTS = 0.5


def load_curves(tracker, df: pd.DataFrame) -> dict[str, dict[int, list[dict]]]:
    """{"rung N" or the reference's name: {seed: epoch rows with ``val_mIoU``}} for the trained rung runs and
    reference runs of ``df`` that logged a learning curve, rungs first."""
    out: dict[str, dict[int, list[dict]]] = {}
    chosen = df[((df["kind"] == "variant") & df["rung"].map(lambda r: r is not None and int(r) > 0))
                | (df["kind"] == "reference")]
    for _, r in chosen.iterrows():
        try:
            history = tracker.load_json(r["mlflow_run_id"], "metrics.json").get("history", [])
        except (OSError, LookupError, ValueError, AttributeError):
            continue
        rows = [h for h in history if isinstance(h.get("val_mIoU"), (int, float)) and not math.isnan(h["val_mIoU"])]
        if rows:
            key = f"rung {int(r['rung'])}" if r["kind"] == "variant" else str(r["components"])
            out.setdefault(key, {})[int(r["seed"])] = sorted(rows, key=lambda h: (h.get("stage", 2), h["epoch"]))
    return dict(sorted(out.items(), key=lambda kv: (not kv[0].startswith("rung "), kv[0])))


def anchor(key: str) -> str:
    """The report's link target for a curve: ``curve-rung-1``, ``curve-reference-1x-rung-1-time``."""
    return "curve-" + "-".join("".join(ch if ch.isalnum() else " " for ch in key.lower()).split())


def _label(h: dict) -> str:
    return f"s{int(h['stage'])}e{int(h['epoch'])}" if "stage" in h else f"e{int(h['epoch'])}"


def _aligned(by_seed: dict[int, list[dict]]) -> tuple[list[str], dict[int, dict[str, float]]]:
    """Every epoch label any seed has, in training order, and each seed's val mIoU by label: a seed that resumed
    a run trained before the curve existed lacks its first epochs, and must not be set at their places."""
    rows = sorted((h for hs in by_seed.values() for h in hs), key=lambda h: (h.get("stage", 2), h["epoch"]))
    labels = list(dict.fromkeys(_label(h) for h in rows))
    return labels, {seed: {_label(h): h["val_mIoU"] for h in hs} for seed, hs in by_seed.items()}


def curves_figure(curves: dict[str, dict[int, list[dict]]], path: Path) -> Path | None:
    """One panel per rung and per reference: val mIoU after each epoch, a line per seed, stage boundaries dashed."""
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rungs = list(curves)
    fig, axes = plt.subplots(1, len(rungs), figsize=(3.2 * len(rungs), 3.2), sharey=True, squeeze=False)
    for ax, rung in zip(axes[0], rungs):
        labels, values = _aligned(curves[rung])
        for seed, by_label in sorted(values.items()):
            xs = [i for i, lab in enumerate(labels) if lab in by_label]
            ax.plot(xs, [by_label[labels[i]] for i in xs], marker="o", label=f"seed {seed}")
        step = max(1, len(labels) // 8)
        ax.set_xticks(range(0, len(labels), step), labels[::step], fontsize=7)
        for i in range(1, len(labels)):
            if labels[i][:2] != labels[i - 1][:2] and labels[i].startswith("s"):
                ax.axvline(i - 0.5, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(rung.replace(" rung-1 time", ""), fontsize=9)
        ax.set_xlabel("epoch (s: stage)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("val mIoU (best cut)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curve_lines(curves: dict[str, dict[int, list[dict]]], figure: Path | None) -> list[str]:
    """The report's section: the figure and, per rung and reference, the seed-mean val mIoU after each epoch
    and whether the last epoch still gained more than :data:`CLIMBING_POINTS`."""
    if not curves or figure is None:
        return []
    lines = ["", "## Learning curves", "",
             "Val mIoU (at its best cut, on the first val sentences: `train.curve_samples`) after every epoch of "
             "each stage, one line per seed. Stage 1's points score the patch map upsampled (what stage 1 trains), "
             "stage 2's the decoder's masks; the from-scratch reference has one stage. A model whose last epoch "
             f"still gained more than {CLIMBING_POINTS} points was stopped while climbing.", "",
             f"![learning curves]({figure.name})", "",
             "| model | epochs | val mIoU after each epoch (mean over the seeds that logged it) | last epoch's gain | |", "|---|---|---|---|---|"]
    for key, by_seed in curves.items():
        labels, values = _aligned(by_seed)
        means = [sum(v[lab] for v in values.values() if lab in v) / sum(lab in v for v in values.values())
                 for lab in labels]  # over the seeds that have the epoch
        n = len(labels)
        # the last epoch's gain within each seed that logged both of the last two epochs, averaged
        pairs = [v[labels[-1]] - v[labels[-2]] for v in values.values() if n >= 2 and labels[-2] in v and labels[-1] in v]
        gain = sum(pairs) / len(pairs) if pairs else math.nan
        verdict = "-" if math.isnan(gain) else ("still climbing" if gain > CLIMBING_POINTS else "flat")
        shown = means if n <= 8 else [*means[:3], math.nan, *means[-3:]]
        labels = labels if n <= 8 else [*labels[:3], "...", *labels[-3:]]
        lines.append(f"| <a id=\"{anchor(key)}\"></a>{key} | {', '.join(labels)} | "
                     f"{', '.join('...' if math.isnan(m) else f'{m:.1f}' for m in shown)} | "
                     f"{'-' if math.isnan(gain) else f'{gain:+.2f}'} | {verdict} |")
    return lines
