"""The normaliser inside a metric: pair sums, plus the boundary rows that later samples and merges pair with.

See :mod:`lightning_invariance.functional.normalizer` for the pairs. A metric keeps ``pair_sum`` and ``pair_count``
(sums over the pairs already formed) and ``pair_boundaries``, a record state (:mod:`._records`) of
:class:`~lightning_invariance.functional.normalizer.Segment` s in input order: one after ``update``, several after
``forward``, ``merge_state`` or a distributed sync, whose cross pairs are added when they are folded. So the mean
pair distance is that of one process seeing every sample in order (processes holding consecutive shards, in rank
order; ``merge_state(other)`` counts ``other``'s samples first).

Between updates the segment stays decoded (``update`` neither decodes nor encodes rows) and new rows wait in a short
queue; ``pair_boundaries`` is a property that pairs the queue and encodes the segment the moment TorchMetrics reads
the state (``forward``, a sync, ``state_dict``, pickling, ``reset``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_invariance._sync import block_values, branches_on_host
from lightning_invariance.functional.normalizer import Segment, extend_segment, join_segments
from lightning_invariance.metrics._records import make_record, read_records

__all__ = ["QUEUE_ROWS", "QUEUE_VALUES", "WindowNormalizer"]

#: Rows are paired once this many are queued, or once they hold this many values.
QUEUE_ROWS, QUEUE_VALUES = 256, 1 << 19


class WindowNormalizer(Metric):
    """Mixin of a metric with the window normaliser: call :meth:`_add_normalizer_states` in ``__init__``.

    New rows wait in a short queue (up to :data:`QUEUE_ROWS` rows or :data:`QUEUE_VALUES` values) and are paired
    together, so a stream of small chunks pays the fixed cost of a pairing once per queue rather than once per chunk.
    Queued rows travel in the record as rows not yet paired; reading the state never changes ``pair_sum``.
    """

    pair_sum: Tensor
    pair_count: Tensor

    @property
    def pair_boundaries(self) -> list[Tensor] | Tensor:
        """The state TorchMetrics sees: the live segment and its queue encoded as one record, or the given records."""
        live, queue = self.__dict__.get("_live_segment"), self.__dict__.get("_queue")
        if live is not None or queue:
            device = self.pair_sum.device
            if live is None:  # only queued rows: an empty segment of their shape
                live = Segment(queue[0][:0], queue[0][:0], 0)
            queued = torch.cat(queue) if queue else live.tail[:0]
            size = torch.tensor(float(live.size), dtype=torch.float64, device=device)
            record = make_record(live.head.to(device), live.tail.to(device), size, queued.to(device))
            self.__dict__.update(_boundary_records=[record], _live_segment=None, _queue=[], _queue_rows=0)
        return self.__dict__.get("_boundary_records", [])

    @pair_boundaries.setter
    def pair_boundaries(self, records: list[Tensor] | Tensor) -> None:
        self.__dict__.update(_boundary_records=records, _live_segment=None, _queue=[], _queue_rows=0)

    def _add_normalizer_states(self, distance: str, window: int) -> None:
        self._pairing = (distance, window)
        self.add_state("pair_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pair_count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pair_boundaries", [], dist_reduce_fx="cat")

    def _update_normalizer(self, rows: Tensor) -> None:
        """Queue the rows ``(n, ...)`` of one batch to be paired with each other and with the samples before them."""
        if rows.shape[0] == 0:
            return
        if self.__dict__.get("_live_segment") is None and not self.__dict__.get("_queue"):
            segment, total, count = _fold(self.__dict__.get("_boundary_records", []), *self._pairing)
            self._add_pairs(total, count)
            self.__dict__.update(_boundary_records=[], _live_segment=segment, _queue=[], _queue_rows=0)
        queue, live = self.__dict__["_queue"], self.__dict__["_live_segment"]
        expected = queue[0].shape[1:] if queue else live.tail.shape[1:] if live is not None else rows.shape[1:]
        if rows.shape[1:] != expected:
            raise ValueError(
                f"Expected representations of shape {tuple(expected)} per sample as in earlier updates, but got "
                f"{tuple(rows.shape[1:])}: one metric measures one layer; reset() it (or use another metric) for a "
                "representation of another width."
            )
        queued_rows = self.__dict__["_queue_rows"] + rows.shape[0]
        if queued_rows < QUEUE_ROWS and queued_rows * rows[0].numel() < QUEUE_VALUES:
            queue.append(rows.detach().clone())  # a view into features a later in-place op may change
            self.__dict__["_queue_rows"] = queued_rows
            return
        # paired now, so no copy to keep. On accelerators in pieces that fill a block of values with the window of
        # rows before them, so that the pairing's copies of a large layer's rows stay within one; the CPU's blocks are
        # sized for its cache, and pieces that small made a large update a quarter slower there: one piece
        window, piece_rows = self._pairing[1], rows.shape[0]
        if not branches_on_host(rows.device):
            piece_rows = max(window, block_values(rows.device) // max(1, rows[0].numel()) - window)
        pieces = list(rows.detach().split(piece_rows))
        if queue:  # the queue holds fewer than QUEUE_VALUES values: a small copy
            pieces[0] = torch.cat([*queue, pieces[0]])
        for piece in pieces:
            live, total, count = _settle(live, piece, *self._pairing)
            self._add_pairs(total, count)
        self.__dict__.update(_live_segment=live, _queue=[], _queue_rows=0)

    def _add_pairs(self, total: Tensor, count: int) -> None:
        """Add pairs' distance sum and count to the states."""
        self.pair_sum.add_(total.to(self.pair_sum.device))
        self.pair_count.add_(float(count))

    def _normalizer_mean(self) -> Tensor:
        """The mean distance between different inputs over every pair so far (NaN without pairs); reads only."""
        live, queue = self.__dict__.get("_live_segment"), self.__dict__.get("_queue")
        if live is not None or queue:
            _, total, count = _settle(live, torch.cat(queue) if queue else None, *self._pairing)
        else:
            _, total, count = _fold(self.__dict__.get("_boundary_records", []), *self._pairing)
        pair_count = self.pair_count + count
        if float(pair_count) == 0:
            return torch.full((), float("nan"), dtype=torch.float64, device=self.pair_sum.device)
        return (self.pair_sum + total.to(self.pair_sum.device)) / pair_count


