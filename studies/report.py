"""``reports/<preset>/studies/<name>.md`` from a stored study (Optuna storage) and its trials' MLflow runs.

Plots use Optuna's matplotlib backend (history, importances, Pareto front) and seaborn (the factorial's
interaction heatmap). Every table says which split each number is on: selection is on val, scores are
on test, and nothing is chosen on test.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from bench.spine.presets import pinned_command  # noqa: E402
from bench.spine.tracking import NullTracker, Tracker  # noqa: E402

from . import get_study  # noqa: E402
from .runner import RunConfig, build_preset, make_storage  # noqa: E402


def _save(ax_or_fig, path: Path) -> str:
    fig = ax_or_fig.figure if hasattr(ax_or_fig, "figure") and not isinstance(ax_or_fig, plt.Figure) else ax_or_fig
    if isinstance(fig, np.ndarray):
        fig = fig.flat[0].figure
    fig.set_size_inches(7, 4.2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _trials_table(study: optuna.Study, objectives: tuple[str, ...]) -> list[str]:
    lines = ["| trial | state | " + " | ".join(f"{o} ({'val' if o == 'val_mIoU' else 'cost'})" for o in objectives)
             + " | variant | settings (--set) | note |", "|" + "---|" * (len(objectives) + 5)]
    for t in study.get_trials(deepcopy=False):
        vals = t.values if t.values is not None else [math.nan] * len(objectives)
        note = t.user_attrs.get("stopped", "") or ("surplus" if t.user_attrs.get("surplus") else "")
        if t.user_attrs.get("reused"):
            note = (note + " reused run").strip()
        if t.user_attrs.get("from_preset"):
            note = (note + "; the preset's own settings").strip("; ")
        if "failed_trial" in t.system_attrs:
            note = (note + f"; retry of trial {t.system_attrs['failed_trial']}").strip("; ")
        if t.user_attrs.get("note"):
            note = (note + "; " + t.user_attrs["note"]).strip("; ")
        if t.state == TrialState.FAIL and not note:
            note = "failed (worker died or diverged); retried"
        lines.append(f"| {t.number} | {t.state.name} | " + " | ".join(f"{v:.2f}" for v in vals) +
                     f" | {t.user_attrs.get('components', '')} | {' '.join(t.user_attrs.get('overrides', '').split(';'))} |"
                     f" {note} |")
    return lines


def _timing(trials: list) -> tuple[list, float, float]:
    """The finished (COMPLETE or PRUNED) trials, the wall minutes from the first start to the last end, and the
    minutes inside finished trials (a study resumed across sessions has idle gaps in its wall time)."""
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() / 60 if starts and ends else math.nan
    inside = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done
                 if t.datetime_start and t.datetime_complete) / 60
    return done, wall, inside


def _partial(done: int, wanted: int) -> list[str]:
    """The banner of a study that has not finished the trials it was asked for."""
    if not wanted or done >= wanted:
        return []
    return [f"**Partial: {done} of the {wanted} trials asked for have finished. The same command resumes the study "
            f"from its storage (a trial left RUNNING is failed by heartbeat and retried); numbers below cover the "
            f"finished trials only.**", ""]


def _header(cfg: RunConfig, study: optuna.Study, command: str, tracker: Tracker) -> list[str]:
    trials = study.get_trials(deepcopy=False)
    done, wall, inside = _timing(trials)
    parents = tracker.runs({"kind": "study", "study": cfg.study_name}, status=None, limit=20)
    run_cmd = parents[0].data.tags.get("command", "?") if parents else study.user_attrs.get("command", "?")
    partial = _partial(len(done), int(study.user_attrs.get("trials_wanted", len(done))))
    return [*partial, f"- Study `{study.study_name}` in `{cfg.storage}`; made by `{pinned_command(run_cmd, cfg.preset)}`; "
                      f"this report: `{command}`.",
            f"- Preset `{cfg.preset}{'-quick' if cfg.quick else ''}` (SynthRef numbers are ours, not the paper's); "
            f"{len(done)} COMPLETE or PRUNED trials of {len(trials)} started; time cap {float(study.user_attrs.get('time_cap_s', cfg.time_cap_s)):.0f} s per "
            f"trial; {'seeds ' + ', '.join(map(str, cfg.seeds)) if cfg.study == 'factorial' else 'seed 0'}; "
            f"wall time {wall:.1f} min (first trial start to last trial end), {inside:.1f} min inside finished trials, on "
            f"{study.user_attrs.get('machine', 'this machine')}.",
            "- Selection on val; scores on test; nothing is chosen on test.", ""]


def write_report(cfg: RunConfig, out_dir: str | Path, command: str, remeasure: int = 0) -> Path:
    spec = get_study(cfg.study)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = make_storage(cfg.storage, cfg.heartbeat_interval)
    preset = build_preset(cfg)
    tracker = NullTracker() if cfg.tracking_uri.lower() == "none" else Tracker(cfg.tracking_uri, f"risclip-{preset.name}")
    stem = cfg.study
    lines = [f"# Study `{cfg.study}`: {spec.description}", ""]
    if cfg.study == "ladder":
        lines += _ladder(cfg, storage, tracker, command, out, stem)
    else:
        try:
            study = optuna.load_study(study_name=cfg.study_name, storage=storage)
        except KeyError:
            raise ValueError(f"no study {cfg.study_name} in {cfg.storage}; run python -m studies run {cfg.study}") from None
        lines += _header(cfg, study, command, tracker)
        if cfg.study == "factorial":
            lines += _factorial(study, tracker, out, stem)
        elif cfg.study == "pareto":
            lines += _pareto(study, out, stem)
            if remeasure:
                lines += _remeasured(study, preset, tracker, remeasure, cfg.device)
        else:
            lines += _single(study, spec, out, stem, cfg.quick)
        lines += ["## Every trial", "", *_trials_table(study, spec.objectives)]
    path = out / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _single(study: optuna.Study, spec, out: Path, stem: str, quick: bool = False) -> list[str]:
    lines = []
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        lines += ["## Best trial (val mIoU)", "", f"Trial {best.number}: val mIoU **{best.value:.2f}**, variant "
                  f"{best.user_attrs.get('components')}; rerun it with", "",
                  f"    python -m bench.ablate{' --quick' if quick else ''} --components "
                  f"{best.user_attrs.get('components', '').replace('value+', '')}"
                  + "".join(f" --set {o}" for o in best.user_attrs.get("overrides", "").split(";") if o), ""]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from optuna.visualization import matplotlib as ovm

        lines += ["![history](" + _save(ovm.plot_optimization_history(study), out / f"{stem}-history.png") + ")", ""]
        if len(complete) >= 2 and len({k for t in complete for k in t.params}) >= 2:
            try:
                name = _save(ovm.plot_param_importances(study), out / f"{stem}-importances.png")
                lines += [f"![importances]({name})", ""]
            except (ValueError, RuntimeError) as e:
                lines += [f"(importances not computed: {e})", ""]
    return lines


def _pareto(study: optuna.Study, out: Path, stem: str) -> list[str]:
    from optuna.visualization import matplotlib as ovm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        name = _save(ovm.plot_pareto_front(study, target_names=["val mIoU", "ms / image (batch 1)"]),
                     out / f"{stem}-front.png")
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    lines = [f"![Pareto front]({name})", "",
             "Latency: batch-1 inference ms per image of each trained trial, measured in a fresh process on the machine "
             "named above (`bench/costs/profiling.py`, the benchmark suite's code). On a 2-core CPU two runs of the same "
             "code differ by up to 30% (reports/benchmarks/benchmark.md), so latency gaps smaller than that are noise.", "",
             "## The Pareto front (val mIoU up, latency down)", "",
             "| trial | val mIoU | ms / image | variant | settings |", "|---|---|---|---|---|"]
    for t in front:
        lines.append(f"| {t.number} | {t.values[0]:.2f} | {t.values[1]:.2f} | {t.user_attrs.get('components')} | "
                     f"{' '.join(t.user_attrs.get('overrides', '').split(';'))} |")
    old = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
           if t.user_attrs.get("reused") and not t.user_attrs.get("latency_measured_in_trial")]
    if old:
        lines += ["", "Trials " + ", ".join(f"{t.number} ({t.user_attrs.get('components')}, {t.values[1]:.1f} ms)" for t in old)
                  + " reused a stored run and took the latency that run was profiled at, in another sitting (the study "
                  "measures reused runs itself since); compare their latency with the others' with care."]
    return lines + [""]


def front_of(points: dict[int, tuple[float, float]]) -> list[int]:
    """The trials no other trial beats on both (val mIoU up, ms down), by latency."""
    keep = [n for n, (m, ms) in points.items()
            if not any((m2 >= m and ms2 <= ms) and (m2 > m or ms2 < ms) for n2, (m2, ms2) in points.items() if n2 != n)]
    return sorted(keep, key=lambda n: points[n][1])


def _remeasured(study: optuna.Study, preset, tracker: Tracker, sittings: int, device: str = "auto") -> list[str]:
    """Every COMPLETE trial's latency measured again, ``sittings`` times in turn (round-robin, so that a slow
    spell of the machine falls on all trials alike), in one sitting of this report: the median and the range
    beside the number the study was scored on, and the front under the re-measured medians. On a shared
    2-core VM one fresh-process measurement can be off by half; a reused run's latency comes from another day."""
    from bench.spine import presets as P
    from risclip.config import Components

    from .runner import study_latency

    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get("mlflow_run_id")]
    specs = {}
    for t in trials:
        ov = [o for o in t.user_attrs.get("overrides", "").split(";") if o]
        model = P.override(preset, ov).model.with_components(Components.from_names(t.user_attrs["components"]))
        ckpt = tracker.get_run(t.user_attrs["mlflow_run_id"]).data.tags.get("checkpoint") or None
        specs[t.number] = (model, ckpt if ckpt and Path(ckpt).is_file() else None)
    times: dict[int, list[float]] = {n: [] for n in specs}
    for _ in range(sittings):
        for n, (model, ckpt) in specs.items():
            times[n].append(study_latency(model, ckpt, device)["inference_ms_per_image"])
    med = {n: float(np.median(v)) for n, v in times.items()}
    by_num = {t.number: t for t in trials}
    front = front_of({n: (by_num[n].values[0], med[n]) for n in specs})
    lines = ["## Latency re-measured in one sitting", "",
             f"Each COMPLETE trial profiled {sittings} times in turn by this report (`--remeasure {sittings}`), the same "
             "code as the study's; a trial whose checkpoint is gone is measured untrained (latency does not depend on "
             "the weights). Front under the re-measured medians: "
             + "; ".join(f"trial {n} ({by_num[n].user_attrs.get('components')}, {by_num[n].values[0]:.2f} val mIoU at "
                         f"{med[n]:.1f} ms)" for n in front) + ".", "",
             "| trial | variant | val mIoU | ms in the study | ms re-measured (median) | range | on the front |",
             "|---|---|---|---|---|---|---|"]
    for n in sorted(specs):
        t = by_num[n]
        lines.append(f"| {n} | {t.user_attrs.get('components')} | {t.values[0]:.2f} | {t.values[1]:.1f} | {med[n]:.1f} | "
                     f"{min(times[n]):.1f}-{max(times[n]):.1f} | {'yes' if n in front else ''} |")
    return lines + [""]


