"""One variant, trained and scored: :func:`run_variant`, the spine the harness calls, and the identity of
a variant's stage-1 training (:func:`stage1_key`), by which a finished stage 1 is reused."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import distributed as dist
from ..config import DataConfig, ModelConfig, TrainConfig
from ..data.refer import refer_collate
from ..identity import RUNTIME_TRAIN_FIELDS
from ..model import RISCLIP
from .checkpoints import history_rows, history_table, save_atomic, save_checkpoint
from .hooks import Evaluator, Hook
from .loading import build_dataset, compile_for, resolve_device, stage2_set
from .scoring import score_trained, scoring_of
from .training import LearningCurve, train_stage


@dataclass
class RunResult:
    """What one variant scored and cost."""

    components: str
    model_hash: str
    train_hash: str
    metrics: dict[str, float]  # on the evaluation split
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    val_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)  # one row per (stage, epoch)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    eval_samples: int = 0
    stage1_reused: bool = False  # stage-1 weights came from ``stage1_cache`` (train_seconds excludes them)
    protocol_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # other protocols, test split
    per_sample: list[dict] = field(default_factory=list)  # every test expression's IoU (sent_id, image_id, kind, iou)
    controls: dict[str, dict] = field(default_factory=dict)  # evaluate_text_controls on test, when asked for
    checkpoint: str | None = None  # the last checkpoint written (self-describing: see ``load_checkpoint``)
    compile_seconds: float = 0.0  # with TrainConfig.compile: compiling the inference graph, apart from the rest
    threshold: float | None = None  # the sigmoid cut test was scored at (None: a zero-shot variant's own rule)
    val_cuts: dict[float, float] = field(default_factory=dict)  # TrainConfig.threshold_from_val: val mIoU per cut


_TRAIN_DEFAULTS = TrainConfig()


def stage1_key(model_cfg: ModelConfig, train_cfg: TrainConfig, data_cfg: DataConfig) -> str:
    """Identity of a variant's stage-1 training. The decoder (and any stage-2 plug-in) is built after every
    stage-1 module and stays frozen (in eval mode) during stage 1, so variants that differ only in stage-2
    components and settings train identical stage-1 weights; this key is the same for them."""
    comp = model_cfg.components.without_stage(2)  # every component stage 2 trains
    m = dataclasses.replace(model_cfg, components=comp, decoder_dims=(0, 0, 0, 0), decoder_layers=None)
    runtime = {k: getattr(_TRAIN_DEFAULTS, k) for k in RUNTIME_TRAIN_FIELDS}  # how the data is fed, not what is learnt
    # the cut is read after training (TrainConfig.threshold_from_val): it never changes the weights
    t = dataclasses.replace(train_cfg, stage2_epochs=0, decoder_lr=0.0, eval_batch_size=0, threshold_from_val=False,
                            stage2_max_samples=None, **runtime)
    return f"{m.config_hash()}-{t.config_hash()}-{data_cfg.config_hash()}"


def stage1_path(stage1_cache: str | Path, model_cfg: ModelConfig, train_cfg: TrainConfig, data_cfg: DataConfig) -> Path:
    """Where ``stage1_cache`` keeps (or will keep) this variant's finished stage-1 weights (:func:`stage1_key`)."""
    return Path(stage1_cache) / f"{stage1_key(model_cfg, train_cfg, data_cfg)}.pt"


