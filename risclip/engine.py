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
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler, Subset
from tqdm import tqdm

from . import distributed as dist
from .config import DataConfig, ModelConfig, TrainConfig
from .data.controls import CONTROLS, TextControl
from .data.refer import ReferDataset, refer_collate
from .kernels import compile_model, mixed_precision
from .losses import dice_focal_loss, spatial_ce
from .metrics import EvalProtocol, RISMetrics, get_protocol
from .model import PATCH_STAGE, PIXEL_STAGE, RISCLIP, PatchLevel, RISOutput


class Hook:
    """Something the harness runs at points of training (all no-ops here; override what you need).

    ``epoch_end(model, stage, epoch, row)`` after every finished epoch, its checkpoint written (``row``:
    stage, epoch, loss, seconds, lr); ``trained(model)`` once training is over, before evaluation.
    A hook may raise to stop training (an Optuna pruner does); the last checkpoint stays. Under torchrun
    hooks run on every process; one that writes files should do so only where
    ``risclip.distributed.is_main()``."""

    def epoch_end(self, model: RISCLIP, stage: int, epoch: int, row: dict[str, float]) -> None:
        pass

    def trained(self, model: RISCLIP) -> None:
        pass


class FunctionHook(Hook):
    """A hook from plain functions: ``FunctionHook(epoch_end=lambda model, stage, epoch, row: ...)``."""

    def __init__(self, epoch_end: Callable | None = None, trained: Callable | None = None) -> None:
        self._epoch_end, self._trained = epoch_end, trained

    def epoch_end(self, model, stage, epoch, row):
        if self._epoch_end is not None:
            self._epoch_end(model, stage, epoch, row)

    def trained(self, model):
        if self._trained is not None:
            self._trained(model)


@runtime_checkable
class Evaluator(Protocol):
    """Extra scoring over an evaluation pass, fed the model's output (no second forward pass), with the
    shape :class:`~risclip.metrics.RISMetrics` has: ``reset()``, ``process(batch, output)`` per batch,
    ``compute()`` at the end (under torchrun, reduced over processes)."""

    def reset(self) -> None: ...

    def process(self, batch: dict, output: RISOutput) -> None: ...

    def compute(self) -> dict: ...


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


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


class EpochSampler(Sampler[int]):
    """The sampler of a training loader made once per stage (so that persistent workers live across epochs):
    each epoch the trainer sets the order it yields (:class:`~risclip.distributed.ShardedOrder`). It runs in
    the main process, so the workers see each new order."""

    def __init__(self) -> None:
        self.order: Sampler[int] | list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def loader_options(cfg: TrainConfig, device: torch.device, persistent: bool = True) -> dict:
    """DataLoader settings from ``cfg``: ``num_workers`` processes; with workers, each keeps
    ``prefetch_factor`` batches ahead and (``persistent_workers``) lives across epochs; host memory is pinned
    (``pin_memory``; None: on CUDA) so that copies to the GPU can overlap compute. ``persistent=False`` for a
    loader iterated once (evaluation), whose workers have no later epoch to serve. The loader benchmark
    (``bench/benchmarks/test_loader.py``, ``reports/archive/benchmarks/benchmark-gpu.md``) says how many workers a GPU needs."""
    opts: dict = {"num_workers": cfg.num_workers,
                  "pin_memory": device.type == "cuda" if cfg.pin_memory is None else cfg.pin_memory}
    if cfg.num_workers > 0:
        opts.update(persistent_workers=persistent and cfg.persistent_workers, prefetch_factor=cfg.prefetch_factor)
    return opts


def compile_for(model: RISCLIP, cfg: TrainConfig, sample: tuple[torch.Tensor, torch.Tensor] | None) -> float:
    """``torch.compile`` the model when ``cfg.compile`` asks for it, and compile its inference graph now on
    ``sample`` (images, tokens) so that the time is reported apart (returned, seconds; 0 when off). The
    training graphs compile in the first training step, inside that epoch's seconds."""
    if cfg.compile == "off":
        return 0.0
    compile_model(model, cfg.compile)
    if sample is None:
        return 0.0
    model.set_stage(None)
    t0 = time.perf_counter()
    with torch.no_grad(), _autocast(sample[0].device, cfg):
        model(*sample)
    if sample[0].device.type == "cuda":
        torch.cuda.synchronize(sample[0].device)
    return time.perf_counter() - t0


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present; under torchrun, this process's own device (``cuda:LOCAL_RANK``)."""
    ddp_device = dist.init(name)
    if ddp_device is not None:
        return ddp_device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def patch_target(mask: torch.Tensor, grid: tuple[int, int], mode: str) -> torch.Tensor:
    """(B, H, W) pixel mask -> (B, h, w) stage-1 target: share of mask pixels per patch, or nearest."""
    if mode == "area":
        return F.adaptive_avg_pool2d(mask[:, None].float(), grid)[:, 0]
    if mode == "nearest":
        return F.interpolate(mask[:, None].float(), size=grid, mode="nearest")[:, 0]
    raise ValueError(f"patch_target must be 'area' or 'nearest', not {mode!r}")


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _autocast(device: torch.device, cfg: TrainConfig):
    """bf16 autocast on CUDA (``cfg.amp``) and on a CPU (``cfg.cpu_amp``); otherwise float32."""
    return mixed_precision(device, cuda_amp=cfg.amp, cpu_amp=cfg.cpu_amp)