def factors_of(study: optuna.Study) -> tuple[str, ...]:
    """The components a factorial study crossed (recorded with it; the default four before the record existed)."""
    from .factorial import DEFAULT_FACTORS

    return tuple(study.user_attrs.get("factors", DEFAULT_FACTORS))


def factorial_table(study: optuna.Study, tracker: Tracker) -> pd.DataFrame:
    """One row per (variant, seed, test expression) with the factor levels, from each trial's metrics.json."""
    factors = factors_of(study)
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_id = t.user_attrs.get("mlflow_run_id")
        comp = t.user_attrs.get("components", "")
        if not comp.startswith("value"):
            continue  # rung 0 without value grounding is outside the 2^k design
        parts = set(comp.split("+"))
        if "per_sample" in t.user_attrs:  # stored with the trial (also where no MLflow store was kept)
            per = [{"sent_id": x[0], "kind": x[1], "iou": x[2], **({"image_id": x[3]} if len(x) > 3 else {})}
                   for x in t.user_attrs["per_sample"]]
        elif run_id:
            per = tracker.load_json(run_id, "metrics.json").get("per_sample", [])
        else:
            continue
        levels = {f: int(f in parts) for f in factors}
        rows += [{**levels, "seed": int(t.user_attrs.get("seed", 0)), "expr": r["sent_id"], "kind": r["kind"],
                  "iou": 100.0 * r["iou"], "image": r.get("image_id")} for r in per]
    return pd.DataFrame(rows)


