"""The measured inputs under DDP: the same set, in the same order, as one process would measure.

Lightning's ``DistributedSampler`` deals validation samples round-robin: with P processes, global sample ``i`` goes to
process ``i mod P`` as its ``i // P``-th sample, and the last samples are padded with repeats of the first. Each
process caches its first ``ceil(max_samples / P)`` inputs; :func:`my_share` gathers every cache, undoes the dealing
(dropping the padding), keeps the first ``max_samples``, and gives each process a consecutive share, in rank order.
Summed states are then those of one process, and the normaliser, which pairs samples by their order and joins
processes in rank order, sees one process's stream.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_invariance.batches import Batch, batch_device, batch_size, batch_to, concat_batches, slice_batch

__all__ = ["Share", "cache_size", "my_share"]

Cached = list[tuple[Batch, Tensor | None]]


def cache_size(max_samples: int, world_size: int) -> int:
    """How many inputs each process caches so that the first ``max_samples`` of all processes are among them."""
    return math.ceil(max_samples / max(1, world_size))


class Share(NamedTuple):
    """This process's inputs and labels, where they start in the global order, and how many there are in all."""

    inputs: Batch
    labels: Tensor | None
    start: int
    total: int


def my_share(cached: Cached, max_samples: int, dataset_size: int | None) -> Share:
    """Gather the caches of every process (a collective call under DDP) and return this process's share."""
    inputs = concat_batches([x for x, _ in cached]) if cached else None
    labels = torch.cat([y for _, y in cached]) if cached and cached[0][1] is not None else None
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        if inputs is None:
            raise ValueError("no validation input was cached")
        total = min(max_samples, batch_size(inputs))
        return Share(slice_batch(inputs, 0, total), None if labels is None else labels[:total], 0, total)
    world, rank = dist.get_world_size(), dist.get_rank()
    gathered: list = [None] * world
    local = None if inputs is None else (batch_to(inputs, "cpu"), None if labels is None else labels.cpu())
    dist.all_gather_object(gathered, local)
    parts = [part for part in gathered if part is not None]
    if not parts:
        raise ValueError("no validation input was cached by any process")
    depth = max(batch_size(part[0]) for part in parts)
    order = [(r, i) for i in range(depth) for r in range(world) if gathered[r] and i < batch_size(gathered[r][0])]
    if dataset_size is not None:
        order = order[:dataset_size]  # the sampler's padding repeats the first samples at the end
    order = order[:max_samples]
    bounds = [len(order) * r // world for r in range(world + 1)]
    mine = order[bounds[rank] : bounds[rank + 1]]
    device = batch_device(inputs) if inputs is not None else torch.device("cpu")
    if not mine:
        empty = batch_to(slice_batch(parts[0][0], 0, 0), device)
        return Share(empty, None if parts[0][1] is None else parts[0][1][:0].to(device), bounds[rank], len(order))
    share_inputs = batch_to(concat_batches([slice_batch(gathered[r][0], i, i + 1) for r, i in mine]), device)
    share_labels = None if parts[0][1] is None else torch.stack([gathered[r][1][i] for r, i in mine]).to(device)
    return Share(share_inputs, share_labels, bounds[rank], len(order))