def checkpoint_path(workdir: Path, stage: int) -> Path:
    return Path(workdir) / f"stage{stage}.pt"


def epoch_order(n: int, cfg: TrainConfig, stage: int, epoch: int) -> list[int]:
    """The one-process sample order of an epoch, from a generator seeded by (seed, stage, epoch)."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + stage * 1009 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def local_batch_size(cfg: TrainConfig) -> int:
    """Per-process batch: ``batch_size`` is the global batch, split evenly over torchrun's processes."""
    world = dist.world_size()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} does not divide over {world} processes")
    return cfg.batch_size // world


@dataclass(frozen=True)
class StageRule:
    """What differs between the two stages, said once: epochs, base learning rate, and what the loss
    compares (stage 1: patch logits against the mask pooled to the grid; stage 2: pixel logits against
    the mask). Which parameters each stage trains is :data:`risclip.model.STAGE_GROUPS`."""

    stage: int
    epochs: int
    lr: float
    pixel_level: bool

    def logits(self, out: RISOutput) -> torch.Tensor:
        return out.mask_logits if self.pixel_level else out.patch_logits

    def target(self, mask: torch.Tensor, grid: tuple[int, int], mode: str) -> torch.Tensor:
        return mask if self.pixel_level else patch_target(mask, grid, mode)

    def loss(self, out: RISOutput, mask: torch.Tensor, grid: tuple[int, int], cfg: TrainConfig) -> torch.Tensor:
        logits, target = self.logits(out), self.target(mask, grid, cfg.patch_target)
        loss = dice_focal_loss(logits, target, cfg.dice_weight, cfg.focal_weight, cfg.focal_alpha, cfg.focal_gamma)
        if cfg.spatial_ce_weight and not self.pixel_level:
            loss = loss + cfg.spatial_ce_weight * spatial_ce(logits, target)
        return loss


def stage_rule(stage: int, cfg: TrainConfig) -> StageRule:
    if stage == PATCH_STAGE:
        return StageRule(stage, cfg.stage1_epochs, cfg.lr, pixel_level=False)
    if stage == PIXEL_STAGE:
        return StageRule(stage, cfg.stage2_epochs, cfg.decoder_lr, pixel_level=True)
    raise ValueError(f"stage must be {PATCH_STAGE} or {PIXEL_STAGE}, not {stage!r}")


def make_optimizer(model: RISCLIP, rule: StageRule, cfg: TrainConfig, steps_per_epoch: int):
    """AdamW over the stage's parameter groups (CFE and SKE at their rate scales), and a linear warm-up
    then cosine decay over the stage's steps."""
    scales = {"cfe": cfg.cfe_lr_scale, "ske": cfg.ske_lr_scale}
    groups = [{"params": ps, "lr": rule.lr * scales.get(name, 1.0), "name": name}
              for name, ps in model.stage_parameter_groups(rule.stage).items()]
    optimizer = torch.optim.AdamW(groups, lr=rule.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(rule.epochs * steps_per_epoch, cfg.warmup_fraction))
    return optimizer, scheduler


def resume(ckpt: Path | None, run_key: str, model: RISCLIP, optimizer, scheduler,
           device: torch.device) -> tuple[int, list[dict]]:
    """The epoch to start from and the history so far: after the last finished epoch of a checkpoint of
    this very run (same ``run_key``), else from the start."""
    if ckpt is None or not ckpt.is_file():
        return 0, []
    state = torch.load(ckpt, map_location=device, weights_only=True)
    if state.get("run_key") != run_key:
        return 0, []
    model.load_component_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"]) + 1, history_rows(state)


def save_epoch(ckpt: Path, run_key: str, epoch: int, model: RISCLIP, optimizer, scheduler, stage: int,
               history: list[dict]) -> None:
    keys, table = history_table(history)
    _save_atomic({"run_key": run_key, "epoch": epoch, "model": model.component_state_dict(),
                  "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                  "history_keys": keys, "stage": stage, "model_config": model.cfg.to_dict(),
                  "history": table}, ckpt)


def history_table(history: list[dict]) -> tuple[list[str], torch.Tensor]:
    """Epoch rows as checkpoints store them: every key any row has (first seen first), one float row per
    epoch, NaN where a row lacks a key (epochs trained before the learning curve existed)."""
    keys = list(dict.fromkeys(k for r in history for k in r))
    return keys, torch.tensor([[float(r.get(k, math.nan)) for k in keys] for r in history], dtype=torch.float64)


def history_rows(state: dict) -> list[dict]:
    """The epoch rows :func:`history_table` stored, each without the keys it did not have."""
    return [{k: v for k, v in zip(state["history_keys"], row) if not math.isnan(v)}
            for row in state["history"].tolist()]


# Stage 2 trains only the decoder on stage-1 outputs that do not change: they are computed once per
# sample and kept in memory when they fit this budget (else recomputed every step, as under torchrun).
STAGE2_CACHE_BYTES = 4 * 2**30