def value_grounding_lines(study: optuna.Study, means: pd.DataFrame) -> list[str]:
    """Rung 0 with value grounding off (the last block's ordinary output tokens, projected) beside rung 0 with
    it on: the one cell outside the 2^k design, and what the first rung of the ladder is."""
    per_seed = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("components", "value").startswith("value") or not t.user_attrs.get("per_sample"):
            continue
        per_seed[int(t.user_attrs.get("seed", 0))] = 100.0 * float(np.mean([r[2] for r in t.user_attrs["per_sample"]]))
    none_on = (0,) * means.index.nlevels
    on = means.loc[none_on] if none_on in means.index else None
    if not per_seed or on is None:
        return []
    off = list(per_seed.values())
    return ["", f"Rung 0 without value grounding (the last block's ordinary output tokens): test mIoU {np.mean(off):.2f} "
                f"({len(off)} seeds; nothing is trained, so seeds agree); with it: {on['mean']:.2f}. Value grounding "
                f"adds {on['mean'] - np.mean(off):+.2f} at rung 0."]


def _factorial(study: optuna.Study, tracker: Tracker, out: Path, stem: str) -> list[str]:
    from .analysis import effects_frame, factorial_effects

    factors = factors_of(study)
    df = factorial_table(study, tracker)
    if df.empty:
        return ["No complete trials yet.", ""]
    means = df.groupby([*factors, "seed"])["iou"].mean().groupby(list(factors)).agg(["mean", "std", "count"])
    lines = ["## Test mIoU of every combination (mean ± sd over seeds)", "",
             "| " + " | ".join(factors) + " | test mIoU | seeds |", "|" + "---|" * (len(factors) + 2)]
    for levels, r in means.iterrows():
        lines.append("| " + " | ".join("on" if x else "-" for x in levels) +
                     f" | {r['mean']:.2f} ± {0 if math.isnan(r['std']) else r['std']:.2f} | {int(r['count'])} |")
    lines += value_grounding_lines(study, means)
    try:
        eff = effects_frame(factorial_effects(df, list(factors), n_boot=2000))
    except ValueError as e:
        return lines + ["", f"Effects not computed: {e}", ""]
    lines += ["", "## Main effects and pairwise interactions (test mIoU points, 95% bootstrap CI)", "",
              "Main effect: mean with the component on minus off, averaged over the others. Interaction A x B: how "
              "much A's effect changes when B is on. CIs resample test expressions (whole test images where the trials recorded them) and seeds (`studies/analysis.py`).",
              "", "| term | all | " + " | ".join(k for k in sorted(set(eff["kind"])) if k != "all") + " |",
              "|" + "---|" * (1 + len(set(eff["kind"])))]
    lines += _effect_rows(eff)
    lines += ["", "Bold: the 95% CI excludes zero.", ""]
    inter = eff[(eff["kind"] == "all") & eff["term"].str.contains(" x ")]
    mat = pd.DataFrame(0.0, index=list(factors), columns=list(factors))
    for _, r in inter.iterrows():
        a, b = r["term"].split(" x ")
        mat.loc[a, b] = mat.loc[b, a] = r["estimate"]
    for f in factors:
        mat.loc[f, f] = float(eff[(eff["kind"] == "all") & (eff["term"] == f)]["estimate"].iloc[0])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    sns.heatmap(mat, annot=True, fmt="+.2f", cmap="RdBu_r", center=0, ax=ax)
    ax.set_title("main effects (diagonal) and interactions, test mIoU")
    name = _save(fig, out / f"{stem}-interactions.png")
    lines += [f"![interactions]({name})", ""]
    simple = effects_frame(factorial_effects(df, list(factors), n_boot=2000, simple=True))
    lines += ["## Each component added first and added last (test mIoU points, 95% bootstrap CI)", "",
              "The two ends of every cumulative ladder: *first*, the component switched on with every other one off "
              "(against value grounding alone); *last*, switched on with every other one on (against the full model "
              "without it). The paper's ladder adds CFE after the adapters; this design sees it at both ends.", "",
              "| term | all | " + " | ".join(k for k in sorted(set(simple["kind"])) if k != "all") + " |",
              "|" + "---|" * (1 + len(set(simple["kind"])))]
    lines += _effect_rows(simple)
    lines += [""]
    return lines


