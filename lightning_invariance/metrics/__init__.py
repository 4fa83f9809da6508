"""TorchMetrics ``Metric`` classes wrapping the functional forms."""

from lightning_invariance.metrics.consistency import PredictionConsistency
from lightning_invariance.metrics.deviation import EquivarianceDeviation, InvarianceDeviation
from lightning_invariance.metrics.lie import LieDerivative
from lightning_invariance.metrics.linear import LinearEquivariance, LinearMapFit
from lightning_invariance.metrics.variance import NormalizedVariance

__all__ = [
    "EquivarianceDeviation",
    "InvarianceDeviation",
    "LieDerivative",
    "LinearEquivariance",
    "LinearMapFit",
    "NormalizedVariance",
    "PredictionConsistency",
]