class PatchLevelCache:
    """Every training sample's :meth:`RISCLIP.patch_level` result and mask, computed once (in the order
    of the dataset, ``eval_batch_size`` at a time), for stage 2's epochs."""

    def __init__(self, model: RISCLIP, dataset: ReferDataset, cfg: TrainConfig, device: torch.device) -> None:
        model.set_stage(PIXEL_STAGE)  # stage-1 modules in eval mode, as when stage 2 computes them itself
        loader = DataLoader(dataset, batch_size=cfg.eval_batch_size, shuffle=False, collate_fn=refer_collate,
                            **loader_options(cfg, device, persistent=False))
        logits, cosine, masks, feats = [], [], [], []
        disable = None if cfg.progress is None else not cfg.progress
        with torch.no_grad():
            for batch in tqdm(loader, desc="stage 2: stage-1 outputs", unit="batch", leave=False, disable=disable):
                with _autocast(device, cfg):
                    p = model.patch_level(batch["image"].to(device), batch["tokens"].to(device))
                logits.append(p.logits)
                cosine.append(p.cosine)
                masks.append(batch["mask"].to(device) > 0.5)
                feats.append(p.features)
        self.logits, self.cosine, self.masks = torch.cat(logits), torch.cat(cosine), torch.cat(masks)
        self.features = [torch.cat([f[i] for f in feats]) for i in range(len(feats[0]))] if feats[0] else None
        self.out_size = tuple(self.masks.shape[-2:])

    @staticmethod
    def fits(model: RISCLIP, dataset: ReferDataset) -> bool:
        h, w = model.grid
        size = model.cfg.image_size
        per_sample = 4 * (2 * h * w + len(model.decoder_layers) * model.vision_width * h * w) + size * size
        return not dist.active() and len(dataset) * per_sample <= STAGE2_CACHE_BYTES

    def batch(self, index: list[int]) -> tuple[PatchLevel, torch.Tensor]:
        i = torch.tensor(index, device=self.logits.device)
        feats = [f[i] for f in self.features] if self.features is not None else None
        return PatchLevel(self.logits[i], self.cosine[i], feats), self.masks[i].float()


def train_stage(model: RISCLIP, dataset: ReferDataset, stage: int, cfg: TrainConfig, workdir: Path | None,
                device: torch.device, hooks: Sequence[Hook] = (), run_key: str = "",
                curve: LearningCurve | None = None) -> list[dict]:
    """Train ``stage``'s parameters for its epochs; resume from ``workdir/stage{n}.pt`` if it is there.
    Stage 2 reads the stage-1 outputs from a :class:`PatchLevelCache` where it fits. With ``curve``
    (:class:`LearningCurve`), every epoch's row also holds its val scores."""
    rule = stage_rule(stage, cfg)
    params = model.stage_parameters(stage)
    if not params or rule.epochs <= 0:
        return []
    model.set_stage(stage)
    batch_size, world = local_batch_size(cfg), dist.world_size()
    # DDP over the whole model: only the stage's parameters require gradients, so only they are synchronised
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if dist.active() else model
    steps_per_epoch = math.ceil(math.ceil(len(dataset) / world) / batch_size)
    optimizer, scheduler = make_optimizer(model, rule, cfg, steps_per_epoch)
    ckpt = checkpoint_path(workdir, stage) if workdir is not None else None
    start_epoch, history = resume(ckpt, run_key, model, optimizer, scheduler, device)
    cache = loader = None
    if rule.pixel_level and start_epoch < rule.epochs and PatchLevelCache.fits(model, dataset):
        cache = PatchLevelCache(model, dataset, cfg, device)
    sampler = EpochSampler()
    for epoch in range(start_epoch, rule.epochs):
        model.set_stage(stage)
        order = dist.ShardedOrder(epoch_order(len(dataset), cfg, stage, epoch), dist.rank(), world)
        t0 = time.perf_counter()
        if cache is not None:
            idx = list(order)
            batches = (cache.batch(idx[i:i + batch_size]) for i in range(0, len(idx), batch_size))
        else:
            sampler.order = order
            if loader is None:  # one loader per stage: its workers (if persistent) serve every epoch
                loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=refer_collate,
                                    drop_last=False, **loader_options(cfg, device))
            batches = loader
        total, count = train_epoch(net, model, batches, rule, cfg, device, optimizer, scheduler, params,
                                   f"epoch {epoch + 1}/{rule.epochs}", ckpt, cache)
        dist.broadcast_state(model)  # BatchNorm statistics: process 0's everywhere, before saving and evaluating
        sums = dist.all_reduce_sum(torch.tensor([total, float(count)], dtype=torch.float64))
        row = {"stage": stage, "epoch": epoch + 1, "loss": float(sums[0] / sums[1].clamp_min(1)),
               "seconds": time.perf_counter() - t0, "lr": scheduler.get_last_lr()[0]}
        if curve is not None:
            row.update(curve(model, stage))
        history.append(row)
        if ckpt is not None and dist.is_main():
            save_epoch(ckpt, run_key, epoch, model, optimizer, scheduler, stage, history)
        dist.barrier()
        for hook in hooks:
            hook.epoch_end(model, stage, epoch + 1, row)
            model.set_stage(stage)
    model.set_stage(None)
    return history


