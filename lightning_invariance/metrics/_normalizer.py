"""The normaliser inside a metric: pair sums, plus the boundary rows that later samples and merges pair with.

See :mod:`lightning_invariance.functional.normalizer` for the pairs. A metric keeps ``pair_sum`` and ``pair_count``
(sums over the pairs already formed) and ``pair_boundaries``, a record state (:mod:`._records`) of
:class:`~lightning_invariance.functional.normalizer.Segment` s in input order: one after ``update``, several after
``forward``, ``merge_state`` or a distributed sync, whose cross pairs are added when they are folded. So the mean
pair distance is that of one process seeing every sample in order (processes holding consecutive shards, in rank
order; ``merge_state(other)`` counts ``other``'s samples first).

Between updates the segment stays decoded (``update`` neither decodes nor encodes rows); ``pair_boundaries`` is a
property that encodes it the moment TorchMetrics reads the state (``forward``, a sync, ``state_dict``, pickling).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_invariance.functional.normalizer import Segment, extend_segment, join_segments
from lightning_invariance.metrics._records import make_record, read_records

__all__ = ["WindowNormalizer"]


class WindowNormalizer(Metric):
    """Mixin of a metric with the window normaliser: call :meth:`_add_normalizer_states` in ``__init__``."""

    pair_sum: Tensor
    pair_count: Tensor

    @property
    def pair_boundaries(self) -> list[Tensor] | Tensor:
        """The state TorchMetrics sees: the live segment encoded as one record, or the records it was given."""
        live = self.__dict__.get("_live_segment")
        if live is not None:
            size = torch.tensor(float(live.size), dtype=torch.float64, device=self.pair_sum.device)
            self.__dict__["_boundary_records"] = [
                make_record(live.head.to(self.pair_sum.device), live.tail.to(self.pair_sum.device), size)
            ]
            self.__dict__["_live_segment"] = None
        return self.__dict__.get("_boundary_records", [])

    @pair_boundaries.setter
    def pair_boundaries(self, records: list[Tensor] | Tensor) -> None:
        self.__dict__["_boundary_records"] = records
        self.__dict__["_live_segment"] = None

    def _add_normalizer_states(self) -> None:
        self.add_state("pair_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pair_count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pair_boundaries", [], dist_reduce_fx="cat")

    def _update_normalizer(self, rows: Tensor, distance: str, window: int) -> None:
        """Pair the rows ``(n, ...)`` of one batch with each other and with the samples before them."""
        if rows.shape[0] == 0:
            return
        segment = self.__dict__.get("_live_segment")
        total, count = torch.zeros((), dtype=torch.float64, device=rows.device), 0
        if segment is None:
            segment, total, count = _fold(self.pair_boundaries, distance, window)
        if segment is not None and segment.tail[0].shape != rows[0].shape:
            raise ValueError(
                f"Expected representations of shape {tuple(segment.tail.shape[1:])} per sample as in earlier "
                f"updates, but got {tuple(rows.shape[1:])}: one metric measures one layer; reset() it (or use "
                "another metric) for a representation of another width."
            )
        if segment is not None and segment.tail.device != rows.device:
            segment = Segment(segment.head.to(rows.device), segment.tail.to(rows.device), segment.size)
        segment, added, added_count = extend_segment(segment, rows, distance, window)
        self.pair_sum.add_((total.to(added.device) + added).to(self.pair_sum.device))
        self.pair_count.add_(float(count + added_count))
        self.__dict__["_boundary_records"] = []
        self.__dict__["_live_segment"] = segment

    def _normalizer_mean(self, distance: str, window: int) -> Tensor:
        """The mean distance between different inputs over every pair so far (NaN without pairs)."""
        if self.__dict__.get("_live_segment") is not None:
            total, count = torch.zeros((), dtype=torch.float64, device=self.pair_sum.device), 0
        else:
            _, total, count = _fold(self.pair_boundaries, distance, window)
        pair_count = self.pair_count + count
        if float(pair_count) == 0:
            return torch.full((), float("nan"), dtype=torch.float64, device=self.pair_sum.device)
        return (self.pair_sum + total.to(self.pair_sum.device)) / pair_count


def _fold(state: list[Tensor] | Tensor, distance: str, window: int) -> tuple[Segment | None, Tensor, int]:
    """Join the segments of a record state in order: the joined segment, and the sum and count of new pairs."""
    segments = [Segment(head, tail, int(size)) for head, tail, size in read_records(state)]
    device = segments[0].head.device if segments else None
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    if not segments:
        return None, total, 0
    joined = segments[0]
    for segment in segments[1:]:
        joined, added, added_count = join_segments(joined, segment, distance, window)
        total, count = total + added, count + added_count
    return joined, total, count
