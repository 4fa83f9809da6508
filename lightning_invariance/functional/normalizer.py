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
labels. Pair distances are computed in float64 from Gram matrices of blocks of ``window`` rows, whatever the
features' dtype and any enclosing autocast.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lightning_invariance.functional.distances import DISTANCES, power_of_two_scale, unit_rows

__all__ = ["DEFAULT_NORMALIZER_WINDOW", "Segment", "extend_segment", "join_segments", "window_pair_sums"]

#: Each sample is paired with this many samples before it, minus one (63 pairs a sample, both orders counted).
DEFAULT_NORMALIZER_WINDOW = 64


class Segment(NamedTuple):
    """A run of consecutive samples, as far as later pairs need it: its first and last ``window - 1`` rows."""

    head: Tensor
    tail: Tensor
    size: int


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
    total, count = _banded_sums(segment.tail, rows, distance, window, cross_only=False)
    head = segment.head if segment.size >= keep else _cat(segment.head, rows[: keep - segment.size])
    tail = _cat(segment.tail[max(0, segment.tail.shape[0] + rows.shape[0] - keep) :], rows[-keep:])
    return Segment(head, tail, segment.size + rows.shape[0]), total, count


def join_segments(left: Segment, right: Segment, distance: str, window: int) -> tuple[Segment, Tensor, int]:
    """Join two consecutive segments: the joined one, and the sum and count of the pairs across the cut."""
    keep = window - 1
    total, count = _banded_sums(left.tail, right.head, distance, window, cross_only=True)
    head = left.head if left.size >= keep else _cat(left.head, right.head[: keep - left.size])
    tail = _cat(left.tail, right.tail)[-keep:]
    return Segment(head, tail, left.size + right.size), total, count


def _cat(first: Tensor, second: Tensor) -> Tensor:
    return torch.cat([first.to(second.device, second.dtype), second])


def _banded_sums(old: Tensor, new: Tensor, distance: str, window: int, cross_only: bool) -> tuple[Tensor, int]:
    """Pairs ``(i, j)`` of ``[old; new]`` with ``j`` in ``new``, ``0 < j - i < window`` (``i`` in ``old`` if told).

    Processed in blocks of ``window`` rows of ``new``, each against its partners only, so no temporary is larger
    than about ``2 * window`` rows.
    """
    t, n = old.shape[0], new.shape[0]
    total = torch.zeros((), dtype=torch.float64, device=new.device)
    count = 0
    for start in range(t, t + n, window):
        stop = min(start + window, t + n)
        low = max(0, start - window + 1)
        high = min(stop, t) if cross_only else stop
        if high <= low:
            continue
        partners = _cat(old[low:t], new[max(0, low - t) : high - t]) if low < t else new[low - t : high - t]
        block = _pair_matrix(new[start - t : stop - t], partners, distance)
        j = torch.arange(start, stop, device=new.device).unsqueeze(1)
        i = torch.arange(low, high, device=new.device).unsqueeze(0)
        in_band = (i < j) & (j - i < window)
        total = total + torch.where(in_band, block, 0.0).sum()
        count += sum(max(0, min(jj, high) - max(low, jj - window + 1)) for jj in range(start, stop))
    return total, 2 * count


def _pair_matrix(a: Tensor, b: Tensor, distance: str) -> Tensor:
    """``(|a|, |b|)`` float64 matrix of ``m(a_i, b_j) + m(b_j, a_i)`` (rows in distance space)."""
    if distance == "discrete":
        return 2.0 * (a.reshape(-1, 1) != b.reshape(1, -1)).to(torch.float64)
    with torch.autocast(a.device.type, enabled=False):
        a, b = a.flatten(1).to(torch.float64), b.flatten(1).to(torch.float64)
        if distance == "kl":  # sum_c (p_ic - p_jc)(log p_ic - log p_jc), with 0 log 0 = 0 and KL = inf off-support
            pa, pb = a.exp(), b.exp()
            floor = torch.finfo(torch.float64).min
            ha = torch.where(pa > 0, pa * a, 0.0).sum(-1)
            hb = torch.where(pb > 0, pb * b, 0.0).sum(-1)
            cross = pa @ b.clamp_min(floor).T + (pb @ a.clamp_min(floor).T).T
            return (ha.unsqueeze(1) + hb.unsqueeze(0) - cross).clamp_min(0.0)
        if distance == "euclidean":
            scale = power_of_two_scale(torch.cat([a.abs().amax(-1), b.abs().amax(-1)]).amax())
            a, b = a * scale, b * scale
            squared = (a * a).sum(-1).unsqueeze(1) + (b * b).sum(-1).unsqueeze(0) - 2.0 * (a @ b.T)
            return 2.0 * squared.clamp_min(0.0).sqrt() / scale
        if distance == "cosine":
            unit_a, unit_b = unit_rows(a), unit_rows(b)
            cosine = (unit_a @ unit_b.T).clamp(-1.0, 1.0)
            zero_a, zero_b = (a == 0).all(-1).unsqueeze(1), (b == 0).all(-1).unsqueeze(0)
            return 2.0 * torch.where(zero_a & zero_b, 0.0, 1.0 - cosine)
    raise ValueError(f"Expected argument `distance` to be one of {DISTANCES} but got {distance!r}.")
