"""Collecting per-node rows from every process, one row per node (DDP metrics and prediction files)."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def gather_from_ranks(local: tuple[Tensor, ...] | None) -> list[tuple[Tensor, ...]]:
    """Every rank's tensors (ragged sizes allowed), moved to CPU; ``[local]`` when not distributed.

    ``None`` stands for a rank with nothing to send. Every rank must call this at the same point,
    since under ``torch.distributed`` it is a collective.
    """
    local = None if local is None else tuple(t.detach().cpu() for t in local)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [] if local is None else [local]
    gathered: list[tuple[Tensor, ...] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return [item for item in gathered if item is not None]


def first_occurrences(node_id: Tensor) -> Tensor:
    """Positions of the first occurrence of each distinct id, in ascending id order.

    A ``DistributedSampler`` pads every rank to the same length by repeating seeds, and under
    full-batch DDP every rank scores every node; keeping one row per node stops double counting.
    """
    unique, inverse = torch.unique(node_id, return_inverse=True)
    positions = torch.arange(node_id.numel(), device=node_id.device)
    first = torch.full((unique.numel(),), node_id.numel(), dtype=torch.long, device=node_id.device)
    return first.scatter_reduce_(0, inverse, positions, reduce="amin")
