"""Render ``reports/benchmark.md`` (and figures) from a pytest-benchmark JSON of ``bench/benchmarks``.

Every figure is also given as a ratio to the frozen CLIP forward (both towers) measured in the same
run, at the same shape; ratios are what compare across machines. With ``--previous`` the ratios are
compared with an earlier run and any that grew by more than ``--threshold`` (10%) is flagged.

  nox -s benchmark                                        # runs the suite, then this
  python -m bench.benchmark_report .benchmarks/latest.json --previous .benchmarks/previous.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .costs import CLIP, RUNG_VARIANTS  # noqa: E402

FULL = RUNG_VARIANTS[-1]


def load(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """One row per benchmark: kind, shape, variant, batch, seconds (median), per-image figures."""
    data = json.loads(Path(path).read_text())
    rows = []
    for b in data.get("benchmarks", []):
        e = b.get("extra_info", {})
        if "kind" not in e:
            continue
        s = b["stats"]
        row = {"kind": e["kind"], "shape": e.get("shape"), "variant": e.get("variant"), "batch": e.get("batch"),
               "median_s": s["median"], "iqr_s": s.get("iqr", math.nan), "rounds": s.get("rounds"),
               "peak_memory_mb": e.get("peak_memory_mb", math.nan), "flops_per_image": e.get("flops_per_image", math.nan),
               "params_total": e.get("params_total", math.nan), "params_trainable": e.get("params_trainable", math.nan),
               "device": e.get("device"), "autocast": e.get("autocast"),
               "overhead_fraction": e.get("overhead_fraction", math.nan), "epoch_seconds": e.get("epoch_seconds", math.nan),
               "batch_kind": (b.get("params") or {}).get("batch_kind")}
        if row["batch"]:
            row["ms_per_image"] = 1000 * s["median"] / row["batch"]
        rows.append(row)
    return pd.DataFrame(rows), data


def with_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``*_ratio`` columns: each figure over the frozen CLIP's inference at the same shape and batch
    (training steps: over the CLIP forward of the larger batch, per image)."""
    df = df.copy()
    inf = df[(df["kind"] == "inference") & (df["variant"] == CLIP)]
    ref = {(r["shape"], r["batch_kind"]): r for _, r in inf.iterrows()}
    for col in ("ms_per_image", "peak_memory_mb", "flops_per_image"):
        df[f"{col}_ratio"] = math.nan
    for i, r in df.iterrows():
        if r["kind"] == "overhead":
            continue
        base = ref.get((r["shape"], r["batch_kind"] if r["kind"] == "inference" else "batchN"))
        if base is None:
            continue
        for col in ("ms_per_image", "peak_memory_mb", "flops_per_image"):
            if base[col] and not math.isnan(base[col]) and base[col] != 0:
                df.loc[i, f"{col}_ratio"] = r[col] / base[col]
    return df


