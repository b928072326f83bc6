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

:func:`run_variant` is the spine the harness calls: it trains and scores one variant.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from .config import DataConfig, ModelConfig, TrainConfig
from .data.refer import ReferDataset, refer_collate
from .losses import dice_focal_loss
from .metrics import RISMetrics
from .model import RISCLIP, RISOutput

EpochCallback = Callable[[int, int, dict[str, float]], None]  # (stage, epoch, {"loss": ...})
BatchCallback = Callable[[dict, RISOutput], None]  # (evaluation batch, model output)


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


def resolve_device(name: str) -> torch.device:
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


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def checkpoint_path(workdir: Path, stage: int) -> Path:
    return Path(workdir) / f"stage{stage}.pt"


def train_stage(model: RISCLIP, dataset: ReferDataset, stage: int, cfg: TrainConfig, workdir: Path | None,
                device: torch.device, on_epoch: EpochCallback | None = None, run_key: str = "") -> list[dict]:
    """Train ``stage``'s parameters for its epochs; resume from ``workdir/stage{n}.pt`` if it is there."""
    epochs = cfg.stage1_epochs if stage == 1 else cfg.stage2_epochs
    params = model.stage_parameters(stage)
    if not params or epochs <= 0:
        return []
    model.set_stage(stage)
    lr = cfg.lr if stage == 1 else cfg.decoder_lr
    scales = {"cfe": cfg.cfe_lr_scale, "ske": cfg.ske_lr_scale}
    groups = [{"params": ps, "lr": lr * scales.get(name, 1.0), "name": name}
              for name, ps in model.stage_parameter_groups(stage).items()]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(dataset) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(epochs * steps_per_epoch, cfg.warmup_fraction))
    ckpt = checkpoint_path(workdir, stage) if workdir is not None else None
    start_epoch, history = 0, []
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        if state.get("run_key") == run_key:
            model.load_component_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch = int(state["epoch"]) + 1
            history = [dict(zip(state["history_keys"], row)) for row in state["history"].tolist()]
    grid = model.grid
    for epoch in range(start_epoch, epochs):
        model.set_stage(stage)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + stage * 1009 + epoch)
        loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=RandomSampler(dataset, generator=gen),
                            collate_fn=refer_collate, num_workers=cfg.num_workers, drop_last=False)
        total, count, t0 = 0.0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"stage {stage} epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                   disable=None if cfg.progress is None else not cfg.progress)
        for step, batch in enumerate(bar):
            images = batch["image"].to(device, non_blocking=True)
            tokens = batch["tokens"].to(device, non_blocking=True)
            mask = batch["mask"].to(device, non_blocking=True)
            with _autocast(device, cfg.amp):
                out = model(images, tokens)
            if stage == 1:
                loss = dice_focal_loss(out.patch_logits, patch_target(mask, grid, cfg.patch_target), cfg.dice_weight,
                                       cfg.focal_weight, cfg.focal_alpha, cfg.focal_gamma)
            else:
                loss = dice_focal_loss(out.mask_logits, mask, cfg.dice_weight, cfg.focal_weight, cfg.focal_alpha,
                                       cfg.focal_gamma)
            if not torch.isfinite(loss):
                kept = f"; the last good checkpoint is {ckpt}" if ckpt is not None and ckpt.is_file() else ""
                raise NonFiniteLossError(f"non-finite loss ({loss.item()}) in stage {stage}, epoch {epoch + 1}, "
                                         f"step {step + 1}: training stopped{kept}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            total += loss.item() * images.shape[0]
            count += images.shape[0]
            bar.set_postfix(loss=f"{total / count:.4f}", img_s=f"{count / (time.perf_counter() - t0):.1f}")
        row = {"stage": stage, "epoch": epoch + 1, "loss": total / max(1, count),
               "seconds": time.perf_counter() - t0, "lr": scheduler.get_last_lr()[0]}
        history.append(row)
        if ckpt is not None:
            keys = list(row)
            _save_atomic({"run_key": run_key, "epoch": epoch, "model": model.component_state_dict(),
                          "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "history_keys": keys,
                          "history": torch.tensor([[float(r[k]) for k in keys] for r in history])}, ckpt)
        if on_epoch is not None:
            on_epoch(stage, epoch + 1, row)
    model.set_stage(None)
    return history


@torch.no_grad()
def evaluate(model: RISCLIP, dataset: ReferDataset, cfg: TrainConfig, device: torch.device,
             desc: str = "eval", on_batch: BatchCallback | None = None) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """mIoU, oIoU, P@X at each image's original resolution, and the same per expression kind.

    ``on_batch(batch, output)`` sees every batch with the model's output (extra scoring without a
    second forward pass)."""
    if not dataset.keep_original_mask:
        raise ValueError("evaluate needs a dataset built with keep_original_mask=True")
    model.set_stage(None)
    metrics = RISMetrics()
    loader = DataLoader(dataset, batch_size=cfg.eval_batch_size, shuffle=False, collate_fn=refer_collate,
                        num_workers=cfg.num_workers)
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False,
                      disable=None if cfg.progress is None else not cfg.progress):
        with _autocast(device, cfg.amp):
            out = model(batch["image"].to(device), batch["tokens"].to(device))
        sizes = [(m["orig_h"], m["orig_w"]) for m in batch["meta"]]
        preds = model.binarise(out, sizes)
        targets = [t.to(device) for t in batch["orig_mask"]]
        metrics.update(preds, targets, kinds=[m["kind"] for m in batch["meta"]])
        if on_batch is not None:
            on_batch(batch, out)
    return metrics.compute(), metrics.compute_by_kind()


