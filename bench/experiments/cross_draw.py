"""``python -m bench.cross_draw``: two SynthRef draws' rung-N models, each scored on both draws' test splits.

Two draws of SynthRef (``bench.ablate --data-seed N``) differ in their test split *and* in the train split
their models learnt from. The ladder report's draw target sets the gap between the draws' rung-1 means
against the committed draw's bootstrap CI, which resamples test images and seeds: the first source only.
This command separates the two. Every rung-N run of both draws is scored on both test splits, a 2 x 2
table (models' draw x test split):

* along a row, the same models on the two test splits: how far the test split alone moves the mean;
* down a column, one test split scored by models trained on the two draws: how far the training draw
  moves it, paired per expression (the CI resamples that split's images and both draws' seeds).

A run scored on its own draw's test split is taken from its logged per-expression IoUs (what the ladder
report reads); one run per draw is also re-scored from its checkpoint as a check that the two agree. Runs
are scored at the sigmoid cut they were chosen at on their own val split.

  python -m bench.cross_draw                      # rung 1 of draws 0 and 1 of the default preset
  python -m bench.cross_draw --draws 0,1 --rung 1 --preset synth-refcoco-grounded-all-train
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException

from bench.reporting.bootstrap import Gap, mean_ci, paired_gap, table
from bench.reporting.ladder_runs import latest_plain_ladder, on_draw
from bench.spine import presets as P
from bench.spine.tracking import DEFAULT_TRACKING_URI, Tracker
from risclip.config import LADDER

COMMAND = "python -m bench.cross_draw"


def draw_invocation(tracker: Tracker, draw: str, components: str):
    """The draw's latest plain ladder (the one its ladder report reads), else its latest finished
    ``bench.ablate`` invocation that trained ``components`` (a rung-1 run on a fresh draw, say)."""
    plain = latest_plain_ladder(tracker, draw)
    if plain is not None:
        return plain
    for run in tracker.runs({"kind": "invocation"}, limit=500):
        tags = run.data.tags
        if on_draw(tags, draw) and components in tags.get("variants", "").split(";"):
            return run
    raise LookupError(f"no finished bench.ablate invocation on draw {draw} with {components} in experiment "
                      f"{tracker.experiment_id}; run python -m bench.ablate --data-seed {draw} first")


@dataclasses.dataclass
class DrawRuns:
    draw: str
    parent_id: str
    command: str
    runs: list[dict]  # {"seed", "run_id", "checkpoint", "threshold", "mIoU"}


def draw_runs(tracker: Tracker, draw: str, components: str) -> DrawRuns:
    parent = draw_invocation(tracker, draw, components)
    # the invocation's own rows (load_rows would also fetch every other row's run for metrics not used here)
    rows = [r for r in tracker.load_json(parent.info.run_id, "results.json")
            if r.get("kind") == "variant" and r.get("components") == components]
    runs = []
    for r in sorted({r["mlflow_run_id"]: r for r in rows}.values(), key=lambda r: r["seed"]):
        run = tracker.get_run(r["mlflow_run_id"])
        runs.append({"seed": int(r["seed"]), "run_id": r["mlflow_run_id"],
                     "checkpoint": run.data.tags.get("checkpoint", ""),
                     "threshold": run.data.metrics.get("threshold"), "mIoU": run.data.metrics.get("test_mIoU")})
    return DrawRuns(draw, parent.info.run_id, parent.data.tags.get("command", "?"), runs)


def logged_ious(tracker: Tracker, run_id: str) -> list[dict]:
    return tracker.load_json(run_id, "metrics.json").get("per_sample", [])


class Scorer:
    """Scores checkpoints on draws' test splits. Each checkpoint is loaded once and each test split built
    once (per image size and context length), however many cells and checks ask for them."""

    def __init__(self, presets: dict[str, P.Preset], device: str = "cpu"):
        from risclip.engine import resolve_device

        self.presets = presets
        self.device = resolve_device(device)
        self._models: dict[str, object] = {}
        self._tests: dict[tuple, object] = {}

    def model(self, checkpoint: str):
        from risclip.engine import load_checkpoint

        if checkpoint not in self._models:
            if not checkpoint or not Path(checkpoint).is_file():
                raise FileNotFoundError(f"{checkpoint or '(none)'}: checkpoint not on this machine")
            self._models[checkpoint] = load_checkpoint(checkpoint, self.device)
        return self._models[checkpoint]

    def test_set(self, draw: str, model_cfg):
        from risclip.engine import build_dataset

        key = (draw, model_cfg.image_size, model_cfg.context_length)
        if key not in self._tests:
            data = self.presets[draw].data
            self._tests[key] = build_dataset(data, model_cfg, data.test_split, train=False)
        return self._tests[key]

    def score(self, checkpoint: str, threshold: float | None, draw: str) -> list[dict]:
        """A checkpoint's per-expression IoUs on ``draw``'s test split, at the cut it was chosen at."""
        from risclip.engine import evaluate
        from risclip.metrics import get_protocol

        model = self.model(checkpoint)
        protocol = get_protocol("ours")
        if threshold is not None:
            protocol = dataclasses.replace(protocol, threshold=float(threshold))
        preset = self.presets[draw]
        cfg = dataclasses.replace(preset.train, progress=True)
        return evaluate(model, self.test_set(draw, model.cfg), cfg, self.device,
                        desc=f"test of {preset.data.data_root}", protocols=(protocol,)).per_sample


def as_table(per_run: dict[int, list[dict]]) -> tuple:
    """(seeds x expressions) IoU table in percent, and each expression's image (the bootstrap's groups)."""
    ious = {seed: {int(x["sent_id"]): 100.0 * float(x["iou"]) for x in rows} for seed, rows in per_run.items()}
    images = {int(x["sent_id"]): int(x["image_id"]) for rows in per_run.values() for x in rows}
    t = table(ious)
    exprs = sorted(set.intersection(*(set(r) for r in ious.values())))
    return t, [images[e] for e in exprs]


def cross_draw(tracker: Tracker, preset: P.Preset, draws: list[str], components: str, device: str = "cpu"):
    """``{(models' draw, test draw): {seed: per-expression rows}}``, the draws' runs and the fidelity checks."""
    found = {d: draw_runs(tracker, d, components) for d in draws}
    scorer = Scorer({d: P.with_data_seed(preset, int(d)) for d in draws}, device)
    cells: dict[tuple[str, str], dict[int, list[dict]]] = {}
    checks = []
    for d, dr in found.items():
        for t in draws:
            cells[(d, t)] = {}
            for r in dr.runs:
                if d == t:
                    cells[(d, t)][r["seed"]] = logged_ious(tracker, r["run_id"])
                else:
                    cells[(d, t)][r["seed"]] = scorer.score(r["checkpoint"], r["threshold"], t)
        first = dr.runs[0]
        again = scorer.score(first["checkpoint"], first["threshold"], d)
        re_miou = 100.0 * sum(float(x["iou"]) for x in again) / len(again)
        checks.append((d, first["seed"], first["mIoU"], re_miou))
    return found, cells, checks


def render(found: dict[str, DrawRuns], cells: dict, checks: list, preset: str, rung: int, components: str,
           out_dir: Path, stem: str, command: str) -> Path:
    draws = list(found)
    cis: dict[tuple[str, str], Gap] = {}
    rows = []
    for (d, t), per_run in cells.items():
        tab, groups = as_table(per_run)
        cis[(d, t)] = g = mean_ci(tab, groups=groups)
        rows.append({"models_draw": d, "test_draw": t, "seeds": tab.shape[0], "expressions": tab.shape[1],
                     "images": g.images, "mIoU": g.estimate, "ci_low": g.low, "ci_high": g.high})
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out_dir / f"{stem}.csv", index=False)
    a, b = draws[0], draws[1]
    lines = [f"# Rung {rung} ({components}) of two SynthRef draws, each scored on both draws' test splits", "",
             f"- Preset `{preset}`; SynthRef numbers are ours, not the paper's. This report: `{command}`.",
             "- Models: " + "; ".join(f"draw {d}: seeds {', '.join(str(r['seed']) for r in dr.runs)} of "
                                     f"`{dr.command}` (parent `{dr.parent_id}`)" for d, dr in found.items()) + ".",
             "- Each cell: mean test mIoU over seeds with its 95% bootstrap CI (test images, with all their "
             "expressions, and seeds resampled). A run on its own draw's test split is read from its logged "
             "per-expression IoUs; on the other draw's it is scored from its checkpoint at the cut it chose on "
             "its own val split.", "",
             "| models trained on | " + " | ".join(f"test split of draw {t}" for t in draws) + " |",
             "|---|" + "---|" * len(draws)]
    for d in draws:
        lines.append(f"| draw {d} | " + " | ".join(
            f"{cis[(d, t)].estimate:.2f} [{cis[(d, t)].low:.2f}, {cis[(d, t)].high:.2f}]" for t in draws) + " |")
    own = cis[(b, b)].estimate - cis[(a, a)].estimate
    lines += ["", "## Where the draws' difference comes from", "",
              f"- The ladder reports' comparison (each draw's models on its own test split): draw {b} minus draw {a}: "
              f"{own:+.2f}."]
    for d in draws:  # same models, the other test split: the test split's share
        lines.append(f"- Test split alone (draw {d}'s models, test split of draw {b} minus draw {a}): "
                     f"{cis[(d, b)].estimate - cis[(d, a)].estimate:+.2f}; the CI half-width of one split is "
                     f"±{(cis[(d, a)].high - cis[(d, a)].low) / 2:.2f}.")
    for t in draws:  # one test split, models of the two draws: the training draw's share, paired per expression
        ta, ga = as_table(cells[(a, t)])
        tb, _ = as_table(cells[(b, t)])
        gap = paired_gap(ta, tb, groups=ga)
        lines.append(f"- Training draw alone (on the test split of draw {t}, draw {b}'s models minus draw {a}'s, "
                     f"paired per expression): {gap.text()}.")
    lines += ["", "## Check: logged scores against a re-scoring from the checkpoint", ""]
    for d, seed, logged, again in checks:
        lines.append(f"- Draw {d}, seed {seed}: logged test mIoU {logged:.4f}, re-scored {again:.4f} "
                     f"({'agree' if abs(logged - again) < 1e-3 else 'DIFFER'}).")
    path = out_dir / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=P.DEFAULT_PRESET, help="the preset both draws ran (default %(default)s)")
    p.add_argument("--draws", default="0,1", help="two SynthRef data seeds (default %(default)s)")
    p.add_argument("--rung", type=int, default=1, help="the rung to score (default %(default)s)")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow store (default %(default)s)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default=None, help="where to write (default reports/<preset>)")
    p.add_argument("--name", default=None, help="file stem (default cross-draw)")
    a = p.parse_args(argv)
    draws = [d.strip() for d in a.draws.split(",") if d.strip()]
    if len(draws) != 2 or len(set(draws)) != 2:
        p.error(f"--draws: need two different data seeds, got '{a.draws}'")
    if not 0 < a.rung < len(LADDER):
        p.error(f"--rung: a trained rung, 1 to {len(LADDER) - 1}")
    components = str(LADDER[a.rung])
    try:
        preset = P.build(a.preset)
        tracker = Tracker(a.tracking_uri, f"risclip-{a.preset}")
        found, cells, checks = cross_draw(tracker, preset, draws, components, a.device)
    except (LookupError, OSError, ValueError, MlflowException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    command = COMMAND + ("" if a.preset == P.DEFAULT_PRESET else f" --preset {a.preset}") + \
        ("" if draws == ["0", "1"] else f" --draws {a.draws}") + ("" if a.rung == 1 else f" --rung {a.rung}")
    path = render(found, cells, checks, a.preset, a.rung, components, Path(a.out_dir or P.report_dir(a.preset)),
                  a.name or "cross-draw", command)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
