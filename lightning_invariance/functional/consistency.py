"""Prediction consistency and flip rate: how often a transformation changes the predicted label."""

from __future__ import annotations

from torch import Tensor

from lightning_invariance.functional.deviation import invariance_deviation

__all__ = ["prediction_consistency", "prediction_flip_rate"]


def prediction_flip_rate(orbit_outputs: Tensor, reference: str = "identity") -> Tensor:
    """Fraction of (sample, element) pairs whose predicted label differs from the reference's.

    It is the G-EED with the ``"discrete"`` distance. Following the G-EED's average over all of G, the identity
    element counts too (it never flips), so the largest possible value is ``(|G| - 1) / |G|``.

    Args:
        orbit_outputs: class scores ``(|G|, N, C)`` (their argmax is the label) or integer labels ``(|G|, N)``.
        reference: ``"identity"`` (the untransformed prediction) or ``"centroid"`` (the orbit's majority label).

    Example:
        >>> import torch
        >>> labels = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 0]])  # |G| = 2, N = 4: one of four samples flips
        >>> prediction_flip_rate(labels)
        tensor(0.1250, dtype=torch.float64)
    """
    return invariance_deviation(orbit_outputs, distance="discrete", reference=reference)


def prediction_consistency(orbit_outputs: Tensor, reference: str = "identity") -> Tensor:
    """One minus :func:`prediction_flip_rate`: 1 when no transformation changes any prediction.

    Example:
        >>> import torch
        >>> labels = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 0]])
        >>> prediction_consistency(labels)
        tensor(0.8750, dtype=torch.float64)
    """
    return 1.0 - prediction_flip_rate(orbit_outputs, reference)
