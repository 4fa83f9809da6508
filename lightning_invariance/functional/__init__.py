"""Functional forms: orbit features ``(|G|, N, ...)`` in, scores out."""

from lightning_invariance.functional.consistency import prediction_consistency, prediction_flip_rate
from lightning_invariance.functional.deviation import equivariance_deviation, invariance_deviation

__all__ = ["equivariance_deviation", "invariance_deviation", "prediction_consistency", "prediction_flip_rate"]
