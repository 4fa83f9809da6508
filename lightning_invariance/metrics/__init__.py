"""TorchMetrics ``Metric`` classes wrapping the functional forms."""

from lightning_invariance.metrics.consistency import PredictionConsistency
from lightning_invariance.metrics.deviation import EquivarianceDeviation, InvarianceDeviation

__all__ = ["EquivarianceDeviation", "InvarianceDeviation", "PredictionConsistency"]