class LearningCurve:
    """Val scores after an epoch (``TrainConfig.learning_curve``): mIoU at the best of :data:`VAL_CUTS`
    (``val_mIoU``, ``val_cut``) and per expression kind at that cut (``val_mIoU_<kind>``), on the first
    ``TrainConfig.curve_samples`` val sentences. After a stage-1 epoch it scores the patch map upsampled (what
    stage 1 trains: an untrained decoder is left out), after a stage-2 epoch the decoder's masks. The random
    state is saved before and restored after, so training goes on as if it had not run; ``seconds`` adds up
    its time, which :func:`run_variant` keeps out of ``train_seconds``. Runs on every process (the
    evaluation is sharded and reduced)."""

    def __init__(self, dataset: ReferDataset, cfg: TrainConfig, device: torch.device) -> None:
        n = cfg.curve_samples
        self.dataset = dataset if n is None or n >= len(dataset) else dataset.limited(n, "first")
        self.cfg, self.device, self.seconds = cfg, device, 0.0

    def __call__(self, model: RISCLIP, stage: int) -> dict[str, float]:
        t0 = time.perf_counter()
        cpu = torch.random.get_rng_state()
        gpu = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        decoder = getattr(model, "decoder", None)  # the from-scratch reference has none
        try:
            if stage == PATCH_STAGE and decoder is not None:
                model.decoder = None  # score what stage 1 trains: the patch map, upsampled
            best, scores, by_kind = sweep_cuts(model, self.dataset, self.cfg, self.device,
                                               desc=f"val curve, stage {stage}")
        finally:
            if decoder is not None:
                model.decoder = decoder
            torch.random.set_rng_state(cpu)
            if gpu is not None:
                torch.cuda.set_rng_state_all(gpu)
        row = {"val_mIoU": scores[best]["mIoU"], "val_cut": best}
        row.update({f"val_mIoU_{k}": m["mIoU"] for k, m in by_kind.items()})
        self.seconds += time.perf_counter() - t0
        return row


