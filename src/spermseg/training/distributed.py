"""Distributed data parallel (DDP) helpers for ``torchrun --nproc-per-node N spermseg train ...``.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`init_distributed` reads them and starts the
process group with NCCL on CUDA and gloo on the CPU. Multi-node runs work the same way through torchrun's
rendezvous flags. Without those variables everything here is a no-op for a single process.

Data sharding: the training set lives in memory in every process, so instead of a DataLoader with a
DistributedSampler each rank takes its share of one epoch permutation that all ranks compute from the same seed
(:func:`shard_indices`), padded so that every rank runs the same number of steps (as DistributedSampler does).
Only rank 0 validates and writes files; the others wait at a barrier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        """True in a multi-process run."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0


def env_info() -> DistInfo:
    """The rank layout from torchrun's environment variables (single process when they are absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Start the process group when launched by torchrun; pick this rank's device.

    Args:
        device: the requested device; on CUDA each rank uses ``cuda:LOCAL_RANK``.

    Returns:
        ``(info, device)``.
    """
    import torch
    import torch.distributed as dist

    info = env_info()
    if not info.enabled:
        return info, device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(info.rank, info.world_size, info.local_rank, backend), device


def shutdown_distributed(info: DistInfo) -> None:
    """Destroy the process group started by :func:`init_distributed` (no-op for one process)."""
    import torch.distributed as dist

    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for all ranks (no-op for one process)."""
    import torch.distributed as dist

    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: float, info: DistInfo, device: torch.device) -> float:
    """Mean of a float over ranks (for logging the loss of all ranks)."""
    import torch
    import torch.distributed as dist

    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def shard_indices(n: int, epoch_seed: int, info: DistInfo, shuffle: bool = True) -> list[int]:
    """This rank's sample indices for one epoch, like ``DistributedSampler`` over an in-memory index.

    All ranks draw the same permutation from ``epoch_seed``; it is padded by repeating its start to a multiple of
    the world size, and rank ``r`` takes every ``world_size``-th index from ``r``.

    Args:
        n: number of training samples.
        epoch_seed: seed of this epoch's permutation (identical on every rank).
        info: the rank layout.
        shuffle: permute (training) or keep the order.

    Returns:
        ``ceil(n / world_size)`` indices.
    """
    import numpy as np

    order = np.random.default_rng(epoch_seed).permutation(n) if shuffle else np.arange(n)
    per_rank = -(-n // info.world_size)
    total = per_rank * info.world_size
    if total > n:
        order = np.concatenate([order, order[: total - n]])
    return [int(i) for i in order[info.rank : total : info.world_size]]
