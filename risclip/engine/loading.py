"""Where a run's tensors come from and go: the device (``auto``, torchrun's own), datasets by split, data
loaders and the sample order of each epoch, the autocast a run computes under, and ``torch.compile``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from .. import distributed as dist
from ..config import DataConfig, ModelConfig, TrainConfig
from ..data.refer import ReferDataset
from ..kernels import compile_model, mixed_precision
from ..model import RISCLIP


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
    with torch.no_grad(), autocast_for(sample[0].device, cfg):
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


def autocast_for(device: torch.device, cfg: TrainConfig):
    """bf16 autocast on CUDA (``cfg.amp``) and on a CPU (``cfg.cpu_amp``); otherwise float32."""
    return mixed_precision(device, cuda_amp=cfg.amp, cpu_amp=cfg.cpu_amp)


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
