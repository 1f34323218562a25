"""Distributed data parallel through ``torchrun``: process-group set-up and small collectives.

``torchrun --nproc_per_node=N -m act3d ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`init_distributed` reads them and starts a process group (NCCL on GPU, gloo on CPU).
Without those variables everything here is a single-process no-op, so library code can call
:func:`all_reduce_sum` and friends unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "gather_objects",
    "init_distributed",
    "per_rank_batch_size",
    "shutdown_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job. ``created`` marks a group this module started."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    created: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(use_cuda: bool) -> DistInfo:
    """Join the ``torchrun`` job described by the environment, if any.

    Args:
        use_cuda: pick NCCL (and bind this process to GPU ``LOCAL_RANK``) instead of gloo.

    Returns:
        The process's :class:`DistInfo`; ``world_size == 1`` without ``torchrun``.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            backend=str(dist.get_backend()),
            created=False,
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, backend=backend, created=True)


def shutdown_distributed(info: DistInfo, wait: bool = False) -> None:
    """Destroy the process group if :func:`init_distributed` created it.

    Args:
        info: what :func:`init_distributed` returned.
        wait: meet every rank at a barrier first. Use it at a clean end: without it a rank
            that finished first could tear its connections down while another still had
            work in flight (seen with gloo on CPU: an intermittent ``terminate called without
            an active exception`` abort at exit). Not after an error, where another rank may
            never arrive.
    """
    if info.created and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def per_rank_batch_size(global_batch: int, world_size: int, grad_accum: int) -> int:
    """Samples per forward pass on each rank so that one optimiser step sees ``global_batch``.

    Raises:
        ValueError: ``global_batch`` is not divisible by ``world_size * grad_accum``.
    """
    parts = world_size * grad_accum
    if global_batch % parts:
        raise ValueError(
            f"optim.batch_size={global_batch} is not divisible by world_size ({world_size}) x "
            f"optim.grad_accum ({grad_accum}) = {parts}; choose a multiple of {parts}"
        )
    return global_batch // parts


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over all ranks (in place, also returned); identity without a group."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects only)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for all ranks; no-op without a process group."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