def run_variant(model_cfg: ModelConfig, train_cfg: TrainConfig, data_cfg: DataConfig, workdir: str | Path | None = None,
                eval_split: str | None = None, hooks: Sequence[Hook] = (), evaluate_val: bool = True,
                stage1_cache: str | Path | None = None, evaluators: Sequence[Evaluator] = (),
                protocols: tuple[str, ...] = ("ours",), text_controls: bool = False) -> RunResult:
    """Train (both stages, as the components require) and score one variant.

    ``workdir`` holds the checkpoints (and makes an interrupted run resumable); ``eval_split`` defaults
    to the data config's test split; ``hooks`` run at every epoch end and once training is over
    (:class:`Hook`: the harness logs epochs, draws its prediction grid, prunes trials). ``stage1_cache`` is a folder of finished stage-1
    weights keyed by :func:`stage1_key`: a variant whose stage 1 was already trained (e.g. rung 4 after
    rung 3 with the same seed) loads it instead of training it again (``RunResult.stage1_reused``).
    ``evaluators`` score the evaluation split beside the metrics (:class:`Evaluator`); ``protocols`` name the
    evaluation protocols to score the test split under (the first gives ``metrics``, the others
    ``protocol_metrics``; val is scored under the first). With a ``workdir``, the trained variant is
    also written as ``workdir/model.pt`` (its model config, component weights and, once scored, the cut
    and precision test was scored at), which ``python -m risclip.predict --checkpoint`` reads. ``text_controls`` also scores test with the swap and
    generic sentences of :func:`evaluate_text_controls` (``RunResult.controls``).
    """
    device = resolve_device(train_cfg.device)
    torch.manual_seed(train_cfg.seed)
    model = RISCLIP.from_config(model_cfg).to(device)
    run_key = f"{model_cfg.config_hash()}-{train_cfg.config_hash()}-{data_cfg.config_hash()}"
    wd = Path(workdir) if workdir is not None else None
    if wd is not None:
        wd.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    test_set = build_dataset(data_cfg, model_cfg, eval_split or data_cfg.test_split, train=False)
    sample = None
    if train_cfg.compile != "off" and len(test_set):
        first = refer_collate([test_set[i] for i in range(min(len(test_set), train_cfg.eval_batch_size))])
        sample = (first["image"].to(device), first["tokens"].to(device))
    compile_seconds = compile_for(model, train_cfg, sample)
    t0 = time.perf_counter()
    stage1_reused = False
    curve = None
    needs_val = evaluate_val or train_cfg.threshold_from_val
    val_set = build_dataset(data_cfg, model_cfg, data_cfg.val_split, train=False) \
        if needs_val or (train_cfg.learning_curve and model_cfg.components.trains_anything) else None
    if model_cfg.components.trains_anything:
        if train_cfg.learning_curve and val_set is not None and len(val_set):
            curve = LearningCurve(val_set, train_cfg, device)
        train_set = build_dataset(data_cfg, model_cfg, data_cfg.train_split, train=True)
        cached = None
        if stage1_cache is not None and model_cfg.components.trains_patch_level:
            cached = stage1_path(stage1_cache, model_cfg, train_cfg, data_cfg)
        if cached is not None and cached.is_file():
            state = torch.load(cached, map_location=device, weights_only=True)
            model.load_stage_state_dict(1, state["model"])
            history += [dict(row, reused=1.0) for row in history_rows(state)]
            stage1_reused = True
        else:
            h1 = train_stage(model, train_set, 1, train_cfg, wd, device, hooks, run_key, curve)
            history += h1
            if cached is not None and h1 and dist.is_main():
                cached.parent.mkdir(parents=True, exist_ok=True)
                keys, table = history_table(h1)
                save_atomic({"model": model.stage_state_dict(1), "history_keys": keys, "history": table}, cached)
            dist.barrier()
        history += train_stage(model, stage2_set(train_set, data_cfg, model_cfg, train_cfg), 2, train_cfg, wd, device,
                               hooks, run_key, curve)
    train_seconds = time.perf_counter() - t0 - (curve.seconds if curve is not None else 0.0)
    final = wd / "model.pt" if wd is not None else None  # written once scored: it carries the cut and precision
    for hook in hooks:  # on every process (under torchrun): hooks that write check dist.is_main() themselves
        hook.trained(model)
        model.set_stage(None)
    t1 = time.perf_counter()
    scored = score_trained(model, test_set, val_set, train_cfg, device, evaluators, protocols, evaluate_val, text_controls)
    if final is not None:  # the served model carries the cut and precision it was scored at
        if dist.is_main():
            save_checkpoint(model, final, run_key, scoring=scoring_of(scored, train_cfg, protocols[0]))
        dist.barrier()
    return RunResult(
        components=str(model_cfg.components), model_hash=model_cfg.config_hash(), train_hash=train_cfg.config_hash(),
        metrics=scored.test.metrics, by_kind=scored.test.by_kind, val_metrics=scored.val_metrics, history=history,
        train_seconds=train_seconds, eval_seconds=time.perf_counter() - t1, eval_samples=len(test_set),
        stage1_reused=stage1_reused, protocol_metrics=scored.test.protocols, checkpoint=str(final) if final else None,
        per_sample=scored.test.per_sample, controls=scored.controls, compile_seconds=compile_seconds,
        threshold=scored.threshold, val_cuts=scored.val_cuts,
    )
