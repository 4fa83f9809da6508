"""Functional forms: orbit features ``(|G|, N, ...)`` in, scores out."""

from lightning_invariance.functional.consistency import prediction_consistency, prediction_flip_rate
from lightning_invariance.functional.deviation import equivariance_deviation, invariance_deviation
from lightning_invariance.functional.lie import derivative_along, lie_derivative
from lightning_invariance.functional.linear import linear_equivariance_deviation
from lightning_invariance.functional.variance import normalized_variance

__all__ = [
    "derivative_along",
    "equivariance_deviation",
    "invariance_deviation",
    "lie_derivative",
    "linear_equivariance_deviation",
    "normalized_variance",
    "prediction_consistency",
    "prediction_flip_rate",
]
