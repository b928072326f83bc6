"""Two-stage training and evaluation of one RISCLIP variant.

* Stage 1 (patch level): adapters, CFE, SKE (and the patch map's scale and bias) train against the
  mask downsampled to the patch grid. Stage 2 (pixel level): the decoder trains, everything else
  frozen. A stage with nothing to train is skipped; a variant with nothing to train (rung 0) is
  evaluated directly.
* Dice + focal loss, AdamW, linear warm-up then cosine decay, gradient clipping, bf16 autocast on CUDA.
* Deterministic on CPU: components are initialised from ``seed``, and each epoch's sample order comes
  from a generator seeded by (seed, stage, epoch), so a resumed run sees the same batches.
* Checkpoints at every epoch end hold the component weights, optimiser and scheduler state (never the
  frozen CLIP), written atomically and read back with ``torch.load(weights_only=True)``. Run again
  with the same ``workdir``, an interrupted training resumes after its last finished epoch.
* A non-finite loss stops training with :class:`NonFiniteLossError`; the last good checkpoint stays.
* Under ``torchrun`` (:mod:`risclip.distributed`): DistributedDataParallel over the stage's modules,
  each process taking its share of the one-process epoch order; evaluation sharded without padding
  and reduced as metric sums; only process 0 writes checkpoints.
* Evaluation scores under one or more named protocols (:data:`risclip.metrics.PROTOCOLS`) from one
  forward pass: ``ours`` (the default), ``cris``, ``lavt``.

:func:`run_variant` is the spine the harness calls: it trains and scores one variant.

The package, one job a module: :mod:`.hooks` (what the harness plugs in), :mod:`.loading` (device, datasets,
loaders, autocast), :mod:`.checkpoints` (files), :mod:`.training` (the loop), :mod:`.evaluation` (one pass,
the text controls), :mod:`.scoring` (the val cut, test, what a checkpoint records), :mod:`.run`
(:func:`run_variant`). Everything public is importable from ``risclip.engine`` itself.
"""

from .checkpoints import (
                          CHECKPOINT_FORMAT,
                          checkpoint_path,
                          history_rows,
                          history_table,
                          load_checkpoint,
                          read_scoring,
                          resume,
                          save_atomic,
                          save_checkpoint,
                          save_epoch,
)
from .evaluation import (
                          Evaluation,
                          PredictionMemo,
                          all_kinds,
                          binarise,
                          distinct_images,
                          distinct_queries,
                          evaluate,
                          evaluate_text_controls,
                          protocol_targets,
                          resize_mask,
)
from .hooks import Evaluator, FunctionHook, Hook, NonFiniteLossError
from .loading import (
                          EpochSampler,
                          autocast_for,
                          build_dataset,
                          compile_for,
                          epoch_order,
                          loader_options,
                          local_batch_size,
                          resolve_device,
                          stage2_set,
)
from .run import RunResult, run_variant, stage1_key, stage1_path
from .scoring import VAL_CUTS, Scored, calibrate_threshold, score_trained, scoring_of, sweep_cuts
from .training import (
                          STAGE2_CACHE_BYTES,
                          LearningCurve,
                          PatchLevelCache,
                          StageRule,
                          make_optimizer,
                          patch_target,
                          stage_rule,
                          train_epoch,
                          train_stage,
                          warmup_cosine,
)

__all__ = [
    "CHECKPOINT_FORMAT", "STAGE2_CACHE_BYTES", "VAL_CUTS", "EpochSampler", "Evaluation", "Evaluator",
    "FunctionHook", "Hook", "LearningCurve", "NonFiniteLossError", "PatchLevelCache", "PredictionMemo", "RunResult",
    "Scored", "StageRule", "all_kinds", "autocast_for", "binarise", "build_dataset", "calibrate_threshold",
    "checkpoint_path", "compile_for", "distinct_images", "distinct_queries", "epoch_order", "evaluate",
    "evaluate_text_controls", "history_rows", "history_table", "load_checkpoint", "loader_options",
    "local_batch_size", "make_optimizer", "patch_target", "protocol_targets", "read_scoring", "resize_mask",
    "resolve_device", "resume", "run_variant", "save_atomic", "save_checkpoint", "save_epoch", "score_trained", "scoring_of",
    "stage1_key", "stage1_path", "stage2_set", "stage_rule", "sweep_cuts", "train_epoch", "train_stage", "warmup_cosine",
]
