"""Joining and slicing torch_geometric batches whole: one operation per attribute instead of a separation per graph.

``Batch.from_data_list(sum((b.to_data_list() for b in parts), []))`` separates every graph and collates them again:
Python work per graph and attribute, which for small graphs costs many times the model's forward pass (an orbit of
``|G|`` copies of a chunk is built this way for every chunk). :func:`join_graph_batches` gives the same batch with
one concatenation per attribute: each part's incremented attributes (``edge_index``: node numbers) are shifted by
the parts before it, as collating their graphs would shift them, and the bookkeeping that lets the result be split
into graphs again (``_slice_dict``, ``_inc_dict``, ``_num_graphs``, kept on the host) is joined likewise.
:func:`graph_range` takes consecutive graphs out of a batch the same way (``Batch.index_select`` separates each).
Batches they cannot handle that way (attributes that are not dense tensors, batches not made by
``from_data_list``) go graph by graph, as before. torch_geometric is optional; nothing here imports it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["graph_range", "join_graph_batches"]

#: Attributes collating adds (rebuilt here), as opposed to the graphs' own.
_COLLATED = ("batch", "ptr")


def join_graph_batches(parts: Sequence[Any]) -> Any:
    """The graphs of ``parts`` (torch_geometric ``Batch`` es with the same attributes), in order, in one batch."""
    if not all(_joinable(part, parts[0]) for part in parts):
        graphs = [graph for part in parts for graph in part.to_data_list()]
        return type(parts[0]).from_data_list(graphs)
    joined = copy.copy(parts[0])
    slices, increments = {}, {}
    for key in parts[0]._slice_dict:
        values, slice_parts, increment_parts = [], [], []
        value_offset, slice_offset = 0, 0
        for part in parts:
            value = part[key]
            values.append(value + value_offset if value_offset else value)
            slice_parts.append(part._slice_dict[key][:-1] + slice_offset)
            increment_parts.append(part._inc_dict[key] + value_offset)
            value_offset = value_offset + part.__inc__(key, value)
            slice_offset += int(part._slice_dict[key][-1])
        joined[key] = torch.cat(values, dim=parts[0].__cat_dim__(key, values[0]))
        slices[key] = torch.cat([*slice_parts, torch.tensor([slice_offset])])
        increments[key] = torch.cat(increment_parts)
    node_offsets, graph_offsets = _offsets([part.num_nodes for part in parts]), _offsets([p.num_graphs for p in parts])
    joined.batch = torch.cat([part.batch + offset for part, offset in zip(parts, graph_offsets[:-1], strict=True)])
    pointers = [part.ptr[:-1] + offset for part, offset in zip(parts, node_offsets[:-1], strict=True)]
    joined.ptr = torch.cat([*pointers, parts[-1].ptr[-1:] + node_offsets[-2]])
    joined._slice_dict, joined._inc_dict, joined._num_graphs = slices, increments, graph_offsets[-1]
    return joined


def graph_range(x: Any, start: int, stop: int) -> Any:
    """Graphs ``start`` to ``stop`` of the torch_geometric batch ``x``, as a batch (reads two node offsets)."""
    stop = min(stop, x.num_graphs)
    if not _joinable(x, x):
        return type(x).from_data_list(x.index_select(slice(start, stop)))
    part = copy.copy(x)
    slices, increments = {}, {}
    for key in x._slice_dict:
        value, bounds, increment = x[key], x._slice_dict[key], x._inc_dict[key]
        first, last, base = int(bounds[start]), int(bounds[stop]), int(increment[start])
        value = value.narrow(x.__cat_dim__(key, value), first, last - first)
        part[key] = value - base if base else value
        slices[key], increments[key] = bounds[start : stop + 1] - first, increment[start:stop] - base
    first_node, last_node = torch.stack([x.ptr[start], x.ptr[stop]]).tolist()
    part.batch = x.batch[first_node:last_node] - start
    part.ptr = x.ptr[start : stop + 1] - first_node
    part._slice_dict, part._inc_dict, part._num_graphs = slices, increments, stop - start
    return part


def _offsets(sizes: list[int]) -> list[int]:
    """``[0, s0, s0 + s1, ..., total]``."""
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + int(size))
    return offsets


def _joinable(part: Any, first: Any) -> bool:
    """Whether ``part`` can be joined or sliced whole (otherwise it goes graph by graph).

    It must be made by ``from_data_list`` (one increment per graph and attribute), hold dense tensors only and have
    the same attributes as ``first``.
    """
    if not all(hasattr(part, name) for name in ("_slice_dict", "_inc_dict", "_num_graphs", "batch", "ptr")):
        return False
    own = set(part.keys()) - set(_COLLATED)
    if own != set(part._slice_dict) or own != set(first._slice_dict):
        return False
    for key in own:
        value, increments = part[key], part._inc_dict.get(key)
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            return False
        if not isinstance(increments, torch.Tensor) or increments.ndim != 1:
            return False
        if not isinstance(part.__cat_dim__(key, value), int):
            return False
    return True
