"""Data-parallel training across processes started by ``torchrun`` (one process per device).

``torchrun --nproc_per_node=N -m bench.ablate ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in
every process; :func:`init` reads them and joins the process group: NCCL when the process has a CUDA
device, gloo on the CPU. Without those variables everything here is a no-op for one process, so the
same code runs alone or under torchrun.

Conventions the engine follows (``risclip.engine``):

* ``TrainConfig.batch_size`` is the global batch: each of N processes takes ``batch_size / N`` samples
  per step (it must divide), and DistributedDataParallel averages gradients, so a step sees the same
  samples as a one-process step would, spread over the processes.
* every epoch's order is the one-process order (a permutation from the (seed, stage, epoch) generator);
  process r takes every N-th sample of it starting at r (:class:`ShardedOrder`), the tail padded by
  wrapping round so that every process runs the same number of steps;
* evaluation shards the samples without padding (each sample is scored exactly once) and reduces the
  metric *sums* across processes (intersections, unions, IoU sums and counts), never a mean of means;
* only process 0 writes checkpoints, tracking runs and reports (:func:`is_main`); the others wait at
  a barrier where they would read what process 0 wrote.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(device: str = "auto") -> torch.device | None:
    """Join the process group torchrun describes (idempotent). Returns the device this process should
    use when running distributed (``cuda:LOCAL_RANK`` or cpu), or None when not under torchrun."""
    if env_world_size() <= 1:
        return None
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return torch.device("cuda", local) if use_cuda else torch.device("cpu")


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over processes (a copy; float64 sums are exact for pixel counts below 2**53)."""
    if not active():
        return t
    out = t.clone()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    moved = out.to(device)
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    return moved.to(t.device)


def broadcast_object(obj: object, src: int = 0) -> object:
    """Process ``src``'s ``obj`` on every process (decisions only process 0 can take, e.g. reuse)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_state(module: torch.nn.Module, prefix_skip: str = "clip.") -> None:
    """Process 0's parameters and buffers (BatchNorm running statistics drift per process: each sees its
    own batches) copied to every process, so that all of them evaluate and save identical weights."""
    if not active():
        return
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not name.startswith(prefix_skip):
                dist.broadcast(t, src=0)


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ShardedOrder(Sampler[int]):
    """This process's share of a one-process epoch order: ``order[rank::world]``, the order first padded by
    wrapping round to a multiple of ``world`` so that every process gets the same number of samples."""

    def __init__(self, order: list[int], rank: int, world: int) -> None:
        if world > 1 and len(order) % world:
            order = order + order[: world - len(order) % world]
        self.indices = order[rank::world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """Evaluation shard: every sample exactly once (no padding), process r takes r, r + world, ..."""
    return list(range(rank, n, world))