def train_epoch(net, model: RISCLIP, batches, rule: StageRule, cfg: TrainConfig, device: torch.device, optimizer,
                scheduler, params: list, epoch: str, ckpt: Path | None,
                cache: PatchLevelCache | None) -> tuple[float, int]:
    """One pass over ``batches`` (refer batches, or (PatchLevel, mask) pairs from the cache); returns the
    summed loss and the sample count. ``epoch`` names the pass ("epoch 2/4") in the progress bar and in
    errors. A non-finite loss raises :class:`NonFiniteLossError`."""
    total, count, t0 = 0.0, 0, time.perf_counter()
    bar = tqdm(batches, desc=f"stage {rule.stage} {epoch}", unit="batch", leave=False,
               disable=(None if cfg.progress is None else not cfg.progress) if dist.is_main() else True)
    for step, batch in enumerate(bar):
        if cache is not None:
            patch, mask = batch
            with _autocast(device, cfg):
                out = model.pixel_level(patch, cache.out_size)
        else:
            mask = batch["mask"].to(device, non_blocking=True)
            with _autocast(device, cfg):
                out = net(batch["image"].to(device, non_blocking=True), batch["tokens"].to(device, non_blocking=True))
        loss = rule.loss(out, mask, model.grid, cfg)
        if not torch.isfinite(loss):
            kept = f"; the last good checkpoint is {ckpt}" if ckpt is not None and ckpt.is_file() else ""
            raise NonFiniteLossError(f"non-finite loss ({loss.item()}) in stage {rule.stage}, {epoch}, "
                                     f"step {step + 1}: training stopped{kept}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        total += loss.item() * mask.shape[0]
        count += mask.shape[0]
        bar.set_postfix(loss=f"{total / count:.4f}", img_s=f"{count / (time.perf_counter() - t0):.1f}")
    return total, count


@dataclass
class Evaluation:
    metrics: dict[str, float]  # under the first protocol asked for
    by_kind: dict[str, dict[str, float]]
    protocols: dict[str, dict[str, float]] = field(default_factory=dict)  # the other protocols
    per_sample: list[dict] = field(default_factory=list)  # {"sent_id", "image_id", "kind", "iou"}, first protocol
    protocol_by_kind: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # the other protocols


def binarise(model: RISCLIP, out: RISOutput, batch: dict, protocol: EvalProtocol) -> list[torch.Tensor]:
    """A batch's predictions as ``protocol`` scores them (original size, or size x size; its sigmoid cut);
    :func:`protocol_targets` gives the ground truth they are scored against."""
    if protocol.size is None:
        sizes = [(m["orig_h"], m["orig_w"]) for m in batch["meta"]]
    else:
        sizes = [(protocol.size, protocol.size)] * len(batch["meta"])
    return model.binarise(out, sizes, threshold=protocol.threshold)


def distinct_images(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's distinct images (by image id, first appearance first) and each sentence's index into
    them: the model then runs an image tower that does not read the text once per image."""
    slot: dict[int, int] = {}  # image id -> its row among the distinct images
    rows, index = [], []
    for i, m in enumerate(batch["meta"]):
        if m["image_id"] not in slot:
            slot[m["image_id"]] = len(rows)
            rows.append(i)
        index.append(slot[m["image_id"]])
    return batch["image"][rows], torch.tensor(index)


class PredictionMemo:
    """Binary predictions of (image, sentence) pairs already scored, kept packed (a bit per pixel) by the
    sigmoid cut and scoring size that made them. The swap control asks for pairs the test pass has just
    scored: each swapped sentence is another referent's own test sentence, on the same image. The
    memo lets it reuse those masks instead of running the model again (the numbers are the same: a
    pair's prediction depends on nothing else at evaluation)."""

    def __init__(self) -> None:
        self._masks: dict[tuple, tuple[np.ndarray, tuple[int, int]]] = {}

    @staticmethod
    def keys(batch: dict, protocol: EvalProtocol) -> list[tuple]:
        return [(protocol.threshold, protocol.size, int(m["image_id"]), t.numpy().tobytes())
                for m, t in zip(batch["meta"], batch["tokens"].cpu())]

    def get(self, key: tuple) -> torch.Tensor | None:
        hit = self._masks.get(key)
        if hit is None:
            return None
        bits, (h, w) = hit
        return torch.from_numpy(np.unpackbits(bits, count=h * w).reshape(h, w).astype(bool))

    def put(self, key: tuple, mask: torch.Tensor) -> None:
        self._masks[key] = (np.packbits(mask.detach().cpu().numpy().astype(bool).ravel()), tuple(mask.shape))

    def __len__(self) -> int:
        return len(self._masks)


def protocol_targets(batch: dict, protocol: EvalProtocol, device: torch.device) -> list[torch.Tensor]:
    """A batch's ground truth as ``protocol`` scores it (original size, or size x size)."""
    if protocol.size is None:
        return [t.to(device) for t in batch["orig_mask"]]
    return [resize_mask(t, protocol.size, protocol.target_resize).to(device) for t in batch["orig_mask"]]


def resize_mask(mask: torch.Tensor, size: int, rule: str = "torch-nearest") -> torch.Tensor:
    """A boolean mask resized to ``size`` x ``size`` by nearest neighbour: torch's ``mode="nearest"``
    (source pixel floor(i * in / out)) or PIL's ``Image.NEAREST`` (the source pixel under the output pixel's
    centre), as LAVT's test resizes its targets."""
    if rule == "pil-nearest":
        img = Image.fromarray(mask.cpu().numpy().astype(np.uint8) * 255)
        return torch.from_numpy(np.asarray(img.resize((size, size), Image.NEAREST)) > 127)
    return F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0, 0] > 0.5


def _sub_batch(batch: dict, rows: list[int]) -> dict:
    """The samples ``rows`` of a collated batch (:func:`risclip.data.refer.refer_collate`)."""
    idx = torch.tensor(rows)
    out = {k: batch[k][idx] for k in ("image", "tokens", "mask")}
    out["meta"] = [batch["meta"][i] for i in rows]
    if "orig_mask" in batch:
        out["orig_mask"] = [batch["orig_mask"][i] for i in rows]
    return out


def distinct_queries(tokens: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's distinct (image, sentence) pairs, first appearance first, and each sample's row among them.
    At evaluation a pair's prediction depends on nothing else (eval mode: no batch statistics), so a pair
    that appears twice (the generic control gives every sentence of an image the same text; a referent's
    sentences may repeat) is run once and its output copied."""
    key = torch.cat([index[:, None].to(tokens.dtype), tokens], 1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    first: dict[int, int] = {}
    for i, k in enumerate(inverse.tolist()):
        first.setdefault(k, i)
    rows = sorted(first.values())
    slot = {inverse[r].item(): j for j, r in enumerate(rows)}
    return torch.tensor(rows), torch.tensor([slot[k] for k in inverse.tolist()])


def _forward_distinct(model: RISCLIP, images: torch.Tensor, tokens: torch.Tensor, index: torch.Tensor) -> RISOutput:
    """``model(images, tokens, index)`` with every distinct (image, sentence) pair run once (:func:`distinct_queries`)."""
    rows, inverse = distinct_queries(tokens.cpu(), index.cpu())
    if len(rows) == len(index):
        return model(images, tokens, index)
    out = model(images, tokens[rows.to(tokens.device)], index[rows.to(index.device)])
    inv = inverse.to(out.mask_logits.device)
    return RISOutput(*(getattr(out, f.name)[inv] for f in dataclasses.fields(out)))


@torch.no_grad()
def evaluate(model: RISCLIP, dataset: ReferDataset, cfg: TrainConfig, device: torch.device,
             desc: str = "eval", evaluators: Sequence[Evaluator] = (),
             protocols: Sequence[str | EvalProtocol] = ("ours",), memo: PredictionMemo | None = None) -> Evaluation:
    """mIoU, oIoU, P@X and the same per expression kind under the first of ``protocols`` (``ours``: at each
    image's original resolution), and the overall metrics under the others, from one forward pass.
    Under torchrun each process scores every N-th sample and the metric sums are reduced.

    ``evaluators`` see every batch with the model's output (extra scoring without a second forward
    pass); they are reset here and computed by the caller. ``memo`` (:class:`PredictionMemo`): every
    prediction made is kept there, and a pass with one protocol and no evaluators takes the predictions
    it already holds instead of running the model for them."""
    if not dataset.keep_original_mask:
        raise ValueError("evaluate needs a dataset built with keep_original_mask=True")
    chosen = [p if isinstance(p, EvalProtocol) else get_protocol(p) for p in protocols]
    if len({p.name for p in chosen}) != len(chosen):
        raise ValueError(f"evaluate: protocol names must differ ({', '.join(p.name for p in chosen)})")
    model.set_stage(None)
    meters = {p.name: p.meter() for p in chosen}
    shard = Subset(dataset, dist.shard_indices(len(dataset), dist.rank(), dist.world_size())) if dist.active() else dataset
    loader = DataLoader(shard, batch_size=cfg.eval_batch_size, shuffle=False, collate_fn=refer_collate,
                        **loader_options(cfg, device, persistent=False))
    disable = (None if cfg.progress is None else not cfg.progress) if dist.is_main() else True
    for ev in evaluators:
        ev.reset()
    sent_ids: list[int] = []
    image_ids: list[int] = []
    lookup = memo is not None and len(chosen) == 1 and not evaluators
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=disable):
        kinds = [m["kind"] for m in batch["meta"]]
        sent_ids += [m["sent_id"] for m in batch["meta"]]
        image_ids += [m["image_id"] for m in batch["meta"]]
        # the memo holds the first protocol's masks only: a later lookup (the swap control) scores one protocol,
        # the test pass's first
        keys = PredictionMemo.keys(batch, chosen[0]) if memo is not None else []
        held = [memo.get(k) for k in keys] if lookup else [None] * len(kinds)
        run = [i for i, h in enumerate(held) if h is None]
        if run:
            part = batch if len(run) == len(held) else _sub_batch(batch, run)
            images, index = distinct_images(part)
            with _autocast(device, cfg):
                out = _forward_distinct(model, images.to(device), part["tokens"].to(device), index.to(device))
            for ev in evaluators:
                ev.process(part, out)
        for j, p in enumerate(chosen):
            preds: list[torch.Tensor | None] = [None if h is None else h.to(device) for h in held]
            if run:
                made = binarise(model, out, part, p)
                for i, m in zip(run, made):
                    preds[i] = m
                    if memo is not None and j == 0:
                        memo.put(keys[i], m)
            meters[p.name].update(preds, protocol_targets(batch, p, device), kinds=kinds)
    reduce = dist.all_reduce_sum if dist.active() else None
    first = meters[chosen[0].name]
    kinds = all_kinds(first)
    others = {p.name: meters[p.name].compute(reduce) for p in chosen[1:]}
    rows = [{"sent_id": int(i), "image_id": int(m), "kind": k, "iou": float(v)}
            for i, m, k, v in zip(sent_ids, image_ids, first.kinds_in_order(), first.per_sample_iou().tolist())]
    if dist.active():
        import torch.distributed as tdist

        parts: list[list[dict]] = [[] for _ in range(dist.world_size())]
        tdist.all_gather_object(parts, rows)
        rows = [r for part in parts for r in part]
    rows.sort(key=lambda r: r["sent_id"])
    others_by_kind = {p.name: meters[p.name].compute_by_kind(reduce, kinds) for p in chosen[1:]}
    return Evaluation(first.compute(reduce), first.compute_by_kind(reduce, kinds), others, rows, others_by_kind)


def evaluate_text_controls(model: RISCLIP, dataset: ReferDataset, cfg: TrainConfig, device: torch.device,
                           seed: int = 0, controls: Sequence[str] = CONTROLS,
                           protocol: str | EvalProtocol = "ours", memo: PredictionMemo | None = None) -> dict[str, dict]:
    """Score ``dataset``'s images against their true masks with control sentences
    (:mod:`risclip.data.controls`): ``{control: {"metrics", "by_kind", "fraction", "per_sample"}}``, where
    ``fraction`` is the share of the dataset's sentences the control could score (``swap`` leaves out
    sentences whose image holds no other referent). ``seed`` draws the swaps; it is the same for every
    variant (0 by default), so all variants read the same swapped sentences. ``memo``: the test pass's
    predictions (:class:`PredictionMemo`); a swapped sentence is another referent's test sentence, so its
    mask is taken from there when the test pass scored it."""
    out: dict[str, dict] = {}
    for name in controls:
        ds = TextControl(dataset, name, seed=seed)
        if len(ds) == 0:
            out[name] = {"metrics": {}, "by_kind": {}, "fraction": 0.0, "per_sample": []}
            continue
        ev = evaluate(model, ds, cfg, device, desc=f"test ({name} text)", protocols=(protocol,), memo=memo)
        out[name] = {"metrics": ev.metrics, "by_kind": ev.by_kind, "fraction": ds.fraction, "per_sample": ev.per_sample}
    return out


# the sigmoid cuts TrainConfig.threshold_from_val chooses among: 0.10, 0.15, ..., 0.90
VAL_CUTS: tuple[float, ...] = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))


def sweep_cuts(model, dataset: ReferDataset, cfg: TrainConfig, device: torch.device,
               protocol: str | EvalProtocol = "ours", cuts: Sequence[float] = VAL_CUTS,
               desc: str = "val (choosing the cut)") -> tuple[float, dict[float, dict[str, float]], dict[str, dict]]:
    """Every cut among ``cuts`` scored on ``dataset`` from one forward pass: ``(best cut, {cut: metrics},
    metrics by expression kind at the best cut)``, the best by mIoU, ties to the cut nearest the protocol's own."""
    base = protocol if isinstance(protocol, EvalProtocol) else get_protocol(protocol)
    trial = [dataclasses.replace(base, name=f"{base.name}@{c:.2f}", threshold=c) for c in cuts]
    ev = evaluate(model, dataset, cfg, device, desc=desc, protocols=trial)
    scores = {c: ev.metrics if i == 0 else ev.protocols[p.name] for i, (c, p) in enumerate(zip(cuts, trial))}
    best = max(cuts, key=lambda c: (round(scores[c]["mIoU"], 9), -abs(c - base.threshold)))
    by_kind = ev.by_kind if best == cuts[0] else ev.protocol_by_kind[f"{base.name}@{best:.2f}"]
    return best, scores, by_kind


def calibrate_threshold(model, dataset: ReferDataset, cfg: TrainConfig, device: torch.device,
                        protocol: str | EvalProtocol = "ours", cuts: Sequence[float] = VAL_CUTS
                        ) -> tuple[float, dict[float, dict[str, float]]]:
    """The cut among ``cuts`` whose masks score the best mIoU on ``dataset`` (val), from one forward pass:
    ``(cut, {cut: metrics at that cut})`` (:func:`sweep_cuts`)."""
    best, scores, _ = sweep_cuts(model, dataset, cfg, device, protocol, cuts)
    return best, scores


@dataclass
class Scored:
    """What :func:`score_trained` measured of a trained model."""

    test: Evaluation
    val_metrics: dict[str, float]
    controls: dict[str, dict]
    threshold: float | None  # the cut test was scored at (None: a zero-shot variant's own rule)
    val_cuts: dict[float, float]  # val mIoU per cut, when the cut was chosen on val


def score_trained(model, test_set: ReferDataset, val_set: ReferDataset | None, cfg: TrainConfig, device: torch.device,
                  evaluators: Sequence[Evaluator] = (), protocols: tuple[str, ...] = ("ours",),
                  evaluate_val: bool = True, text_controls: bool = False, label: str = "") -> Scored:
    """Score a trained model (a rung, or the from-scratch reference, alike): the cut chosen on ``val_set``
    when ``cfg.threshold_from_val`` (the protocol's own then also scored, as protocol ``fixed``), val at
    that cut, test under ``protocols`` and, with ``text_controls``, the swap and generic sentences."""
    first = get_protocol(protocols[0])
    scored: list[str | EvalProtocol] = list(protocols)
    val_metrics: dict[str, float] = {}
    val_cuts: dict[float, float] = {}
    prefix = f"{label} " if label else ""
    if cfg.threshold_from_val and not model.zero_shot:
        cut, at_cut = calibrate_threshold(model, val_set, cfg, device, first)
        val_cuts = {c: m["mIoU"] for c, m in at_cut.items()}
        val_metrics = at_cut[cut] if evaluate_val else {}
        first = dataclasses.replace(first, threshold=cut)
        scored = [first, dataclasses.replace(get_protocol(protocols[0]), name="fixed"), *protocols[1:]]
    elif evaluate_val:
        val_metrics = evaluate(model, val_set, cfg, device, desc=f"{prefix}val", protocols=protocols[:1]).metrics
    memo = PredictionMemo() if text_controls else None
    test = evaluate(model, test_set, cfg, device, desc=f"{prefix}test", evaluators=evaluators, protocols=scored,
                    memo=memo)
    controls = evaluate_text_controls(model, test_set, cfg, device, protocol=first, memo=memo) if text_controls else {}
    return Scored(test, val_metrics, controls, None if model.zero_shot else first.threshold, val_cuts)


def all_kinds(meter: RISMetrics) -> list[str]:
    """Expression kinds seen by any process (every process needs the same list to reduce per kind)."""
    kinds = meter.kinds()
    if not dist.active():
        return kinds
    import torch.distributed as tdist

    gathered: list[list[str]] = [[] for _ in range(dist.world_size())]
    tdist.all_gather_object(gathered, kinds)
    return sorted({k for ks in gathered for k in ks})


def build_dataset(data: DataConfig, model_cfg: ModelConfig, split: str, train: bool) -> ReferDataset:
    limit = data.max_train_samples if train else data.max_eval_samples
    return ReferDataset(data.data_root, data.dataset, data.split_by, split, data.images_dir(),
                        image_size=model_cfg.image_size, context_length=model_cfg.context_length,
                        keep_original_mask=not train, max_samples=limit,
                        sample_order="spread" if train and data.train_subset == "spread" else "first")


def stage2_set(train_set: ReferDataset, data: DataConfig, model_cfg: ModelConfig, cfg: TrainConfig) -> ReferDataset:
    """Stage 2's train sentences: stage 1's, or the fewer that ``cfg.stage2_max_samples`` keeps."""
    cap = cfg.stage2_max_samples
    if cap is None or cap >= len(train_set) or not model_cfg.components.decoder:
        return train_set
    return train_set.limited(cap, "spread" if data.train_subset == "spread" else "first")


# TrainConfig fields that change how a run is executed, never its numbers (stage1_key leaves them out)
RUNTIME_FIELDS: tuple[str, ...] = ("progress", "num_workers", "pin_memory", "persistent_workers", "prefetch_factor",
                                   "learning_curve", "curve_samples")
_TRAIN_DEFAULTS = TrainConfig()


def stage1_key(model_cfg: ModelConfig, train_cfg: TrainConfig, data_cfg: DataConfig) -> str:
    """Identity of a variant's stage-1 training. The decoder is built after every stage-1 module and stays
    frozen (in eval mode) during stage 1, so variants that differ only in the decoder flag and in stage-2
    settings train identical stage-1 weights; this key is the same for them."""
    comp = dataclasses.replace(model_cfg.components, decoder=False)
    m = dataclasses.replace(model_cfg, components=comp, decoder_dims=(0, 0, 0, 0), decoder_layers=None)
    runtime = {k: getattr(_TRAIN_DEFAULTS, k) for k in RUNTIME_FIELDS}  # how the data is fed, not what is learnt
    # the cut is read after training (TrainConfig.threshold_from_val): it never changes the weights
    t = dataclasses.replace(train_cfg, stage2_epochs=0, decoder_lr=0.0, eval_batch_size=0, threshold_from_val=False,
                            stage2_max_samples=None, **runtime)
    return f"{m.config_hash()}-{t.config_hash()}-{data_cfg.config_hash()}"


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
            cached = Path(stage1_cache) / f"{stage1_key(model_cfg, train_cfg, data_cfg)}.pt"
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
                _save_atomic({"model": model.stage_state_dict(1), "history_keys": keys, "history": table}, cached)
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


CHECKPOINT_FORMAT = "risclip-model-1"


def scoring_of(scored: Scored, cfg: TrainConfig, protocol: str = "ours") -> dict:
    """How a run's test masks were made, for its checkpoint: the sigmoid cut (None for a zero-shot variant,
    whose rule is ``ModelConfig.tau``), the rule that chose it, the protocol, and the autocast the evaluation
    ran under (``TrainConfig.amp`` on CUDA, ``cpu_amp`` on a CPU). :func:`risclip.predict.predict` applies
    all of it, so a served mask is the mask the report scored."""
    if scored.threshold is None:
        rule = "zero-shot: min-max-normalised cosine map > tau"
    elif scored.val_cuts:
        rule = f"best val mIoU among sigmoid cuts {min(scored.val_cuts):.2f}..{max(scored.val_cuts):.2f}"
    else:
        rule = f"protocol {protocol}'s own cut"
    return {"threshold": scored.threshold, "rule": rule, "protocol": protocol,
            "amp": bool(cfg.amp), "cpu_amp": bool(cfg.cpu_amp)}


def save_checkpoint(model: RISCLIP, path: str | Path, run_key: str = "", scoring: dict | None = None) -> None:
    """A trained variant as one self-describing file: its model config (components, backbone name and
    weights, sizes), every non-CLIP weight and, once the run has been scored, ``scoring``
    (:func:`scoring_of`: the cut and precision its test masks were made with). The frozen CLIP is not
    stored: it comes from the config's ``pretrained`` (an open_clip tag or a local file), as it did in
    training."""
    obj = {"format": CHECKPOINT_FORMAT, "model_config": model.cfg.to_dict(), "run_key": run_key,
           "model": model.component_state_dict()}
    if scoring is not None:
        obj["scoring"] = scoring
    _save_atomic(obj, Path(path))


def read_scoring(path: str | Path) -> dict | None:
    """The ``scoring`` a checkpoint carries (:func:`scoring_of`), or None for one written before it was stored."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("scoring") if isinstance(state, dict) else None


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu",
                    model_cfg: ModelConfig | None = None) -> RISCLIP:
    """Build the variant a checkpoint describes (``model.pt`` of :func:`run_variant`, or a ``stage{n}.pt``
    training checkpoint, which also carries its config) and load its weights. ``model_cfg`` overrides the
    stored config (e.g. to point ``pretrained`` at the CLIP weights on this machine); weights that do
    not fit it raise a ValueError that says which variant the checkpoint holds."""
    state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path}: not a RISCLIP checkpoint (no component weights in it)")
    stored = ModelConfig.from_dict(state["model_config"]) if "model_config" in state else None
    cfg = model_cfg or stored
    if cfg is None:
        raise ValueError(f"{path}: an old checkpoint without its model config; pass the config explicitly")
    model = RISCLIP.from_config(cfg).to(device)
    try:
        model.load_component_state_dict(state["model"])
    except (ValueError, RuntimeError) as e:
        held = f" (it holds {stored.components} on {stored.clip_model})" if stored is not None else ""
        raise ValueError(f"{path}: checkpoint does not fit {cfg.components} on {cfg.clip_model}{held}: "
                         f"{str(e).splitlines()[0][:200]}") from None
    model.set_stage(None)
    return model
