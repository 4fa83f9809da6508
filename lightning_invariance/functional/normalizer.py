"""The G-EED's normaliser: the mean distance between different inputs, over pairs fixed by the inputs' order.

The pairs are every two samples fewer than ``window`` positions apart in the order the samples arrive: each sample
is paired with the ``window - 1`` samples before it, and both orders of a pair are counted (``kl`` is not
symmetric). With at most ``window`` samples that is every pair. Because the pairs depend on positions only, a stream
of samples cut anywhere (into chunks of a forward pass, ``update`` calls, or consecutive shards of several
processes) yields exactly the same pairs: each piece is summarised as a :class:`Segment` (its pair sums plus its
first and last ``window - 1`` rows), and two consecutive segments are joined by pairing the left one's tail with the
right one's head. So the normalised G-EED does not depend on ``chunk_size``, the device, the batch size or the
number of processes.

Rows are the samples' representations in distance space (see
:func:`~lightning_invariance.functional.distances.to_distance_space`): flattened features, log-probabilities or
labels. Each row is prepared once (:class:`PreparedRows`: scaled by its own power of two, its squared norm taken),
and pair distances come from Gram matrices (blocks of rows against the rows before them), in float32 (float64 for
float64 features and for ``kl``), with autocast off and the scales applied in float64, so no square overflows; sums
are float64. A segment carries its tail's prepared form, so a stream prepares each row once.

New rows are paired in one batched pass: they are cut into blocks of :data:`PAIRING_BLOCK` rows, and each block is
multiplied with its window, the block itself and the ``window - 1`` rows before it (overlapping views of the same
rows, not copies): one batched Gram product and one masked sum whatever the number of rows (in pieces of
:data:`PAIRING_ROWS`), and ``PAIRING_BLOCK + window - 1`` products per row where ``window - 1`` are pairs (95 for 63
at the default window; blocks of ``window`` rows paired with themselves and with the block before took 128). On a GPU
each operation is a kernel launch the host issues, so their number, not their size, is what a small layer's pairing
costs there.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_invariance.functional.distances import (
    DISTANCES,
    exact_arithmetic,
    row_scales,
    unit_rows,
)

__all__ = ["DEFAULT_NORMALIZER_WINDOW", "Segment", "extend_segment", "join_segments", "window_pair_sums"]

#: Each sample is paired with this many samples before it, minus one (63 pairs a sample, both orders counted).
DEFAULT_NORMALIZER_WINDOW = 64
#: New rows are paired in pieces of at most this many (bounds the batched Gram products and the cached masks).
PAIRING_ROWS = 1 << 10
#: New rows are paired in blocks of this many (or ``window``, if smaller), each against itself and the rows before it.
PAIRING_BLOCK = 32


class PreparedRows:
    """Rows in the form their pair distances are computed from, row by row (so they can be sliced and joined).

    euclidean: each row scaled by its own power of two ``2^-e_i`` into ``[0.5, 1)`` (exact), its float64 squared
    norm, and ``2^e_i``; cosine: unit rows and which rows are zero; kl: probabilities, floored log-probabilities and
    ``sum p log p``; discrete: the labels.
    """

    def __init__(self, distance: str, parts: dict[str, Tensor]) -> None:
        self.distance, self.parts = distance, parts

    @classmethod
    def of(cls, rows: Tensor, distance: str) -> PreparedRows:
        """Prepare ``rows`` ``(n, ...)`` in distance space."""
        if distance == "discrete":
            return cls(distance, {"labels": rows.reshape(-1)})
        rows = rows.flatten(1) if rows.ndim > 1 else rows.unsqueeze(1)
        if distance == "kl":
            log_probs = rows.to(torch.float64)
            probs = log_probs.exp()
            entropy = torch.where(probs > 0, probs * log_probs, 0.0).sum(-1)
            floored = log_probs.clamp_min(torch.finfo(torch.float64).min)
            return cls(distance, {"probs": probs, "floored": floored, "entropy": entropy})
        rows = rows.to(torch.float64 if rows.dtype == torch.float64 else torch.float32)
        if distance == "euclidean":  # the scales are powers of two: every product with them below is exact
            scale = row_scales(rows)
            scaled = rows * scale
            unscale = 1.0 / scale.squeeze(-1).double()
            squares = (scaled * scaled).sum(-1).to(torch.float64) * unscale * unscale
            return cls(distance, {"rows": scaled, "squares": squares, "unscale": unscale})
        if distance == "cosine":
            return cls(distance, {"rows": unit_rows(rows), "zero": (rows == 0).all(-1)})
        raise ValueError(f"Expected argument `distance` to be one of {DISTANCES} but got {distance!r}.")

    def __len__(self) -> int:
        return next(iter(self.parts.values())).shape[0]

    def __getitem__(self, rows: slice) -> PreparedRows:
        return PreparedRows(self.distance, {name: part[rows] for name, part in self.parts.items()})

    def blocks(self, size: int) -> PreparedRows:
        """The rows (a multiple of ``size``) as ``(len // size, size, ...)`` blocks, for batched pair matrices."""
        return PreparedRows(self.distance, {name: part.unflatten(0, (-1, size)) for name, part in self.parts.items()})

    def windows(self, step: int, span: int) -> PreparedRows:
        """``(blocks, span, ...)`` overlapping views: rows ``[b step, b step + span)`` for each block ``b``."""
        return PreparedRows(
            self.distance, {name: part.unfold(0, span, step).movedim(-1, 1) for name, part in self.parts.items()}
        )

    def cat(self, other: PreparedRows, lead: int = 0, length: int | None = None) -> PreparedRows:
        """``lead`` zero rows, these rows, ``other``'s (on its device), zero rows up to ``length`` in all if given."""
        parts, padding = {}, 0 if length is None else length - lead - len(self) - len(other)
        for name, part in other.parts.items():
            pieces = [part.new_zeros((lead, *part.shape[1:]))] if lead else []
            pieces += [self.parts[name].to(part.device), part]
            if padding:
                pieces.append(part.new_zeros((padding, *part.shape[1:])))
            parts[name] = torch.cat(pieces)
        return PreparedRows(other.distance, parts)

    def pair_matrix(self, other: PreparedRows) -> Tensor:
        """``(..., len(self), len(other))`` float64 matrix of ``m(a_i, b_j) + m(b_j, a_i)``, batched over blocks."""
        a, b = self.parts, other.parts
        if self.distance == "discrete":
            return 2.0 * (a["labels"].unsqueeze(-1) != b["labels"].unsqueeze(-2)).to(torch.float64)
        if self.distance == "kl":  # sum_c (p_ic - p_jc)(log p_ic - log p_jc), 0 log 0 = 0, KL = inf off-support
            cross = a["probs"] @ b["floored"].mT + (b["probs"] @ a["floored"].mT).mT
            return (a["entropy"].unsqueeze(-1) + b["entropy"].unsqueeze(-2) - cross).clamp_min(0.0)
        gram = (a["rows"] @ b["rows"].mT).to(torch.float64)
        if self.distance == "euclidean":  # |x_i - x_j|^2 from the scaled rows, the scales applied in float64
            unscale = a["unscale"].unsqueeze(-1) * b["unscale"].unsqueeze(-2)  # powers of two: exact products
            squared = torch.addcmul(a["squares"].unsqueeze(-1) + b["squares"].unsqueeze(-2), gram, unscale, value=-2)
            return 2.0 * squared.clamp_min_(0.0).sqrt_()
        both_zero = a["zero"].unsqueeze(-1) & b["zero"].unsqueeze(-2)
        return 2.0 * torch.where(both_zero, 0.0, 1.0 - gram.clamp(-1.0, 1.0))


class Segment(NamedTuple):
    """A run of consecutive samples, as far as later pairs need it: its first and last ``window - 1`` rows.

    ``prepared_tail`` caches the tail's :class:`PreparedRows` between updates (not part of any state).
    """

    head: Tensor
    tail: Tensor
    size: int
    prepared_tail: PreparedRows | None = None


def window_pair_sums(rows: Tensor, distance: str, window: int = DEFAULT_NORMALIZER_WINDOW) -> tuple[Tensor, int]:
    """Sum of ``m(x_i, x_j) + m(x_j, x_i)`` over pairs ``0 < j - i < window`` of ``rows`` ``(N, ...)``, and the count.

    The count is of ordered pairs (two per pair). Example: with ``N <= window`` every ordered pair ``i != j``.
    """
    _, total, count = extend_segment(None, rows, distance, window)
    return total, count


def extend_segment(segment: Segment | None, rows: Tensor, distance: str, window: int) -> tuple[Segment, Tensor, int]:
    """Append ``rows`` to ``segment``: the longer segment, and the pair sum and count the new rows bring."""
    keep = window - 1
    if segment is None:
        segment = Segment(rows[:0], rows[:0], 0)
    with exact_arithmetic(rows.device.type):
        old = segment.prepared_tail or PreparedRows.of(segment.tail, distance)
        new = PreparedRows.of(rows, distance)
        total, count = _banded_sums(old, new, window, cross_only=False)
    head = segment.head if segment.size >= keep else _cat(segment.head, rows[: keep - segment.size])
    drop = max(0, segment.tail.shape[0] + rows.shape[0] - keep)
    tail = _cat(segment.tail[drop:], rows[-keep:])
    prepared_tail = old[drop:].cat(new[-keep:])
    return Segment(head, tail, segment.size + rows.shape[0], prepared_tail), total, count


def join_segments(left: Segment, right: Segment, distance: str, window: int) -> tuple[Segment, Tensor, int]:
    """Join two consecutive segments: the joined one, and the sum and count of the pairs across the cut."""
    keep = window - 1
    with exact_arithmetic(right.head.device.type):
        old, new = PreparedRows.of(left.tail, distance), PreparedRows.of(right.head, distance)
        total, count = _banded_sums(old, new, window, cross_only=True)
    head = left.head if left.size >= keep else _cat(left.head, right.head[: keep - left.size])
    tail = _cat(left.tail, right.tail)[-keep:]
    return Segment(head, tail, left.size + right.size), total, count


def _cat(first: Tensor, second: Tensor) -> Tensor:
    return torch.cat([first.to(second.device, second.dtype), second])


def _banded_sums(old: PreparedRows, new: PreparedRows, window: int, cross_only: bool) -> tuple[Tensor, int]:
    """Pairs ``(i, j)`` of ``[old; new]`` with ``j`` in ``new``, ``0 < j - i < window`` (``i`` in ``old`` if told).

    ``old`` holds fewer than ``window`` rows. New rows go in pieces of :data:`PAIRING_ROWS`, each after the
    ``window - 1`` rows before it (its only possible partners outside it), whatever the window; a join's new rows
    (fewer than ``window``, paired with ``old`` only) in one piece.
    """
    first = next(iter(new.parts.values()))
    total, count = None, 0
    keep = window - 1
    piece = max(1, len(new)) if cross_only else PAIRING_ROWS
    for start in range(0, len(new), piece):
        if start == 0:
            before = old
        elif start >= keep:
            before = new[start - keep : start]
        else:  # a window longer than a piece: its partners reach back into old
            before = old[max(0, len(old) - keep + start) :].cat(new[:start])
        piece_total, piece_count = _piece_sums(before, new[start : start + piece], window, cross_only)
        total, count = piece_total if total is None else total + piece_total, count + piece_count
    if total is None:
        total = torch.zeros((), dtype=torch.float64, device=first.device)
    return total, count


def _piece_sums(before: PreparedRows, rows: PreparedRows, window: int, cross_only: bool) -> tuple[Tensor, int]:
    """The pairs of :func:`_banded_sums` for ``rows`` after ``before``, in one batched pass.

    ``rows`` are cut into blocks of :data:`PAIRING_BLOCK` rows (zero rows pad the last), and each block is paired with
    its window: the block itself and the ``reach`` rows before it (``window - 1``, or fewer where the piece and the
    rows before it hold fewer), views of ``[zeros; before; rows]``; zero rows stand for partners before the stream's
    first row. A cached mask keeps the pairs asked for.
    """
    step = min(PAIRING_BLOCK, window)
    reach = min(window - 1, len(before) + len(rows) - 1)  # no window reaches further back than the stream does
    num_blocks = -(-len(rows) // step)
    stream = before.cat(rows, lead=reach - len(before), length=reach + num_blocks * step)
    device = next(iter(rows.parts.values())).device
    mask, count = _band_mask(len(before), len(rows), window, step, reach, cross_only, device)
    pairs = stream[reach:].blocks(step).pair_matrix(stream.windows(step, step + reach))
    return torch.where(mask, pairs, 0.0).sum(), count


@functools.lru_cache(maxsize=32)  # a stream of queues uses a few shapes per layer
def _band_mask(
    num_before: int, num_rows: int, window: int, step: int, reach: int, cross_only: bool, device: torch.device
) -> tuple[Tensor, int]:
    """Which entries of :func:`_piece_sums`' pair matrix are pairs, and how many ordered pairs they hold.

    The matrix is ``(blocks, step, step + reach)``. Row ``r`` of block ``b`` is row ``j = b step + r`` of ``rows``;
    column ``c`` of its window is row ``i = b step + c - reach`` (``i < 0``: a row of ``before``, or padding before
    it). A pair is ``0 < j - i < window`` (``r + reach - window < c < r + reach``) with ``j`` a row of ``rows`` and
    ``i`` a row of ``before`` or ``rows`` (of ``before`` only if ``cross_only``). The same pieces recur all along a
    stream, so each mask is built once and copied to the device once.
    """
    block = torch.arange(-(-num_rows // step)).view(-1, 1, 1)
    r, c = torch.arange(step).view(1, -1, 1), torch.arange(step + reach).view(1, 1, -1)
    j, i = block * step + r, block * step + c - reach
    mask = (c > r + reach - window) & (c < r + reach) & (j < num_rows) & (i >= -num_before)
    if cross_only:
        mask = mask & (i < 0)
    return mask.to(device), 2 * int(mask.sum())  # both orders of each pair