def _effect_rows(eff: pd.DataFrame) -> list[str]:
    """One table row per term: its estimate and CI overall, then per expression kind (bold: CI excludes 0)."""
    kinds = ["all", *sorted(k for k in set(eff["kind"]) if k != "all")]
    lines = []
    for term in eff[eff["kind"] == "all"]["term"]:
        cells = []
        for k in kinds:
            r = eff[(eff["kind"] == k) & (eff["term"] == term)]
            if r.empty:
                cells.append("-")
                continue
            r = r.iloc[0]
            mark = "**" if r["excludes_zero"] else ""
            cells.append(f"{mark}{r['estimate']:+.2f}{mark} [{r['low']:+.2f}, {r['high']:+.2f}]")
        lines.append(f"| {term} | " + " | ".join(cells) + " |")
    return lines


OWN = "the preset's own"


def _ladder_header(cfg: RunConfig, studies: list[optuna.Study], command: str, tracker: Tracker,
                   tuned_parent) -> list[str]:
    """The ladder study's provenance: trials per rung, time cap, seeds, and wall time across every rung's study
    plus the seeded re-runs of the chosen settings."""
    trials = [t for st in studies for t in st.get_trials(deepcopy=False)]
    done, tuning, _ = _timing(trials)
    wanted = sum(int(st.user_attrs.get("trials_wanted", 0)) for st in studies)
    first = studies[0]
    cap = float(first.user_attrs.get("time_cap_s", cfg.time_cap_s))
    final = ""
    if tuned_parent is not None:
        secs = tuned_parent.data.metrics.get("wall_seconds", math.nan)
        final = (f"; then `{tuned_parent.data.tags.get('command', '?')}` ran the chosen settings with seeds "
                 f"{tuned_parent.data.tags.get('seeds', '?')} in {secs / 60:.1f} min (runs it could reuse count 0)")
    partial = _partial(len(done), wanted)
    finished = [sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in st.get_trials(deepcopy=False))
                for st in studies]
    asked = sorted({int(st.user_attrs.get("trials_wanted", 0)) for st in studies})
    per_rung = (f"{', '.join(map(str, finished))} of {' or '.join(map(str, asked))} asked for (a trial re-scored or "
                f"re-run after a fault counts in its rung)")
    return [*partial,
            f"- Studies `{cfg.study_name}-rung0` .. `-rung{len(studies) - 1}` in `{cfg.storage}`; made by "
            f"`{pinned_command(first.user_attrs.get('command', '?'), cfg.preset)}`; this report: `{command}`.",
            f"- Preset `{cfg.preset}{'-quick' if cfg.quick else ''}` (SynthRef numbers are ours, not the paper's). "
            f"Finished trials per rung: {per_rung}; the first of each is the preset's own settings, the rest drawn by "
            f"Optuna's TPE sampler, whose first 10 draws are random; seed 0, time cap {cap:.0f} s of training per "
            f"trial, median pruning on per-epoch val mIoU. {len(done)} COMPLETE or PRUNED trials of {len(trials)} "
            f"started.",
            f"- Wall time: {tuning:.1f} min of tuning (first trial start to last trial end, every rung){final}; on "
            f"{first.user_attrs.get('machine', 'this machine')}.",
            "- Selection on val; scores on test; nothing is chosen on test.", ""]