def build_dataset(data: DataConfig, model_cfg: ModelConfig, split: str, train: bool) -> ReferDataset:
    limit = data.max_train_samples if train else data.max_eval_samples
    return ReferDataset(data.data_root, data.dataset, data.split_by, split, data.images_dir(),
                        image_size=model_cfg.image_size, context_length=model_cfg.context_length,
                        keep_original_mask=not train, max_samples=limit)


def stage1_key(model_cfg: ModelConfig, train_cfg: TrainConfig, data_cfg: DataConfig) -> str:
    """Identity of a variant's stage-1 training. The decoder is built after every stage-1 module and stays
    frozen (in eval mode) during stage 1, so variants that differ only in the decoder flag and in stage-2
    settings train identical stage-1 weights; this key is the same for them."""
    comp = dataclasses.replace(model_cfg.components, decoder=False)
    m = dataclasses.replace(model_cfg, components=comp, decoder_dims=(0, 0, 0, 0), decoder_layers=None)
    t = dataclasses.replace(train_cfg, stage2_epochs=0, decoder_lr=0.0, progress=None, num_workers=0,
                            eval_batch_size=0)
    return f"{m.config_hash()}-{t.config_hash()}-{data_cfg.config_hash()}"


def run_variant(model_cfg: ModelConfig, train_cfg: TrainConfig, data_cfg: DataConfig, workdir: str | Path | None = None,
                eval_split: str | None = None, on_epoch: EpochCallback | None = None,
                evaluate_val: bool = True, on_model: Callable[[RISCLIP], None] | None = None,
                stage1_cache: str | Path | None = None, on_test_batch: BatchCallback | None = None) -> RunResult:
    """Train (both stages, as the components require) and score one variant.

    ``workdir`` holds the checkpoints (and makes an interrupted run resumable); ``eval_split`` defaults
    to the data config's test split; ``on_model`` is called with the trained model before evaluation
    (the harness draws its prediction grid there). ``stage1_cache`` is a folder of finished stage-1
    weights keyed by :func:`stage1_key`: a variant whose stage 1 was already trained (e.g. rung 4 after
    rung 3 with the same seed) loads it instead of training it again (``RunResult.stage1_reused``).
    ``on_test_batch`` is passed to :func:`evaluate` on the evaluation split.
    """
    device = resolve_device(train_cfg.device)
    torch.manual_seed(train_cfg.seed)
    model = RISCLIP.from_config(model_cfg).to(device)
    run_key = f"{model_cfg.config_hash()}-{train_cfg.config_hash()}-{data_cfg.config_hash()}"
    wd = Path(workdir) if workdir is not None else None
    if wd is not None:
        wd.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    t0 = time.perf_counter()
    stage1_reused = False
    if model_cfg.components.trains_anything:
        train_set = build_dataset(data_cfg, model_cfg, data_cfg.train_split, train=True)
        cached = None
        if stage1_cache is not None and model_cfg.components.trains_patch_level:
            cached = Path(stage1_cache) / f"{stage1_key(model_cfg, train_cfg, data_cfg)}.pt"
        if cached is not None and cached.is_file():
            state = torch.load(cached, map_location=device, weights_only=True)
            model.load_stage_state_dict(1, state["model"])
            history += [dict(zip(state["history_keys"], row), reused=1.0) for row in state["history"].tolist()]
            stage1_reused = True
        else:
            h1 = train_stage(model, train_set, 1, train_cfg, wd, device, on_epoch, run_key)
            history += h1
            if cached is not None and h1:
                cached.parent.mkdir(parents=True, exist_ok=True)
                keys = list(h1[0])
                _save_atomic({"model": model.stage_state_dict(1), "history_keys": keys,
                              "history": torch.tensor([[float(r[k]) for k in keys] for r in h1])}, cached)
        history += train_stage(model, train_set, 2, train_cfg, wd, device, on_epoch, run_key)
    train_seconds = time.perf_counter() - t0
    if on_model is not None:
        on_model(model)
        model.set_stage(None)
    t1 = time.perf_counter()
    val_metrics: dict[str, float] = {}
    if evaluate_val:
        val_metrics, _ = evaluate(model, build_dataset(data_cfg, model_cfg, data_cfg.val_split, train=False),
                                  train_cfg, device, desc="val")
    test_set = build_dataset(data_cfg, model_cfg, eval_split or data_cfg.test_split, train=False)
    metrics, by_kind = evaluate(model, test_set, train_cfg, device, desc="test", on_batch=on_test_batch)
    return RunResult(
        components=str(model_cfg.components), model_hash=model_cfg.config_hash(), train_hash=train_cfg.config_hash(),
        metrics=metrics, by_kind=by_kind, val_metrics=val_metrics, history=history, train_seconds=train_seconds,
        eval_seconds=time.perf_counter() - t1, eval_samples=len(test_set), stage1_reused=stage1_reused,
    )
