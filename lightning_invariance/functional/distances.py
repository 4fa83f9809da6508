"""Distances between representations, and the spaces they are taken in (flattened features, log-probs, labels)."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

__all__ = [
    "DISTANCES",
    "REFERENCES",
    "check_choice",
    "orbit_reference",
    "pair_distance_sums",
    "per_sample_distance",
    "to_distance_space",
]

DISTANCES = ("euclidean", "cosine", "kl", "discrete")
REFERENCES = ("centroid", "identity")

# Gather at most this many feature values at once when pairing samples for the normaliser.
_PAIR_BLOCK_VALUES = 1 << 24


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise the torchmetrics-style error for a string argument outside ``allowed``."""
    if value not in allowed:
        raise ValueError(f"Expected argument `{name}` to be one of {allowed} but got {value!r}.")


def to_distance_space(features: Tensor, distance: str, apply_softmax: bool) -> Tensor:
    """Map ``(..., N, *feature_dims)`` features to where ``distance`` compares them.

    - euclidean / cosine: features flattened per sample, ``(..., N, D)``, floating point;
    - kl: log-probabilities ``(..., N, C)`` (``log_softmax`` of logits, or the log of given probabilities);
    - discrete: integer labels ``(..., N)``: the argmax of ``(..., N, C)`` scores, or given integer labels.

    ``features`` has two leading axes (the orbit axis and the sample axis).
    """
    if distance in ("euclidean", "cosine"):
        flat = features.flatten(2)
        return flat if flat.is_floating_point() else flat.to(torch.get_default_dtype())
    if distance == "kl":
        if features.ndim != 3 or not features.is_floating_point():
            raise ValueError(
                "distance='kl' compares class distributions: expected float features of shape (|G|, N, C) (logits, "
                f"or probabilities with apply_softmax=False), but got dtype {features.dtype} and shape "
                f"{tuple(features.shape)}."
            )
        if apply_softmax:  # float64: KL of near-equal distributions is second order, float32 logs are not
            return torch.log_softmax(features.to(torch.float64), dim=-1)
        sums = features.sum(-1)
        if bool((features < 0).any()) or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            raise ValueError(
                "distance='kl' with apply_softmax=False expects probabilities (non-negative, summing to 1 over the "
                f"last axis); got values in [{features.min().item():.4g}, {features.max().item():.4g}] with sums in "
                f"[{sums.min().item():.4g}, {sums.max().item():.4g}]. Pass logits with apply_softmax=True instead."
            )
        return torch.log(features.to(torch.float64))
    if distance == "discrete":
        if features.ndim == 2 and not features.is_floating_point() and not features.is_complex():
            return features
        if features.ndim == 3 and features.is_floating_point():
            return features.argmax(dim=-1)
        raise ValueError(
            "distance='discrete' compares predicted labels: expected integer labels of shape (|G|, N) or float class "
            f"scores of shape (|G|, N, C), but got dtype {features.dtype} and shape {tuple(features.shape)}."
        )
    check_choice("distance", distance, DISTANCES)
    raise AssertionError("unreachable")


def orbit_reference(space: Tensor, distance: str, reference: str) -> Tensor:
    """The reference ``r(x)`` each orbit element is compared with, broadcastable against ``space`` ``(|G|, N, ...)``.

    ``"identity"`` is element 0. ``"centroid"`` is the orbit mean: of the features, of the probabilities (for
    ``kl``: returned as log-probabilities), or the most frequent label (for ``discrete``; ties go to the smallest).
    """
    if reference == "identity":
        return space[:1]
    check_choice("reference", reference, REFERENCES)
    if distance == "kl":
        return (torch.logsumexp(space, dim=0) - math.log(space.shape[0])).unsqueeze(0)
    if distance == "discrete":
        return torch.mode(space, dim=0).values.unsqueeze(0)
    return space.mean(dim=0, keepdim=True)


def per_sample_distance(a: Tensor, b: Tensor, distance: str) -> Tensor:
    """``m(a, b)`` over the last axis (none for labels), broadcasting; float64 out.

    cosine: ``1 - cos``; two zero vectors are at distance 0 and a zero and a non-zero vector at distance 1.
    kl: ``KL(p_a || p_b)`` from log-probabilities; terms where ``p_a = 0`` contribute 0.
    """
    if distance == "discrete":
        return (a != b).to(torch.float64)
    if distance == "euclidean":
        return torch.linalg.vector_norm(a - b, dim=-1).to(torch.float64)
    if distance == "cosine":  # reductions in the features' precision, the ratio in float64
        norm_a = torch.linalg.vector_norm(a, dim=-1).to(torch.float64)
        norm_b = torch.linalg.vector_norm(b, dim=-1).to(torch.float64)
        dot = (a * b).sum(-1).to(torch.float64)
        cos = dot / (norm_a * norm_b).clamp_min(torch.finfo(torch.float64).tiny)
        both_zero = (norm_a == 0) & (norm_b == 0)
        return torch.where(both_zero, torch.zeros_like(cos), 1.0 - cos.clamp(-1.0, 1.0))
    if distance == "kl":
        a64, b64 = a.to(torch.float64), b.to(torch.float64)
        terms = torch.where(a64 == -math.inf, torch.zeros_like(a64), a64.exp() * (a64 - b64))
        return terms.sum(-1).clamp_min(0.0)
    check_choice("distance", distance, DISTANCES)
    raise AssertionError("unreachable")


