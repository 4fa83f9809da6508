"""Batches the probe, the metrics' helpers and the callback handle: a tensor, a dict of tensors, or graphs.

A batch has the sample axis first: a tensor ``(N, ...)``, or a mapping ``{field: (N, ...)}`` whose tensors all hold
``N`` samples (e.g. ``{"pos": (N, P, 3), "x": (N, P, F), "adj": (N, P, P)}``: point clouds or dense graphs with
their per-node fields), or a torch_geometric ``Batch`` whose samples are its graphs (then the captured features are
graph-level: one row per graph). These functions slice, move, copy and concatenate every kind along the sample
axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_invariance._graph_batches import graph_range, join_graph_batches
from lightning_invariance.groups.base import Group

__all__ = [
    "Batch",
    "batch_device",
    "batch_size",
    "batch_to",
    "check_batch",
    "concat_batches",
    "detached_copy",
    "is_graph_batch",
    "orbit_batch",
    "slice_batch",
]

Batch = Tensor | Mapping[str, Tensor]


def is_graph_batch(x: Any) -> bool:
    """Whether ``x`` is a torch_geometric ``Batch`` (duck-typed: torch_geometric is optional)."""
    return all(hasattr(x, name) for name in ("num_graphs", "to_data_list", "index_select", "from_data_list"))


def check_batch(x: Any, what: str = "the input batch") -> None:
    """Require a tensor with a sample axis, a mapping of tensors that agree on the number of samples, or graphs."""
    if is_graph_batch(x):
        return
    if isinstance(x, Tensor):
        if x.ndim < 1:
            raise ValueError(f"Expected {what} to have a sample axis first, got a 0-d tensor.")
        return
    if not isinstance(x, Mapping) or not x:
        raise TypeError(
            f"Expected {what} to be a torch.Tensor, a dict of tensors (fields) or a torch_geometric Batch, but got "
            f"{type(x).__name__}."
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
    """The number of samples (graphs, for a torch_geometric batch)."""
    if is_graph_batch(x):
        return int(x.num_graphs)  # type: ignore[union-attr]
    return x.shape[0] if isinstance(x, Tensor) else next(iter(x.values())).shape[0]


def batch_device(x: Batch) -> torch.device:
    """The device of the batch's (first) tensor."""
    if is_graph_batch(x):
        return next(v for v in x.to_dict().values() if isinstance(v, Tensor)).device  # type: ignore[union-attr]
    return x.device if isinstance(x, Tensor) else next(iter(x.values())).device


def slice_batch(x: Batch, start: int, stop: int) -> Batch:
    """Samples ``start`` to ``stop``."""
    if is_graph_batch(x):
        return graph_range(x, start, stop)
    return x[start:stop] if isinstance(x, Tensor) else {key: value[start:stop] for key, value in x.items()}


def batch_to(x: Batch, device: torch.device | str) -> Batch:
    """The batch on ``device``."""
    return (
        x.to(device)
        if isinstance(x, Tensor) or is_graph_batch(x)
        else {key: value.to(device) for key, value in x.items()}
    )


def detached_copy(x: Batch) -> Batch:
    """A detached copy that owns its memory (safe to keep after the loader reuses its buffers)."""
    if is_graph_batch(x):
        return x.detach().clone()  # type: ignore[union-attr]
    if isinstance(x, Tensor):
        return x.detach().clone()
    return {key: value.detach().clone() for key, value in x.items()}


def concat_batches(parts: Sequence[Batch]) -> Batch:
    """The batches one after another along the sample axis."""
    if is_graph_batch(parts[0]):
        return join_graph_batches(parts)
    if isinstance(parts[0], Tensor):
        return torch.cat(list(parts))  # type: ignore[arg-type]
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}  # type: ignore[index]


def orbit_batch(group: Group, x: Batch) -> Batch:
    """Every element's copy of ``x`` in one batch, element-major: ``|G| x N`` samples, identity first."""
    if isinstance(x, Tensor):
        return group.orbit(x).flatten(0, 1)
    if is_graph_batch(x) and hasattr(group, "whole_orbit"):  # built at once (GraphPermutation)
        return group.whole_orbit(x)
    return concat_batches([group.act(x, k) for k in range(len(group))])  # type: ignore[arg-type]
