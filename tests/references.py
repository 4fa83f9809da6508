"""Brute-force references: plain Python loops over samples and group elements, in float64.

Written independently of the package (no shared helpers) so that the tests compare two implementations.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

from torch import Tensor


def _softmax(v: list[float]) -> list[float]:
    top = max(v)
    exps = [math.exp(a - top) for a in v]
    total = sum(exps)
    return [e / total for e in exps]


def _item_distance(a, b, distance: str) -> float:
    if distance == "discrete":
        return 0.0 if a == b else 1.0
    if distance == "euclidean":
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))
    if distance == "cosine":
        na = math.sqrt(sum(x * x for x in a))
        nb = math.sqrt(sum(y * y for y in b))
        if na == 0 and nb == 0:
            return 0.0
        if na == 0 or nb == 0:
            return 1.0
        return 1.0 - sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)
    if distance == "kl":
        return sum(p * math.log(p / q) for p, q in zip(a, b, strict=True) if p > 0)
    raise ValueError(distance)


def _represent(features: Tensor, distance: str, apply_softmax: bool):
    """One sample's features as the reference compares them: a list of floats, probabilities, or a label."""
    if distance == "discrete":
        if features.ndim == 0:
            return int(features)
        values = features.double().tolist()
        return max(range(len(values)), key=lambda c: (values[c], -c))
    values = features.double().flatten().tolist()
    if distance == "kl" and apply_softmax:
        return _softmax(values)
    return values


def _centroid(items: list, distance: str):
    if distance == "discrete":
        counts = Counter(items)
        best = max(counts.values())
        return min(label for label, c in counts.items() if c == best)
    return [sum(column) / len(items) for column in zip(*items, strict=True)]


def reference_distances(
    orbit: Tensor,
    distance: str,
    reference: str,
    apply_softmax: bool = True,
    action: Callable[[Tensor, int], Tensor] | None = None,
) -> list[list[float]]:
    """``d[g][i] = m(f(g.x_i), r_g(x_i))`` by loops."""
    num_elements, num_samples = orbit.shape[:2]
    table = [[0.0] * num_samples for _ in range(num_elements)]
    for i in range(num_samples):
        items = [_represent(orbit[g, i], distance, apply_softmax) for g in range(num_elements)]
        for g in range(num_elements):
            if action is not None:
                moved = action(orbit[0, i : i + 1], g)[0]
                target = _represent(moved, distance, apply_softmax)
            elif reference == "identity":
                target = items[0]
            else:
                target = _centroid(items, distance)
            table[g][i] = _item_distance(items[g], target, distance)
    return table


def reference_pair_sums(
    batches: Sequence[Tensor], distance: str, apply_softmax: bool = True, window: int = 64
) -> tuple[float, int]:
    """Sum and count of ``m(f(x_i), f(x_j))`` over ordered pairs ``0 < |i - j| < window`` of the untransformed samples
    of all batches, in order (with at most ``window`` samples: every pair ``i != j``)."""
    items = [_represent(orbit[0, i], distance, apply_softmax) for orbit in batches for i in range(orbit.shape[1])]
    total, count = 0.0, 0
    for i, a in enumerate(items):
        for j, b in enumerate(items):
            if i != j and abs(i - j) < window:
                total += _item_distance(a, b, distance)
                count += 1
    return total, count


def reference_geed(
    batches: Sequence[Tensor],
    distance: str = "euclidean",
    reference: str = "centroid",
    normalize: bool = False,
    apply_softmax: bool = True,
    action: Callable[[Tensor, int], Tensor] | None = None,
    window: int = 64,
) -> float:
    """G-EED over several batches (the normaliser pairs samples fewer than ``window`` apart, in the order of all
    batches)."""
    total, count = 0.0, 0
    for orbit in batches:
        table = reference_distances(orbit, distance, reference, apply_softmax, action)
        total += sum(sum(row) for row in table)
        count += len(table) * len(table[0])
    geed = total / count
    if not normalize:
        return geed
    pair_total, pair_count = reference_pair_sums(batches, distance, apply_softmax, window)
    return geed / (pair_total / pair_count)


def reference_per_element(batches: Sequence[Tensor], distance: str, reference: str) -> list[float]:
    sums, count = None, 0
    for orbit in batches:
        table = reference_distances(orbit, distance, reference)
        row_sums = [sum(row) for row in table]
        sums = row_sums if sums is None else [a + b for a, b in zip(sums, row_sums, strict=True)]
        count += orbit.shape[1]
    return [s / count for s in sums]


def reference_stderr(batches: Sequence[Tensor], distance: str, reference: str) -> float:
    per_sample = []
    for orbit in batches:
        table = reference_distances(orbit, distance, reference)
        per_sample += [sum(table[g][i] for g in range(len(table))) / len(table) for i in range(len(table[0]))]
    n = len(per_sample)
    mean = sum(per_sample) / n
    return math.sqrt(sum((v - mean) ** 2 for v in per_sample) / (n - 1) / n)


def reference_variances(batches: Sequence[Tensor], spread: str = "variance") -> tuple[list[float], list[float]]:
    """Per-unit transformation and sample spread of 3-D orbit batches ``(|G|, n, U)``, by loops.

    ``spread``: ``"variance"`` (population) or ``"std"`` (standard deviation with n - 1, 0 for one value: tmeasures).
    """
    num_elements, num_units = batches[0].shape[0], batches[0].shape[2]
    samples = [
        [[float(b[g, i, u]) for u in range(num_units)] for g in range(num_elements)]
        for b in batches
        for i in range(b.shape[1])
    ]  # samples[n][g][u]

    def variance(values: list[float]) -> float:
        mean = sum(values) / len(values)
        squares = sum((v - mean) ** 2 for v in values)
        if spread == "variance":
            return squares / len(values)
        return math.sqrt(squares / (len(values) - 1)) if len(values) > 1 else 0.0

    transformation = [
        sum(variance([s[g][u] for g in range(num_elements)]) for s in samples) / len(samples) for u in range(num_units)
    ]
    sample = [
        sum(variance([s[g][u] for s in samples]) for g in range(num_elements)) / num_elements for u in range(num_units)
    ]
    return transformation, sample


def reference_ridge_maps(fit: Tensor, ridge_penalty: float) -> list[list[list[float]]]:
    """Solve (X^T X + penalty I_w) M = X^T Y_g for each element by Gauss-Jordan elimination, X = [f(x), 1]."""
    num_elements, num_samples, width = fit.shape
    rows = [[float(v) for v in fit[0, n]] + [1.0] for n in range(num_samples)]
    size = width + 1
    xtx = [[sum(r[i] * r[j] for r in rows) for j in range(size)] for i in range(size)]
    for i in range(width):
        xtx[i][i] += ridge_penalty
    maps = []
    for g in range(num_elements):
        xty = [
            [sum(rows[n][i] * float(fit[g, n, d]) for n in range(num_samples)) for d in range(width)]
            for i in range(size)
        ]
        a = [xtx[i][:] + xty[i][:] for i in range(size)]
        for col in range(size):
            pivot = max(range(col, size), key=lambda r: abs(a[r][col]))
            a[col], a[pivot] = a[pivot], a[col]
            lead = a[col][col]
            a[col] = [v / lead for v in a[col]]
            for r in range(size):
                if r != col and a[r][col] != 0:
                    factor = a[r][col]
                    a[r] = [v - factor * w for v, w in zip(a[r], a[col], strict=True)]
        maps.append([row[size:] for row in a])
    return maps
