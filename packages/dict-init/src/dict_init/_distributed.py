"""Thin helpers over ``torch.distributed`` that fall back to one process when it is not running."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed(group: Any = None) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def rank_and_world(group: Any = None) -> tuple[int, int]:
    if not is_distributed(group):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def all_reduce_(tensor: torch.Tensor, group: Any = None, op: Any = None) -> torch.Tensor:
    """Sum (or ``op``) ``tensor`` in place over the ranks; a no-op for one process."""
    if is_distributed(group):
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM, group=group)
    return tensor


def all_gather_int(value: int, group: Any = None) -> list[int]:
    """Every rank's ``value``, in rank order."""
    if not is_distributed(group):
        return [int(value)]
    world = dist.get_world_size(group)
    buffer = torch.zeros(world, dtype=torch.int64)
    buffer[dist.get_rank(group)] = int(value)
    dist.all_reduce(buffer, group=group)
    return [int(v) for v in buffer]


def broadcast_object(obj: Any, group: Any = None) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed(group):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def barrier(group: Any = None) -> None:
    if is_distributed(group):
        dist.barrier(group=group)
