"""One variant, in small pieces that ``bench.ablate`` and the Optuna studies share (one spine:
everything trains through ``risclip.engine.run_variant``):

* :func:`run_identity` - what a run trained, and its hash (the one identity reuse keys on);
* :func:`find_reusable` - a finished tracked run with that hash, if any;
* :func:`score_variant` - train and score, with select mIoU and every expression's IoU;
* :func:`final_metrics` - a pure function from results to the metric names that get logged;
* :func:`log_variant` - the run's tags, params, metrics and artifacts;
* :class:`TrackingHook`, :class:`GridHook` - per-epoch logging and the prediction grid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from bench.spine import presets as P
from bench.spine.proposals import ProposalSelection, form_key
from bench.spine.tracking import metric_key
from risclip import registry
from risclip.config import PAPER_MIOU, Components, ModelConfig, TrainConfig
from risclip.engine import Hook, RunResult, build_dataset, run_variant
from risclip.identity import data_identity, identity_hash, train_identity

VARIANT_KIND = "variant"


def run_identity(preset: P.Preset, components: Components, seed: int, fingerprint: str,
                 protocols: tuple[str, ...] = ("ours",)) -> tuple[dict, str]:
    """What a run trained: everything that changes its numbers, and nothing that does not (paths,
    progress bars, worker counts). Its hash decides reuse. A variant that trains nothing (rung 0) does
    not depend on the seed, so every seed shares one run."""
    model = preset.model.with_components(components).to_dict()
    if model.get("pretrained") and Path(str(model["pretrained"])).is_file():
        model["pretrained"] = Path(str(model["pretrained"])).name  # the proxy's name carries its hashes
    train = train_identity(dataclasses.replace(preset.train, seed=seed if components.trains_anything else 0).to_dict())
    ident = {"model": model, "train": train, "data": data_identity(preset.data.to_dict()), "data_fingerprint": fingerprint}
    if tuple(protocols) != ("ours",):  # other protocols log more metrics; the default keeps older hashes
        ident["protocols"] = list(protocols)
    return ident, identity_hash(ident)


def baselines_identity(data, fingerprint: str) -> str:
    """The text-blind baselines' run: which baselines, on which data (not where it lives)."""
    from bench.spine.baselines import BASELINES

    return identity_hash({"baselines": list(BASELINES), "data": data_identity(data.to_dict()),
                          "data_fingerprint": fingerprint, "seed": 0})


def find_reusable(tracker, run_hash: str) -> str | None:
    """The id of the newest FINISHED run with this identity hash, or None."""
    found = tracker.find_finished(run_hash)
    return found.info.run_id if found is not None else None


def variant_tags(run_hash: str, components: Components, seed: int, preset: P.Preset, model_cfg: ModelConfig,
                 train_cfg: TrainConfig, fingerprint: str, git_rev: str, rung: int | None, **extra: str) -> dict:
    return {"run_hash": run_hash, "config_hash": run_hash, "model_hash": model_cfg.config_hash(),
            "train_hash": train_cfg.config_hash(), "data_fingerprint": fingerprint, "git_revision": git_rev,
            "components": str(components), "seed": str(seed), "rung": "" if rung is None else str(rung),
            "preset": preset.name, "kind": VARIANT_KIND, "paper_mIoU": str(PAPER_MIOU.get(str(components))),
            **({"plugins": ",".join(sorted({registry.get(n).origin for n in components.extra}))} if components.extra
               else {}), **extra}


@dataclass
class Scores:
    """What :func:`score_variant` measured."""

    result: RunResult
    select: dict = field(default_factory=dict)  # {"overall": metrics, "by_kind": {kind: metrics}}

    @property
    def per_sample(self) -> list[dict]:
        """{"sent_id", "kind", "iou"} per test expression."""
        return self.result.per_sample