def _settle(
    segment: Segment | None, queued: Tensor | None, distance: str, window: int
) -> tuple[Segment | None, Tensor, int]:
    """Pair ``queued`` rows with each other and with ``segment``: the longer segment, the new pairs' sum and count."""
    if queued is None or queued.shape[0] == 0:
        device = segment.tail.device if segment is not None else None
        return segment, torch.zeros((), dtype=torch.float64, device=device), 0
    if segment is not None and segment.tail.device != queued.device:
        segment = Segment(segment.head.to(queued.device), segment.tail.to(queued.device), segment.size)
    return extend_segment(segment, queued, distance, window)


def _fold(state: list[Tensor] | Tensor, distance: str, window: int) -> tuple[Segment | None, Tensor, int]:
    """Join the segments of a record state in order, pairing their queued rows.

    Returns the joined segment, and the sum and count of the pairs not yet in ``pair_sum``.
    """
    joined, total, count = None, torch.zeros((), dtype=torch.float64), 0
    for head, tail, size, queued in read_records(state):
        segment = Segment(head, tail, int(size)) if int(size) else None
        segment, added, added_count = _settle(segment, queued, distance, window)
        total, count = total.to(added.device) + added, count + added_count
        if segment is None:
            continue
        if joined is None:
            joined = segment
            continue
        joined, added, added_count = join_segments(joined, segment, distance, window)
        total, count = total + added.to(total.device), count + added_count
    return joined, total, count