def pair_distance_sums(space: Tensor, distance: str, max_pairs: int) -> tuple[Tensor, Tensor]:
    """Sum and count of ``m(f(x_i), f(x_j))`` over ordered pairs ``i != j`` of a batch ``(N, ...)`` in distance space.

    All ``N (N - 1)`` ordered pairs when that is at most ``max_pairs``; otherwise all ordered pairs among ``m``
    evenly spaced samples of the batch, the largest ``m`` with ``m (m - 1) <= max_pairs``. Evenly spaced rather
    than the first ``m``, so a batch sorted by class still yields pairs across classes; the cost is that of one
    ``m x m`` Gram matrix whatever ``N`` is. Fewer than two samples give ``(0, 0)``.
    """
    n = space.shape[0]
    zero = torch.zeros((), dtype=torch.float64, device=space.device)
    if n < 2:
        return zero, zero.clone()
    m = n if n * (n - 1) <= max_pairs else max(2, math.floor((1 + math.sqrt(1 + 4 * max_pairs)) / 2))
    if m < n:
        space = space[_evenly_spaced(n, m).to(space.device)]
    total = _all_pairs_sum(space, distance)
    if total is None:  # the element-wise form: pairs (i, i + s mod m) for every shift s
        total = _shifted_pairs_sum(space, distance, m - 1)
    return total, torch.tensor(float(m * (m - 1)), dtype=torch.float64, device=space.device)


@functools.lru_cache(maxsize=64)
def _evenly_spaced(n: int, m: int) -> Tensor:
    """``m`` indices spread evenly over ``0 .. n - 1``, both ends included."""
    return torch.linspace(0, n - 1, m, dtype=torch.float64).round().long()


def _all_pairs_sum(space: Tensor, distance: str) -> Tensor | None:
    """Sum over all ordered pairs ``i != j`` by Gram matrices; ``None`` where that form does not apply.

    Computed in the features' precision (float32 features: float32 matrix products, float64 sums).
    """
    if distance == "discrete":
        return (space.unsqueeze(0) != space.unsqueeze(1)).sum().to(torch.float64)
    x = space
    if distance == "kl":
        if bool(torch.isinf(x).any()):  # zero probabilities: 0 * log 0 terms need the element-wise form
            return None
        probs = x.exp()
        entropy_terms = (probs * x).sum(-1)  # sum_c p_ic log p_ic
        # KL(p_i || p_j) = sum_c p_ic log p_ic - sum_c p_ic log p_jc; the diagonal is zero
        return x.shape[0] * entropy_terms.sum(dtype=torch.float64) - (probs @ x.T).sum(dtype=torch.float64)
    squared_norms = (x * x).sum(-1)
    gram = x @ x.T
    if distance == "euclidean":
        squared = (squared_norms.unsqueeze(0) + squared_norms.unsqueeze(1) - 2 * gram).clamp_min(0.0)
        return squared.fill_diagonal_(0.0).sqrt().sum(dtype=torch.float64)
    norms = squared_norms.sqrt()
    cos = gram / (norms.unsqueeze(0) * norms.unsqueeze(1)).clamp_min(torch.finfo(x.dtype).tiny)
    zero = norms == 0
    both_zero = zero.unsqueeze(0) & zero.unsqueeze(1)
    return torch.where(both_zero, 0.0, 1.0 - cos.clamp(-1.0, 1.0)).fill_diagonal_(0.0).sum(dtype=torch.float64)


def _shifted_pairs_sum(space: Tensor, distance: str, num_shifts: int) -> Tensor:
    """Sum of ``m(f(x_i), f(x_{i+s mod N}))`` for ``s = 1 .. num_shifts``, gathered in bounded blocks."""
    n = space.shape[0]
    block = max(1, _PAIR_BLOCK_VALUES // (max(1, space[0].numel()) * n))
    total = torch.zeros((), dtype=torch.float64, device=space.device)
    rows = torch.arange(n, device=space.device)
    for start in range(1, num_shifts + 1, block):
        shifts = torch.arange(start, min(start + block, num_shifts + 1), device=space.device)
        partners = space[(rows.unsqueeze(0) + shifts.unsqueeze(1)) % n]
        total = total + per_sample_distance(space.unsqueeze(0), partners, distance).sum()
    return total