def score_variant(preset: P.Preset, model_cfg: ModelConfig, train_cfg: TrainConfig, workdir: Path,
                  stage1_cache: Path | None = None, hooks: tuple[Hook, ...] = (),
                  protocols: tuple[str, ...] = ("ours",), evaluate_val: bool = True,
                  text_controls: bool = True) -> Scores:
    """Train and score one variant through ``run_variant``, with select mIoU on test and the text controls
    (swap and generic sentences, ``RunResult.controls``); the per-expression IoUs come from the evaluation
    itself (``RunResult.per_sample``)."""
    selection = ProposalSelection(build_dataset(preset.data, model_cfg, preset.data.test_split, train=False))
    result = run_variant(model_cfg, train_cfg, preset.data, workdir=workdir, hooks=hooks, stage1_cache=stage1_cache,
                         evaluators=(selection,), protocols=protocols, evaluate_val=evaluate_val,
                         text_controls=text_controls)
    return Scores(result, selection.compute())


def control_metrics(controls: dict[str, dict]) -> dict[str, float]:
    """The text controls' metrics (:func:`risclip.engine.evaluate_text_controls`): ``test_<control>_mIoU``,
    ``test_<control>_oIoU``, ``test_<kind>_<control>_mIoU`` and ``test_<control>_fraction`` (share of test
    sentences scored), for control ``swap`` and ``generic``."""
    out: dict[str, float] = {}
    for name, c in controls.items():
        m = c.get("metrics", {})
        out.update({f"test_{name}_mIoU": m.get("mIoU", float("nan")), f"test_{name}_oIoU": m.get("oIoU", float("nan")),
                    f"test_{name}_fraction": c.get("fraction", 0.0)})
        out.update({f"test_{kind}_{name}_mIoU": km["mIoU"] for kind, km in c.get("by_kind", {}).items()})
    return out


def final_metrics(result: RunResult, select: dict, cost: dict[str, float]) -> dict[str, float]:
    """The metrics a variant run logs, named once here: ``test_*`` (protocol ours), ``test_<protocol>_*``,
    ``val_*``, ``test_<kind>_mIoU`` / ``_oIoU``, select mIoU overall, per kind and per attribute form
    (``test_attribute_<form>_select_mIoU``, :func:`bench.spine.proposals.attribute_form`), the text controls
    (:func:`control_metrics`), ``threshold`` (the sigmoid cut test was scored at) and, when it was chosen on
    val (``TrainConfig.threshold_from_val``), ``val_cut_<cut>_mIoU`` for every cut tried, times and cost."""
    final = {f"test_{metric_key(k)}": v for k, v in result.metrics.items()}
    for proto, ms in result.protocol_metrics.items():
        final.update({f"test_{proto}_{metric_key(k)}": v for k, v in ms.items()})
    final.update({f"val_{metric_key(k)}": v for k, v in result.val_metrics.items()})
    for kind, ms in result.by_kind.items():
        final.update({f"test_{kind}_{metric_key(k)}": v for k, v in ms.items() if k in ("mIoU", "oIoU")})
    if select:
        final["test_select_mIoU"] = select["overall"]["mIoU"]
        final.update({f"test_{kind}_select_mIoU": ms["mIoU"] for kind, ms in select["by_kind"].items()})
        final.update({f"test_attribute_{form_key(f)}_select_mIoU": ms["mIoU"]
                      for f, ms in select.get("by_form", {}).items()})
    final.update(control_metrics(result.controls))
    if result.threshold is not None:  # the sigmoid cut test was scored at (the protocol's, or chosen on val)
        final["threshold"] = result.threshold
    final.update({f"val_cut_{c:.2f}_mIoU": v for c, v in result.val_cuts.items()})
    final.update(train_seconds=result.train_seconds, eval_seconds=result.eval_seconds, compile_seconds=result.compile_seconds,
                 eval_samples=result.eval_samples, **cost)
    return final