def _ladder_figure(studies: list[optuna.Study], path: Path) -> str:
    """Every trial's val mIoU per rung; the preset's own settings ringed, the chosen trial starred."""
    fig, ax = plt.subplots()
    for rung, st in enumerate(studies):
        done = [t for t in st.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        pruned = [t for t in st.get_trials(deepcopy=False) if t.state == TrialState.PRUNED and t.intermediate_values]
        ax.scatter([rung] * len(done), [t.value for t in done], color="tab:blue", s=22, alpha=0.7,
                   label="trial (complete)" if rung == 0 else None)
        ax.scatter([rung] * len(pruned), [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                   color="tab:grey", marker="x", s=22, label="pruned (last val)" if rung == 0 else None)
        mine = [t.value for t in done if t.user_attrs.get("from_preset")]
        ax.scatter([rung] * len(mine), mine, facecolors="none", edgecolors="tab:red", s=90,
                   label="preset's settings" if rung == 0 else None)
        if done:
            ax.scatter([rung], [st.best_value], marker="*", color="gold", edgecolors="k", s=160, zorder=3,
                       label="chosen (best val)" if rung == 0 else None)
    ax.set_xticks(range(len(studies)))
    ax.set_xlabel("rung")
    ax.set_ylabel("val mIoU (SynthRef)")
    ax.set_title("ladder study: every trial, per rung")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _ladder(cfg: RunConfig, storage, tracker: Tracker, command: str, out: Path, stem: str) -> list[str]:
    from risclip.config import LADDER

    from .ladder import rung_study_name, tuned_path

    rows = []
    studies = []
    for rung, comp in enumerate(LADDER):
        try:
            study = optuna.load_study(study_name=rung_study_name(cfg.study_name, rung), storage=storage)
        except KeyError:
            raise ValueError(f"no study {rung_study_name(cfg.study_name, rung)} in {cfg.storage}; run python -m "
                             f"studies run ladder") from None
        studies.append(study)
        best = study.best_trial
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        first = [t.value for t in done if t.user_attrs.get("from_preset") and t.value is not None]
        rows.append({"rung": rung, "components": str(comp), "trials": len(done), "best_val": best.value,
                     "preset_val": first[0] if first else float("nan"), "best_trial": best.number,
                     "own": bool(best.user_attrs.get("from_preset")),
                     "settings": " ".join(o for o in best.user_attrs.get("overrides", "").split(";") if o)})
    preset_name = cfg.preset + ("-quick" if cfg.quick else "")
    from bench.reporting.ladder_runs import latest_plain_ladder, latest_tuned_invocation, variant_summaries

    tuned_parent = latest_tuned_invocation(tracker)
    plain = latest_plain_ladder(tracker)
    plain_test, tuned_test = [{} if run is None else variant_summaries(tracker, run) for run in (plain, tuned_parent)]
    lines = _ladder_header(cfg, studies, command, tracker, tuned_parent)
    where = os.path.relpath(tuned_path(preset_name))
    lines += [f"Chosen settings: `{where}` (with their study, trial and git revision).", "",
              f"![every trial per rung]({_ladder_figure(studies, out / f'{stem}-trials.png')})", "",
              "| rung | variant | trials | val mIoU, preset's settings (trial 0) | best val mIoU (trial) | "
              "test mIoU, preset (mean ± sd, n) | test mIoU, tuned (mean ± sd, n) | chosen settings |",
              "|---|---|---|---|---|---|---|---|"]

    def fmt(line: dict | None) -> str:
        if not line or math.isnan(line["mIoU"]):
            return "-"
        return f"{line['mIoU']:.2f} ± {line['mIoU_sd']:.2f} ({line['seeds']})"

    for r in rows:
        lines.append(f"| {r['rung']} | {r['components']} | {r['trials']} | {r['preset_val']:.2f} | "
                     f"{r['best_val']:.2f} (#{r['best_trial']}) | "
                     f"{fmt(plain_test.get(r['components']))} | {fmt(tuned_test.get(r['components']))} | "
                     f"{OWN if r['own'] else r['settings']} |")
    lines += ["", "Val numbers chose the settings; test numbers only score them. A rung whose best trial is its "
              "first keeps the preset's settings, and its tuned test numbers are the preset's runs, reused.", ""]
    for rung, st in enumerate(studies):
        lines += [f"## Rung {rung}: every trial", "", *_trials_table(st, ("val_mIoU",)), ""]
    return lines
