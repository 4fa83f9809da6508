"""lightning_invariance: measure how invariant or equivariant a network is, and track it while it trains."""

from lightning_invariance.callbacks import InvarianceMonitor
from lightning_invariance.functional import (
    equivariance_deviation,
    invariance_deviation,
    lie_derivative,
    linear_equivariance_deviation,
    normalized_variance,
    prediction_consistency,
    prediction_flip_rate,
)
from lightning_invariance.lie_probe import LieProbe
from lightning_invariance.measure import measure
from lightning_invariance.metrics import (
    EquivarianceDeviation,
    InvarianceDeviation,
    LieDerivative,
    LinearEquivariance,
    LinearMapFit,
    NormalizedVariance,
    PredictionConsistency,
)
from lightning_invariance.probe import OUTPUT, Probe

__version__ = "0.1.0"

__all__ = [
    "OUTPUT",
    "EquivarianceDeviation",
    "InvarianceDeviation",
    "InvarianceMonitor",
    "LieDerivative",
    "LieProbe",
    "LinearEquivariance",
    "LinearMapFit",
    "NormalizedVariance",
    "PredictionConsistency",
    "Probe",
    "__version__",
    "equivariance_deviation",
    "invariance_deviation",
    "lie_derivative",
    "linear_equivariance_deviation",
    "measure",
    "normalized_variance",
    "prediction_consistency",
    "prediction_flip_rate",
]
