"""Batches the probe, the metrics' helpers and the callback handle: a tensor, or a dict of tensors (fields).

A batch has the sample axis first: a tensor ``(N, ...)``, or a mapping ``{field: (N, ...)}`` whose tensors all hold
``N`` samples (e.g. ``{"pos": (N, P, 3), "x": (N, P, F), "adj": (N, P, P)}``: point clouds or dense graphs with
their per-node fields). These functions slice, move, copy and concatenate either kind along the sample axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_invariance.groups.base import Group

__all__ = [
    "Batch",
    "batch_device",
    "batch_size",
    "batch_to",
    "check_batch",
    "concat_batches",
    "detached_copy",
    "orbit_batch",
    "slice_batch",
]

Batch = Tensor | Mapping[str, Tensor]


def check_batch(x: Any, what: str = "the input batch") -> None:
    """Require a tensor with a sample axis, or a non-empty mapping of tensors that agree on the number of samples."""
    if isinstance(x, Tensor):
        if x.ndim < 1:
            raise ValueError(f"Expected {what} to have a sample axis first, got a 0-d tensor.")
        return
    if not isinstance(x, Mapping) or not x:
        raise TypeError(
            f"Expected {what} to be a torch.Tensor or a dict of tensors (fields), but got {type(x).__name__}."
        )
    sizes = {}
    for key, value in x.items():
        if not isinstance(value, Tensor) or value.ndim < 1:
            raise TypeError(
                f"Expected every field of {what} to be a tensor with a sample axis first; field {key!r} is a "
                f"{type(value).__name__}{'' if not isinstance(value, Tensor) else ' without axes'}."
            )
        sizes[key] = value.shape[0]
    if len(set(sizes.values())) > 1:
        raise ValueError(f"The fields of {what} hold different numbers of samples (axis 0): {sizes}.")


def batch_size(x: Batch) -> int:
    """The number of samples."""
    return x.shape[0] if isinstance(x, Tensor) else next(iter(x.values())).shape[0]


def batch_device(x: Batch) -> torch.device:
    """The device of the batch's (first) tensor."""
    return x.device if isinstance(x, Tensor) else next(iter(x.values())).device


def slice_batch(x: Batch, start: int, stop: int) -> Batch:
    """Samples ``start`` to ``stop``."""
    return x[start:stop] if isinstance(x, Tensor) else {key: value[start:stop] for key, value in x.items()}


def batch_to(x: Batch, device: torch.device | str) -> Batch:
    """The batch on ``device``."""
    return x.to(device) if isinstance(x, Tensor) else {key: value.to(device) for key, value in x.items()}


def detached_copy(x: Batch) -> Batch:
    """A detached copy that owns its memory (safe to keep after the loader reuses its buffers)."""
    if isinstance(x, Tensor):
        return x.detach().clone()
    return {key: value.detach().clone() for key, value in x.items()}


def concat_batches(parts: Sequence[Batch]) -> Batch:
    """The batches one after another along the sample axis."""
    if isinstance(parts[0], Tensor):
        return torch.cat(list(parts))  # type: ignore[arg-type]
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}  # type: ignore[index]


def orbit_batch(group: Group, x: Batch) -> Batch:
    """Every element's copy of ``x`` in one batch, element-major: ``|G| x N`` samples, identity first."""
    if isinstance(x, Tensor):
        return group.orbit(x).flatten(0, 1)
    return concat_batches([group.act(x, k) for k in range(len(group))])  # type: ignore[arg-type]