def regressions(cur: pd.DataFrame, prev: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Latency and memory ratios that grew by more than ``threshold`` since ``prev``."""
    key = ["kind", "shape", "variant", "batch_kind"]
    m = cur.merge(prev, on=key, suffixes=("", "_prev"))
    out = []
    for _, r in m.iterrows():
        for col in ("ms_per_image_ratio", "peak_memory_mb_ratio"):
            a, b = r.get(col), r.get(f"{col}_prev")
            if a is None or b is None or any(isinstance(x, float) and math.isnan(x) for x in (a, b)) or b <= 0:
                continue
            change = a / b - 1
            out.append({**{k: r[k] for k in key}, "figure": col, "previous": b, "now": a, "change": change,
                        "regression": change > threshold})
    return pd.DataFrame(out)


def figures(df: pd.DataFrame, out_dir: Path, stem: str, ladder_csv: Path | None) -> list[str]:
    sns.set_theme(style="whitegrid", context="paper")
    names = []
    inf = df[(df["kind"] == "inference") & (df["batch_kind"] == "batch1")]
    if not inf.empty:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        order = [v for v in [CLIP, *RUNG_VARIANTS] if v in set(inf["variant"])]
        sns.barplot(data=inf, x="variant", y="ms_per_image_ratio", hue="shape", order=order, ax=axes[0])
        axes[0].set_ylabel("latency / frozen CLIP (batch 1)")
        sns.barplot(data=df[(df["kind"] == "inference") & (df["batch_kind"] == "batchN")], x="variant",
                    y="peak_memory_mb_ratio", hue="shape", order=order, ax=axes[1])
        axes[1].set_ylabel("peak memory / frozen CLIP (larger batch)")
        for ax in axes:
            ax.set_xticks(range(len(order)))
            ax.set_xticklabels([o.replace("value+", "").replace("+", "+\n") for o in order], fontsize=7)
            ax.set_xlabel("")
            ax.axhline(1.0, color="k", lw=0.8, ls=":")
        fig.tight_layout()
        fig.savefig(out_dir / f"{stem}-cost.png", dpi=110)
        plt.close(fig)
        names.append(f"{stem}-cost.png")
    if ladder_csv is not None and ladder_csv.is_file() and not inf.empty:
        lad = pd.read_csv(ladder_csv)
        lad = lad[lad["kind"] == "variant"].groupby("components", as_index=False)["mIoU"].agg(["mean", "std"])
        lat = inf[inf["shape"] == "synth-cpu"][["variant", "ms_per_image"]].rename(columns={"variant": "components"})
        j = lad.merge(lat, on="components")
        if not j.empty:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.errorbar(j["ms_per_image"], j["mean"], yerr=j["std"].fillna(0), fmt="o", capsize=3)
            for _, r in j.iterrows():
                ax.annotate(r["components"].replace("value+", "") or "value", (r["ms_per_image"], r["mean"]),
                            fontsize=7, xytext=(4, 4), textcoords="offset points")
            ax.set_xlabel("inference ms per image (synth-cpu, batch 1)")
            ax.set_ylabel("SynthRef test mIoU (mean ± sd)")
            fig.tight_layout()
            fig.savefig(out_dir / f"{stem}-miou-vs-latency.png", dpi=110)
            plt.close(fig)
            names.append(f"{stem}-miou-vs-latency.png")
    return names


def _f(x, nd=2, suffix="") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}{suffix}"


def render(json_path: Path, out_dir: Path, stem: str, previous: Path | None, threshold: float,
           ladder_csv: Path | None, command: str) -> tuple[Path, pd.DataFrame]:
    df, raw = load(json_path)
    if df.empty:
        raise ValueError(f"{json_path}: no risclip benchmarks in it (run nox -s benchmark)")
    df = with_ratios(df)
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = figures(df, out_dir, stem, ladder_csv)
    mi = raw.get("machine_info", {})
    device = sorted(set(df["device"].dropna()))
    lines = [f"# Cost of each RISCLIP variant ({', '.join(device)})", "",
             f"- Made by: `{command}`",
             f"- Machine: {mi.get('cpu', {}).get('brand_raw', mi.get('processor', '?'))}, "
             f"{mi.get('cpu', {}).get('count', '?')} logical CPUs, Python {mi.get('python_version', '?')}; "
             f"pytest-benchmark run of {raw.get('datetime', '?')}, commit {raw.get('commit_info', {}).get('id', '?')}",
             "- Weights are random (cost does not depend on them). Every ratio divides by the frozen CLIP forward "
             "(image and text towers) measured in the same run at the same shape and batch; training steps divide "
             "their per-image time by the CLIP forward's per-image time at the larger batch.",
             "- Peak memory: on the CPU, growth of the resident set during the first forward pass (or training "
             "step) in a fresh process; on CUDA, `max_memory_allocated` over what was allocated before.", ""]
    full = df[(df["kind"] == "inference") & (df["shape"] == "paper-b") & (df["batch_kind"] == "batch1")
              & (df["variant"] == FULL)]
    if not full.empty:
        ratio = float(full["ms_per_image_ratio"].iloc[0])
        fl = float(full["flops_per_image_ratio"].iloc[0])
        iqr = float(full["iqr_s"].iloc[0]) / float(full["median_s"].iloc[0]) if float(full["median_s"].iloc[0]) else math.nan
        lines += [f"ratio full/CLIP at paper shape (ViT-B/16): {ratio:.2f}x", "",
                  f"Target: at most 1.3x, {'met' if ratio <= 1.3 else 'NOT met'} (batch 1, inference latency, median of "
                  f"{int(full['rounds'].iloc[0])} rounds, IQR {100 * iqr:.0f}% of the median). The FLOPs ratio, which does "
                  f"not depend on machine noise, is {fl:.2f}x.", ""]
    ov = df[df["kind"] == "overhead"]
    if not ov.empty:
        r = ov.iloc[0]
        lines += [f"MLflow and progress-bar overhead per synth-cpu training epoch: {100 * r['overhead_fraction']:.3f}% "
                  f"({1000 * r['median_s']:.1f} ms of an estimated {r['epoch_seconds']:.1f} s epoch); target at most 2%, "
                  f"{'met' if r['overhead_fraction'] <= 0.02 else 'NOT met'}.", ""]
    for f in figs:
        lines += [f"![{f}]({f})", ""]
    for shape in [s for s in ("synth-cpu", "paper-b") if s in set(df["shape"])]:
        sub = df[df["shape"] == shape]
        lines += [f"## {shape}", "", "| variant | params (trainable) | GFLOPs/img | x CLIP | ms/img b1 | x CLIP | "
                  "ms/img bN | x CLIP | peak MB bN | x CLIP | train ms/img | x CLIP | train peak MB |",
                  "|" + "---|" * 13]
        order = list(dict.fromkeys([CLIP, *RUNG_VARIANTS, *sub["variant"]]))
        prev_ms = prev_fl = None
        items = []
        for v in order:
            b1 = sub[(sub["variant"] == v) & (sub["kind"] == "inference") & (sub["batch_kind"] == "batch1")]
            bn = sub[(sub["variant"] == v) & (sub["kind"] == "inference") & (sub["batch_kind"] == "batchN")]
            tr = sub[(sub["variant"] == v) & (sub["kind"] == "train")]
            if b1.empty:
                continue
            b1, bn = b1.iloc[0], (bn.iloc[0] if not bn.empty else None)
            t = tr.iloc[0] if not tr.empty else None
            lines.append(
                f"| {v} | {b1['params_total'] / 1e6:.2f} M ({b1['params_trainable'] / 1e6:.2f} M) | "
                f"{b1['flops_per_image'] / 1e9:.2f} | {_f(b1['flops_per_image_ratio'])} | {_f(b1['ms_per_image'], 1)} | "
                f"{_f(b1['ms_per_image_ratio'])} | {_f(bn['ms_per_image'] if bn is not None else None, 1)} | "
                f"{_f(bn['ms_per_image_ratio'] if bn is not None else None)} | "
                f"{_f(bn['peak_memory_mb'] if bn is not None else None, 0)} | "
                f"{_f(bn['peak_memory_mb_ratio'] if bn is not None else None)} | "
                f"{_f(t['ms_per_image'] if t is not None else None, 1)} | "
                f"{_f(t['ms_per_image_ratio'] if t is not None else None)} | "
                f"{_f(t['peak_memory_mb'] if t is not None else None, 0)} |")
            if v in RUNG_VARIANTS:
                if prev_ms is not None:
                    items.append(f"- {v.split('+')[-1]}: {b1['ms_per_image'] - prev_ms:+.1f} ms/img at batch 1, "
                                 f"{(b1['flops_per_image'] - prev_fl) / 1e9:+.3f} GFLOPs/img")
                prev_ms, prev_fl = b1["ms_per_image"], b1["flops_per_image"]
        lines += ["", "What each rung adds over the one before it:", "", *items, ""]
    if previous is not None and previous.is_file() and previous.stat().st_size > 0:
        prev_df = with_ratios(load(previous)[0])
        reg = regressions(df, prev_df, threshold)
        flagged = reg[reg["regression"]] if not reg.empty else reg
        lines += ["## Compared with the previous run", "", f"Previous: `{previous}`; {len(reg)} ratios compared, "
                  f"{len(flagged)} grew by more than {100 * threshold:.0f}%.", ""]
        if not flagged.empty:
            lines += ["| kind | shape | variant | batch | figure | previous | now | change |", "|" + "---|" * 8]
            for _, r in flagged.iterrows():
                lines.append(f"| {r['kind']} | {r['shape']} | {r['variant']} | {r['batch_kind']} | {r['figure']} | "
                             f"{r['previous']:.3f} | {r['now']:.3f} | **{100 * r['change']:+.1f}%** |")
            lines.append("")
    else:
        reg = pd.DataFrame()
        lines += ["## Compared with the previous run", "", "No previous run to compare with.", ""]
    path = out_dir / f"{stem}.md"
    path.write_text("\n".join(lines))
    return path, reg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.benchmark_report", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", help="pytest-benchmark JSON (--benchmark-json) of bench/benchmarks")
    p.add_argument("--previous", default=None, help="an earlier JSON to compare with")
    p.add_argument("--threshold", type=float, default=0.10, help="flag ratios that grew by more (default 0.10)")
    p.add_argument("--out-dir", default="reports")
    p.add_argument("--name", default="benchmark", help="file stem (default %(default)s)")
    p.add_argument("--ladder-csv", default="reports/synthref-ladder.csv",
                   help="ladder rows for the mIoU-vs-latency figure (default %(default)s)")
    p.add_argument("--command", default="nox -s benchmark", help="the command to name in the report")
    a = p.parse_args(argv)
    try:
        path, reg = render(Path(a.json), Path(a.out_dir), a.name, Path(a.previous) if a.previous else None,
                           a.threshold, Path(a.ladder_csv) if a.ladder_csv else None, a.command)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    flagged = reg[reg["regression"]] if not reg.empty else reg
    for _, r in flagged.iterrows():
        print(f"regression: {r['kind']} {r['shape']} {r['variant']} {r['batch_kind']} {r['figure']} "
              f"{100 * r['change']:+.1f}%", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
