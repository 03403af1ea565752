"""torch.distributed (torchrun) for the trainers: rank facts, barriers, sharding batches, DDP wrapping.

Without torchrun every function is a no-op for one process, so the trainers call them unconditionally."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a torchrun job; ``world == 1`` is a plain single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def dist_info() -> DistInfo:
    """The current process group's rank and size (``DistInfo()`` when torch.distributed is not initialised)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return DistInfo()
    return DistInfo(
        torch.distributed.get_rank(), torch.distributed.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    )


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun job described by ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; a no-op without them.

    The backend is NCCL when the process trains on CUDA (each rank takes GPU ``LOCAL_RANK``), else gloo. Called
    once per process (by ``daseg run``); a second call returns the existing group's `DistInfo`.
    """
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1 or not torch.distributed.is_available():
        return DistInfo()
    if torch.distributed.is_initialized():
        return dist_info()
    local = int(os.environ.get("LOCAL_RANK", 0))
    cuda = device != "cpu" and torch.cuda.is_available() and not str(device).startswith("cpu")
    if cuda:
        torch.cuda.set_device(local)
    torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return dist_info()


def local_device(device: torch.device) -> torch.device:
    """A CUDA device pinned to this rank's GPU (``cuda:LOCAL_RANK``) under torchrun; other devices unchanged."""
    info = dist_info()
    if device.type == "cuda" and info.distributed and device.index is None:
        return torch.device("cuda", info.local_rank)
    return device


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that logs and writes files."""
    return dist_info().rank == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist_info().distributed:
        torch.distributed.barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (decisions such as 'resume this stage' must agree); identity alone."""
    if not dist_info().distributed:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def shard(indices: Tensor, rank: int | None = None, world: int | None = None) -> Tensor:
    """This rank's disjoint share ``indices[rank::world]`` of an index list every rank drew identically.

    All ranks draw the same seeded permutation (or global batch) and each keeps every ``world``-th entry, so the
    shares are disjoint and together cover the list; no sampler state has to be exchanged.
    """
    info = dist_info()
    rank = info.rank if rank is None else rank
    world = info.world if world is None else world
    return indices[rank::world]


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel when running distributed, else ``module`` itself.

    On CUDA, BatchNorm layers become SyncBatchNorm first (statistics over the global batch); on CPU/gloo they stay
    per-rank, so a multi-process CPU run only equals a single process when the network uses instance or group
    norm. Gradients are averaged over ranks, so with mean-reduced losses a step equals one process on the global
    batch (``world`` x the per-rank batch).
    """
    if not dist_info().distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return DistributedDataParallel(module, device_ids=[device.index or 0])
    return DistributedDataParallel(module)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain network inside a DDP and/or ``torch.compile`` wrapper."""
    module = getattr(module, "_orig_mod", module)
    module = getattr(module, "module", module) if isinstance(module, nn.parallel.DistributedDataParallel) else module
    return getattr(module, "_orig_mod", module)
