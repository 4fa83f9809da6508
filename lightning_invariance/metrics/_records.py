"""Metric states whose shape only the data reveals (a layer's width), kept in order through every merge.

TorchMetrics merges states of fixed shape (sums, maxima) by itself. A few statistics here have a shape set by the
first batch (the unit count of the variance measure, the width of the fitted maps, the normaliser's boundary rows)
or must be merged in order (Chan's formula, pairs across a cut). They are kept as *records* in one list state with
``dist_reduce_fx="cat"``: each record is a float64 vector ``[length, count, (ndim, *shape) per tensor, values...]``
whose bits travel as a float32 vector. That is the one form TorchMetrics can concatenate from every path without
knowing the shapes:

- ``forward`` and ``merge_state`` append the incoming records before this metric's own (TorchMetrics puts the
  incoming state first);
- a distributed sync concatenates every process's records in rank order, and a process that saw nothing adds
  TorchMetrics' empty float32 placeholder, which decodes to no record.

Metrics read the records back with :func:`read_records`, in order, and fold them; ``update`` folds them into one
record so the list stays short.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["FoldedRecords", "fold_records", "make_record", "read_records"]


def make_record(*tensors: Tensor) -> Tensor:
    """One record holding ``tensors`` (any shapes; stored as float64), as the float32 vector a list state keeps."""
    header: list[float] = [float(len(tensors))]
    for tensor in tensors:
        header += [float(tensor.ndim), *map(float, tensor.shape)]
    length = 1 + len(header) + sum(tensor.numel() for tensor in tensors)
    record = torch.empty(length, dtype=torch.float64, device=tensors[0].device if tensors else None)
    record[: 1 + len(header)] = torch.tensor([float(length), *header], dtype=torch.float64)
    start = 1 + len(header)
    for tensor in tensors:
        record[start : start + tensor.numel()] = tensor.detach().reshape(-1)
        start += tensor.numel()
    return record.view(torch.float32)


def read_records(state: Sequence[Tensor] | Tensor) -> list[tuple[Tensor, ...]]:
    """The records of a list state (or of the tensor a sync made of it), in order, as tuples of float64 tensors."""
    parts = [state] if isinstance(state, Tensor) else list(state)
    parts = [part.reshape(-1) for part in parts if part.numel()]
    if not parts:
        return []
    if any(part.dtype != torch.float32 for part in parts):
        raise RuntimeError("A record state was converted from float32 (set_dtype?); its records cannot be read.")
    flat = torch.cat(parts).view(torch.float64)
    sizes = flat
    records, start = [], 0
    while start < flat.numel():
        length = int(sizes[start])
        count, cursor = int(sizes[start + 1]), start + 2
        shapes = []
        for _ in range(count):
            ndim = int(sizes[cursor])
            shapes.append(tuple(int(d) for d in sizes[cursor + 1 : cursor + 1 + ndim]))
            cursor += 1 + ndim
        tensors = []
        for shape in shapes:
            numel = 1
            for d in shape:
                numel *= d
            tensors.append(flat[cursor : cursor + numel].reshape(shape))
            cursor += numel
        records.append(tuple(tensors))
        start += length
    return records


def fold_records(
    state: Sequence[Tensor] | Tensor, merge: Callable[[tuple[Tensor, ...], tuple[Tensor, ...]], tuple[Tensor, ...]]
) -> tuple[Tensor, ...] | None:
    """The records of a state merged left to right with ``merge(earlier, later)``; ``None`` when there are none."""
    records = read_records(state)
    if not records:
        return None
    folded = records[0]
    for record in records[1:]:
        folded = merge(folded, record)
    return folded


class FoldedRecords:
    """A record list state kept merged and decoded between updates: ``update`` adds to it without a host sync.

    Declared on the metric class (``sums = FoldedRecords(merge)``) and registered with ``add_state(name, [],
    dist_reduce_fx="cat")``. :meth:`add` merges a batch's tensors into the decoded value. Decoding a record reads its
    header back from the device, so it happens only when there are records to read (after ``forward``,
    ``merge_state``, a sync or loading a state). Reading the state, as TorchMetrics does for ``forward``, a sync,
    ``state_dict``, ``to()`` and pickling, encodes the value as one record; setting it (``reset``, a sync, a merge)
    replaces the value.
    """

    def __init__(self, merge: Callable[[tuple[Tensor, ...], tuple[Tensor, ...]], tuple[Tensor, ...]]) -> None:
        self.merge = merge

    def __set_name__(self, owner: type, name: str) -> None:
        self.live_key, self.records_key = f"_{name}_live", f"_{name}_records"

    def __get__(self, metric: object, owner: type | None = None) -> Any:
        if metric is None:
            return self
        live = metric.__dict__.get(self.live_key)
        if live is not None:
            metric.__dict__.update({self.records_key: [make_record(*live)], self.live_key: None})
        return metric.__dict__.get(self.records_key, [])

    def __set__(self, metric: object, records: list[Tensor] | Tensor) -> None:
        metric.__dict__.update({self.records_key: records, self.live_key: None})

    def add(self, metric: object, tensors: tuple[Tensor, ...], device: torch.device) -> None:
        """Merge ``tensors`` (a later batch) into the value, kept on ``device`` (the metric's states' device).

        ``merge`` may raise for a batch of another shape; the value is then left as it was.
        """
        tensors = tuple(tensor.to(device) for tensor in tensors)
        earlier = self.folded(metric)
        if earlier is not None:
            tensors = self.merge(tuple(tensor.to(device) for tensor in earlier), tensors)
        metric.__dict__.update({self.records_key: [], self.live_key: tensors})

    def folded(self, metric: object) -> tuple[Tensor, ...] | None:
        """The value merged from everything added and every record, in order; ``None`` when empty. Reads only."""
        live = metric.__dict__.get(self.live_key)
        return live if live is not None else fold_records(metric.__dict__.get(self.records_key, []), self.merge)
