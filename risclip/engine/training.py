"""The training loop: what each stage trains and against what (:class:`StageRule`), the optimiser and
schedule, one epoch, one stage (resumable from its checkpoint), stage 2's cache of stage-1 outputs, and the
learning curve scored after each epoch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import distributed as dist
from ..config import TrainConfig
from ..data.refer import ReferDataset, refer_collate
from ..losses import dice_focal_loss, spatial_ce
from ..model import RISCLIP, PatchLevel, RISOutput
from ..registry import PATCH_STAGE, PIXEL_STAGE
from .checkpoints import checkpoint_path, resume, save_epoch
from .hooks import Hook, NonFiniteLossError
from .loading import EpochSampler, autocast_for, epoch_order, loader_options, local_batch_size
from .scoring import sweep_cuts


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


@dataclass(frozen=True)
class StageRule:
    """What differs between the two stages, said once: epochs, base learning rate, and what the loss
    compares (stage 1: patch logits against the mask pooled to the grid; stage 2: pixel logits against
    the mask). Which parameters each stage trains is :func:`risclip.registry.stage_groups` (each component says its stage)."""

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
                with autocast_for(device, cfg):
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
            with autocast_for(device, cfg):
                out = model.pixel_level(patch, cache.out_size)
        else:
            mask = batch["mask"].to(device, non_blocking=True)
            with autocast_for(device, cfg):
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
