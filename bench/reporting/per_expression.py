"""Every test expression's IoU of the runs a report sets side by side, and the paired bootstrap gaps between
them (:mod:`bench.reporting.bootstrap`): what the ladder, the capacity and the other reports share."""

from __future__ import annotations

import pandas as pd

from bench.reporting.bootstrap import Gap, mean_ci, paired_gap, table
from bench.spine.tracking import Tracker


class PerExpression:
    """Every test expression's IoU (percent) of the runs in a report, read once from their ``metrics.json``."""

    def __init__(self, tracker: Tracker, df: pd.DataFrame) -> None:
        self.tracker, self.df, self._cache = tracker, df, {}
        self._images: dict[int, int] = {}  # sent_id -> image_id, where the runs recorded it

    def with_rows(self, df: pd.DataFrame) -> PerExpression:
        """The same reader over other rows (e.g. only the seeds two variants share), keeping what it has read, so
        each run's ``metrics.json`` is read once however many pairs it enters."""
        view = PerExpression(self.tracker, df)
        view._cache, view._images = self._cache, self._images
        return view

    def _run(self, run_id: str) -> list[dict]:
        if run_id not in self._cache:
            try:
                self._cache[run_id] = self.tracker.load_json(run_id, "metrics.json").get("per_sample", [])
            except (OSError, LookupError, ValueError, AttributeError):
                self._cache[run_id] = []
        return self._cache[run_id]

    def of(self, components: str, kind: str | None = None, row_kind: str = "variant") -> dict[int, dict[int, float]]:
        """``{seed: {sent_id: IoU}}`` of a variant (a rung that trains nothing: its one run, under its lowest seed)."""
        sub = self.df[(self.df["kind"] == row_kind) & (self.df["components"] == components)]
        out: dict[int, dict[int, float]] = {}
        for _, r in sub.drop_duplicates("mlflow_run_id").sort_values("seed").iterrows():
            rows = self._run(r["mlflow_run_id"])
            if rows:
                out[int(r["seed"])] = {int(x["sent_id"]): 100.0 * float(x["iou"]) for x in rows
                                       if kind is None or x.get("kind") == kind}
                for x in rows:
                    if "image_id" in x:
                        self._images.setdefault(int(x["sent_id"]), int(x["image_id"]))
        return out

    def groups(self, exprs: list[int]) -> list[int] | None:
        """Each expression's image, for the cluster bootstrap (bench.reporting.bootstrap), when the runs
        recorded every one of them; None (resample expressions) otherwise."""
        if all(e in self._images for e in exprs):
            return [self._images[e] for e in exprs]
        return None

    def gap(self, a: str, b: str, kind: str | None = None, b_kind: str = "variant") -> Gap | None:
        """Paired bootstrap CI of ``b``'s mean IoU minus ``a``'s (:func:`bench.bootstrap.paired_gap`), or None
        when either lacks per-expression IoUs."""
        pa, pb = self.of(a, kind), self.of(b, kind, b_kind)
        if not pa or not pb:
            return None
        seeds = sorted(pb) if len(pb) >= len(pa) else sorted(pa)
        if (len(pa) > 1 and set(pa) != set(seeds)) or (len(pb) > 1 and set(pb) != set(seeds)):
            return None
        exprs = sorted(set.intersection(*(set(r) for r in [*pa.values(), *pb.values()])))
        if not exprs:
            return None
        return paired_gap(table(pa, exprs, seeds), table(pb, exprs, seeds), groups=self.groups(exprs))

    def mean(self, components: str) -> Gap | None:
        """A variant's mean IoU over its seeds and the test expressions every seed scored, with the 95%
        bootstrap CI of that mean (:func:`bench.bootstrap.mean_ci`); None without per-expression IoUs."""
        runs = self.of(components)
        if not runs:
            return None
        exprs = sorted(set.intersection(*(set(r) for r in runs.values())))
        return mean_ci(table(runs, exprs), groups=self.groups(exprs))
