"""The metrics one (dataloader, layer) pair needs, and the names its scores are logged under."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_invariance.groups.actions import RepresentationAction
from lightning_invariance.metrics import EquivarianceDeviation, InvarianceDeviation, PredictionConsistency
from lightning_invariance.probe import OUTPUT

__all__ = ["DEVIATION_SCORES", "SCORES", "LayerScores", "metric_name"]

#: Scores read off the deviation metric's summary.
DEVIATION_SCORES = ("geed", "geed_normalized", "stderr", "max")
#: Every score the callback can log; ``consistency`` applies to the model output only.
SCORES = (*DEVIATION_SCORES, "consistency")


def metric_name(prefix: str, layer: str, score: str, dataloader_idx: int, num_dataloaders: int) -> str:
    """``<prefix>/<layer>/<score>``, with ``/dataloader_idx_<i>`` appended when several dataloaders are measured."""
    name = f"{prefix}/{layer}/{score}"
    return f"{name}/dataloader_idx_{dataloader_idx}" if num_dataloaders > 1 else name


@dataclass
class LayerScores:
    """A deviation metric (raw G-EED; the summary gives the normalised one too) and, for the output, consistency."""

    deviation: InvarianceDeviation | EquivarianceDeviation
    consistency: PredictionConsistency | None

    @classmethod
    def create(
        cls,
        layer: str,
        num_elements: int,
        scores: tuple[str, ...],
        distance: str,
        reference: str,
        action: RepresentationAction | None,
        device: torch.device,
    ) -> LayerScores:
        """Fresh metrics for one layer, on ``device``."""
        if action is None:
            deviation = InvarianceDeviation(num_elements, distance=distance, reference=reference)
        else:
            deviation = EquivarianceDeviation(action, num_elements, distance=distance)
        wants_consistency = "consistency" in scores and layer == OUTPUT
        consistency = PredictionConsistency(num_elements) if wants_consistency else None
        return cls(deviation.to(device), None if consistency is None else consistency.to(device))

    def update(self, features: Tensor) -> None:
        """Add one chunk of orbit features."""
        self.deviation.update(features)
        if self.consistency is not None:
            self.consistency.update(features)

    def compute(self) -> dict[str, Tensor]:
        """Every score (synchronised across processes), ``per_element`` included, as float64 tensors."""
        summary = self.deviation.compute_summary()
        keep = (*DEVIATION_SCORES, "per_element", "per_element_normalized", "num_samples")
        values = {key: summary[key] for key in keep}
        if self.consistency is not None:
            values["consistency"] = 1.0 - self.consistency.compute_summary()["geed"]
        return values

    def reset(self) -> None:
        """Forget everything seen, ready for the next measurement."""
        self.deviation.reset()
        if self.consistency is not None:
            self.consistency.reset()