def log_variant(tracker, run_id: str, scores: Scores, cost: dict[str, float], grid_path: Path | None = None) -> None:
    """Log a finished variant: stage-1 epochs reused from the cache, final metrics, checkpoint path,
    ``metrics.json`` (with the per-expression IoUs), the prediction grid and the checkpoint (``model.pt``)."""
    result = scores.result
    tracker.set_tags(run_id, {"stage1_reused": str(result.stage1_reused),
                              "checkpoint": str(Path(result.checkpoint).resolve()) if result.checkpoint else ""})
    for row in result.history:  # stage-1 epochs taken from the cache: log them here too, for a full history
        if row.get("reused"):
            TrackingHook(tracker, run_id).log(int(row["stage"]), int(row["epoch"]), row)
    tracker.log_metrics(run_id, final_metrics(result, scores.select, cost))
    tracker.log_json(run_id, {"test": result.metrics, "val": result.val_metrics, "by_kind": result.by_kind,
                              "test_other_protocols": result.protocol_metrics,
                              "select": scores.select.get("overall", {}), "select_by_kind": scores.select.get("by_kind", {}),
                              "history": result.history, "cost": cost, "threshold": result.threshold,
                              "val_cuts": {f"{c:.2f}": v for c, v in result.val_cuts.items()}, "train_seconds": result.train_seconds,
                              "per_sample": scores.per_sample,
                              "controls": {k: {kk: vv for kk, vv in c.items() if kk != "per_sample"}
                                           for k, c in result.controls.items()}}, "metrics.json")
    if result.controls:
        tracker.log_json(run_id, {k: c.get("per_sample", []) for k, c in result.controls.items()},
                         "controls_per_sample.json")
    if grid_path is not None and grid_path.is_file():
        tracker.log_file(run_id, grid_path)
    if result.checkpoint and Path(result.checkpoint).is_file():
        # the checkpoint travels with the run (a few MB at SynthRef scale), so `risclip.predict --run` works
        # from any machine that reaches the tracking server, not only the one that trained it
        tracker.log_file(run_id, result.checkpoint)


def add_text_controls(tracker, run, preset: P.Preset, components: Components, train_cfg: TrainConfig) -> bool:
    """Score a finished run's text controls from its checkpoint and log them to the run, where it has none
    yet (a run from before the controls existed, reused): only the controls are new evaluation. Returns
    False, logging nothing, when the checkpoint is not on this machine."""
    from risclip.engine import evaluate_text_controls, load_checkpoint, resolve_device

    if "test_swap_mIoU" in run.data.metrics:
        return True
    ckpt = run.data.tags.get("checkpoint", "")
    if not ckpt or not Path(ckpt).is_file():
        return False
    device = resolve_device(train_cfg.device)
    model_cfg = preset.model.with_components(components)
    model = load_checkpoint(ckpt, device, model_cfg=model_cfg)
    test_set = build_dataset(preset.data, model_cfg, preset.data.test_split, train=False)
    controls = evaluate_text_controls(model, test_set, train_cfg, device)
    tracker.log_metrics(run.info.run_id, control_metrics(controls))
    tracker.log_json(run.info.run_id, {k: c.get("per_sample", []) for k, c in controls.items()},
                     "controls_per_sample.json")
    return True


class TrackingHook(Hook):
    """Loss, epoch time and learning rate of every epoch, one ``log_batch`` per epoch."""

    def __init__(self, tracker, run_id: str) -> None:
        self.tracker, self.run_id = tracker, run_id

    def log(self, stage: int, epoch: int, row: dict) -> None:
        metrics = {f"stage{stage}_loss": row["loss"], f"stage{stage}_epoch_seconds": row["seconds"],
                   f"stage{stage}_lr": row["lr"]}
        # the learning curve (TrainConfig.learning_curve): val mIoU, its cut and per kind, as step metrics
        metrics.update({f"stage{stage}_{k}": float(v) for k, v in row.items() if k.startswith("val_")})
        self.tracker.log_metrics(self.run_id, metrics, step=epoch)

    def epoch_end(self, model, stage: int, epoch: int, row: dict) -> None:
        self.log(stage, epoch, row)


class GridHook(Hook):
    """The prediction grid of fixed val samples, drawn once training is over."""

    def __init__(self, preset: P.Preset, model_cfg: ModelConfig, path: Path, title: str) -> None:
        self.preset, self.model_cfg, self.path, self.title = preset, model_cfg, path, title

    def trained(self, model) -> None:
        from risclip import distributed as dist

        if not dist.is_main():
            return
        from bench.spine.figures import prediction_grid

        val = build_dataset(self.preset.data, self.model_cfg, self.preset.data.val_split, train=False)
        prediction_grid(model, val, self.path, title=self.title)
