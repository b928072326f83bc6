"""The capacity report: is CFE's gain cross-modal attention, or more trainable parameters?

Five rows on the same test expressions and seeds, read from finished MLflow runs (nothing is trained here):
the ladder's rung 1 (adapters) and rung 2 (adapters + CFE), the adapters widened to rung 2's stage-1
parameter count (capacity by width), CFE's parameter count at CFE's fusion points as per-stream MLPs with no
attention between the streams (capacity by place, the ``examples/unimodal.py`` plug-in), and the worked
plug-in example (``examples/film.py``). Every gap is a paired bootstrap over test images and seeds
(:mod:`bench.reporting.bootstrap`), overall and on relation expressions, where CFE's credit lives.

A row's runs are the newest finished variant runs of the preset whose components and ``--set`` overrides
are the row's, trained with rung 1's training config on rung 1's data (its ``train_hash`` and
``data_fingerprint`` tags) and one model config (``model_hash``): a quick run or another plug-in setting never
enters a row. Measure -> JSON -> render: :func:`collect` writes what it read to ``capacity.json`` and
:func:`render_markdown` draws the report from that JSON alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.reporting.per_expression import PerExpression  # noqa: E402
from bench.spine.results import mean_sd, row_from_run  # noqa: E402
from bench.spine.tracking import Tracker  # noqa: E402
from risclip import registry  # noqa: E402
from risclip.config import Components  # noqa: E402

ROLES = ("rung 1", "control", "rung 2", "plug-in")


@dataclass(frozen=True)
class Row:
    key: str  # the row's name in tables
    role: str  # "rung 1", "control", "rung 2" or "plug-in": what the report does with the row (ROLES)
    components: str  # component names, as --components takes them
    overrides: str = ""  # the invocation's --set assignments, as the run's ``overrides`` tag records them
    plugin: str | None = None  # the plug-in module that registers a component of the row
    what: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"capacity row {self.key!r}: role {self.role!r} is not one of {ROLES}")

    @property
    def label(self) -> str:
        return str(Components.from_names(self.components))


def the(rows: list, role: str):
    """The one row of ``role`` among ``rows`` (:class:`Row` objects, or the report's JSON rows)."""
    found = [r for r in rows if (r["role"] if isinstance(r, dict) else r.role) == role]
    if len(found) != 1:
        raise ValueError(f"the capacity report has {len(found)} rows of role {role!r}, expected one")
    return found[0]


def rows_for(width: int) -> list[Row]:
    """The report's rows, with the adapter width that matches rung 2's stage-1 parameters."""
    return [
        Row("rung 1: adapters", "rung 1", "adapters", what="the ladder's rung 1"),
        Row(f"adapters, width {width}", "control", "adapters", f"model.adapter_dim={width}",
            what="capacity by width: rung 2's stage-1 parameter count, all of it in the adapters"),
        Row("adapters + unimodal", "control", "adapters,unimodal", plugin="examples.unimodal",
            what="capacity by place: CFE's parameter count at CFE's fusion points, one MLP per stream, no attention "
                 "between the streams"),
        Row("rung 2: adapters + CFE", "rung 2", "adapters,cfe", what="the ladder's rung 2"),
        Row("adapters + FiLM", "plug-in", "adapters,film", plugin="examples.film",
            what="the worked plug-in example: the sentence scales and shifts the vision tokens at the fusion points"),
    ]


def train_command(row: Row, width: int) -> str:
    if row.plugin:
        return f"python -m bench.ablate --reference '' --plugin {row.plugin} --components {row.components}"
    if row.overrides:
        return f"python -m bench.ablate --reference '' --components adapters --set model.adapter_dim={width}"
    return "python -m bench.ablate"


def find_runs(tracker: Tracker, preset: str, row: Row, anchor: dict[int, dict[str, str]] | None) -> dict[int, object]:
    """{seed: run} of a row: the newest finished run per seed that matches the row and, per seed, the anchor's
    ``train_hash`` (which holds the seed) and ``data_fingerprint`` (rung 1's), all of one ``model_hash`` (the
    newest run's)."""
    found = tracker.runs({"kind": "variant", "preset": preset, "components": row.label})
    chosen: dict[int, object] = {}
    model_hash = None
    for run in found:  # newest first
        tags = run.data.tags
        if (tags.get("overrides") or "") != row.overrides:
            continue
        seed = int(tags.get("seed", 0))
        if anchor is not None and (seed not in anchor or any(tags.get(k) != v for k, v in anchor[seed].items())):
            continue
        model_hash = model_hash or tags.get("model_hash")
        if tags.get("model_hash") != model_hash:
            continue
        chosen.setdefault(seed, run)
    return dict(sorted(chosen.items()))


def _gap(per_expr: PerExpression, a: str, b: str, kind: str | None = None) -> dict | None:
    g = per_expr.gap(a, b, kind)
    return None if g is None else {"estimate": g.estimate, "low": g.low, "high": g.high, "expressions": g.expressions,
                                   "seeds": g.seeds, "images": g.images}


def collect(tracker: Tracker, preset: str, width: int, parameters: dict[str, int]) -> dict:
    """What the report says, as JSON: each row's runs and means over its seeds, and the paired gaps (to rung 1,
    and from each control to rung 2), each on the seeds its two rows share."""
    rows = rows_for(width)
    for r in rows:
        if r.plugin:
            registry.load_plugin(r.plugin)
    first = the(rows, "rung 1")
    rung1 = find_runs(tracker, preset, first, None)
    if not rung1:
        raise LookupError(f"no finished rung-1 run of preset {preset} in {tracker.uri}: run python -m bench.ablate first")
    anchor = {s: {"train_hash": r.data.tags.get("train_hash", ""), "data_fingerprint": r.data.tags.get("data_fingerprint", "")}
              for s, r in rung1.items()}
    runs = {r.key: find_runs(tracker, preset, r, anchor) for r in rows}
    columns = ["kind", "components", "seed", "mlflow_run_id"]
    reader = PerExpression(tracker, pd.DataFrame([], columns=columns))

    def pair(a: str, b: str, kind: str | None = None) -> dict | None:
        shared = sorted(set(runs[a]) & set(runs[b]))
        if not shared:
            return None
        frame = [{"kind": "variant", "components": k, "seed": s, "mlflow_run_id": runs[k][s].info.run_id}
                 for k in (a, b) for s in shared]
        return _gap(reader.with_rows(pd.DataFrame(frame, columns=columns)), a, b, kind)

    out_rows = []
    cfe = the(rows, "rung 2").key
    for r in rows:
        seeds = sorted(runs[r.key])
        got = [row_from_run(runs[r.key][s], "variant", r.key, s, None, True) for s in seeds]
        line = {"key": r.key, "role": r.role, "components": r.components, "overrides": r.overrides, "plugin": r.plugin, "what": r.what,
                "command": train_command(r, width), "parameters": parameters.get(r.key),
                "run_ids": {str(s): runs[r.key][s].info.run_id for s in seeds}, "seeds": seeds}
        for k in ("mIoU", "swap_mIoU", "generic_mIoU", "train_seconds"):
            line[k], line[f"{k}_sd"] = mean_sd([float(g.get(k, math.nan)) for g in got])
        line["relation_select_mIoU"], line["relation_select_mIoU_sd"] = mean_sd(
            [runs[r.key][s].data.metrics.get("test_relation_select_mIoU", math.nan) for s in seeds])
        if got and r is not first:
            line["over_rung1"] = pair(first.key, r.key)
            line["over_rung1_relation"] = pair(first.key, r.key, "relation")
        if got and r.role in ("control", "plug-in") and runs[cfe]:
            line["cfe_over"] = pair(r.key, cfe)
            line["cfe_over_relation"] = pair(r.key, cfe, "relation")
        out_rows.append(line)
    return {"preset": preset, "width": width, "rows": out_rows,
            "anchor": {str(s): a for s, a in anchor.items()}}


def _ci(g: dict | None) -> str:
    return "-" if not g else f"{g['estimate']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}]"


def _verdict(g: dict | None, control: str) -> str:
    if not g:
        return f"- {control}: not run yet."
    if g["low"] > 0:
        return (f"- CFE beats {control} by {_ci(g)} mIoU: the same trainable parameters, placed without attention "
                f"between the streams, do not buy CFE's gain.")
    if g["high"] < 0:
        return f"- {control} beats CFE by {-g['estimate']:.2f} mIoU ({_ci(g)}, rung 2 minus the control)."
    return (f"- CFE and {control} are indistinguishable ({_ci(g)}): trainable parameters alone could explain "
            f"CFE's gain.")


def figure(data: dict, path: Path) -> Path | None:
    """Each row's gain over rung 1 with its 95% CI, overall and on relation expressions."""
    rows = [r for r in data["rows"] if r.get("over_rung1")]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.7 * len(rows) + 1.6), sharey=True)
    for ax, key, title in ((axes[0], "over_rung1", "all test expressions"),
                           (axes[1], "over_rung1_relation", "relation expressions")):
        ys = range(len(rows))
        for y, r in zip(ys, rows):
            g = r.get(key)
            if not g:
                continue
            colour = {"rung 1": "tab:blue", "rung 2": "tab:blue", "plug-in": "tab:orange"}.get(r["role"], "tab:grey")
            ax.errorbar(g["estimate"], y, xerr=[[g["estimate"] - g["low"]], [g["high"] - g["estimate"]]], fmt="o",
                        color=colour, capsize=4)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(list(ys), [r["key"] for r in rows])
        ax.set_title(f"mIoU gain over rung 1 (adapters), {title}", fontsize=10)
        ax.set_xlabel("mIoU points, paired bootstrap 95% CI")
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render_markdown(data: dict, png: Path | None) -> str:
    lines = [
        "# Is CFE's gain cross-modal attention, or more trainable parameters? (capacity controls, "
        f"{data['preset']})", "",
        f"Regenerate: `python -m bench.capacity --report{'' if data['preset'] == 'synthref' else ' --preset ' + data['preset']}` "
        "(reads finished runs from MLflow, trains nothing). Every number here was measured by this project on "
        "SynthRef, our synthetic benchmark, not on RefCOCO; none is the paper's.", "",
        "Each gap is paired over the same test expressions and the seeds both rows ran, bootstrapped over test images "
        "and seeds (95% CI).", "",
        "| row | what it is | stage-1 parameters | seeds | mIoU (± sd over seeds) | gain over rung 1 | relation gain over rung 1 "
        "| swap mIoU (share of mIoU) | relation select mIoU | train s |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        if not r["run_ids"]:
            lines.append(f"| {r['key']} | {r['what']} | {r['parameters']:,} | - | not run: `{r['command']}` | | | | | |")
            continue
        share = 100 * r["swap_mIoU"] / r["mIoU"] if r["mIoU"] else math.nan
        seeds = ",".join(str(x) for x in r["seeds"])
        lines.append(f"| {r['key']} | {r['what']} | {r['parameters']:,} | {seeds} | {r['mIoU']:.2f} ± {r['mIoU_sd']:.2f} | "
                     f"{_ci(r.get('over_rung1'))} | {_ci(r.get('over_rung1_relation'))} | "
                     f"{r['swap_mIoU']:.2f} ({share:.0f}%) | {r['relation_select_mIoU']:.2f} | {r['train_seconds']:.0f} |")
    lines += ["", "## CFE against each control", "",
              "Rung 2 minus the control, on the same expressions and seeds:", "",
              "| control | all expressions | relation expressions |", "|---|---|---|"]
    controls = [r for r in data["rows"] if r["role"] in ("control", "plug-in")]  # every row but rungs 1 and 2
    for r in controls:
        lines.append(f"| {r['key']} | {_ci(r.get('cfe_over'))} | {_ci(r.get('cfe_over_relation'))} |")
    lines += ["", "What it says:", ""]
    for r in data["rows"]:
        if r["role"] == "control":
            lines.append(_verdict(r.get("cfe_over"), r["key"]))
    cfe_row = the(data["rows"], "rung 2")
    done = [r for r in data["rows"] if r["role"] == "control" and r.get("over_rung1") and r.get("cfe_over")]
    if done and cfe_row.get("over_rung1"):
        best = max(done, key=lambda r: r["over_rung1"]["estimate"])
        share = 100 * best["over_rung1"]["estimate"] / cfe_row["over_rung1"]["estimate"]
        lines.append(f"- Of CFE's gain over rung 1 ({cfe_row['over_rung1']['estimate']:+.2f}), the better control "
                     f"({best['key']}) buys {best['over_rung1']['estimate']:+.2f} ({share:.0f}%): trainable parameters "
                     f"explain at most that much; the rest, {_ci(best['cfe_over'])}, takes attention between the "
                     f"streams.")
    film = the(data["rows"], "plug-in")
    if film.get("over_rung1"):
        lines.append(f"- The FiLM plug-in adds {_ci(film['over_rung1'])} mIoU over rung 1 "
                     f"({_ci(film.get('over_rung1_relation'))} on relations); rung 2 minus FiLM: "
                     f"{_ci(film.get('cfe_over'))}.")
    lines += ["", "A swap share near 100% would mean the masks ignore the sentence; every row here is read "
              "with that control beside it.", "",
              "How each row was trained (the ladder's rows come from `python -m bench.ablate`):", ""]
    for r in data["rows"]:
        lines.append(f"- {r['key']}: `{r['command']}`")
    if png is not None:
        lines += ["", f"![gains over rung 1]({png.name})"]
    return "\n".join(lines) + "\n"


def write(data: dict, out_dir: Path, stem: str = "capacity") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    png = figure(data, out_dir / f"{stem}.png")
    path = out_dir / f"{stem}.md"
    path.write_text(render_markdown(data, png))
    return path


def parameter_counts(model_cfg, width: int, count) -> dict[str, int]:
    """Each row's stage-1 parameter count, from ``count(ModelConfig)`` (a model built with random weights)."""
    out = {}
    for r in rows_for(width):
        if r.plugin:
            registry.load_plugin(r.plugin)
        cfg = model_cfg.with_components(Components.from_names(r.components))
        if r.overrides:
            cfg = dataclasses.replace(cfg, adapter_dim=width)
        out[r.key] = count(cfg)
    return out
