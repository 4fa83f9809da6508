"""The normaliser inside a metric: pair sums, plus the boundary rows that later samples and merges pair with.

See :mod:`lightning_invariance.functional.normalizer` for the pairs. A metric keeps ``pair_sum`` and ``pair_count``
(sums over the pairs already formed) and ``pair_boundaries``, a record state (:mod:`._records`) of
:class:`~lightning_invariance.functional.normalizer.Segment` s in input order: one after ``update``, several after
``forward``, ``merge_state`` or a distributed sync, whose cross pairs are added when they are folded. So the mean
pair distance is that of one process seeing every sample in order (processes holding consecutive shards, in rank
order; ``merge_state(other)`` counts ``other``'s samples first).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_invariance.functional.normalizer import Segment, extend_segment, join_segments
from lightning_invariance.metrics._records import make_record, read_records

__all__ = ["add_normalizer_states", "normalizer_mean", "update_normalizer"]


def add_normalizer_states(metric: Metric) -> None:
    """Register the normaliser's states on ``metric``."""
    metric.add_state("pair_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
    metric.add_state("pair_count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
    metric.add_state("pair_boundaries", [], dist_reduce_fx="cat")


def update_normalizer(metric: Metric, rows: Tensor, distance: str, window: int) -> None:
    """Pair the rows ``(n, ...)`` of one batch with each other and with the samples before them."""
    if rows.shape[0] == 0:
        return
    segment, total, count = _fold(metric.pair_boundaries, distance, window)
    if segment is not None and segment.tail[0].shape != rows[0].shape:
        raise ValueError(
            f"Expected representations of shape {tuple(segment.tail.shape[1:])} per sample as in earlier updates, "
            f"but got {tuple(rows.shape[1:])}: one metric measures one layer; reset() it (or use another metric) "
            "for a representation of another width."
        )
    if segment is not None:
        segment = Segment(segment.head.to(rows.device), segment.tail.to(rows.device), segment.size)
    segment, added, added_count = extend_segment(segment, rows, distance, window)
    state = metric.pair_sum
    metric.pair_sum.add_((total + added.to(total.device)).to(state.device))
    metric.pair_count.add_(float(count + added_count))
    size = torch.tensor(float(segment.size), dtype=torch.float64, device=state.device)
    metric.pair_boundaries = [make_record(segment.head.to(state.device), segment.tail.to(state.device), size)]


def normalizer_mean(metric: Metric, distance: str, window: int) -> Tensor:
    """The mean distance between different inputs over every pair so far (NaN without pairs)."""
    _, total, count = _fold(metric.pair_boundaries, distance, window)
    pair_count = metric.pair_count + count
    if float(pair_count) == 0:
        return torch.full((), float("nan"), dtype=torch.float64, device=metric.pair_sum.device)
    return (metric.pair_sum + total.to(metric.pair_sum.device)) / pair_count


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
