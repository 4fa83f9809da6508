"""The metrics one (dataloader, layer) pair needs, and the names its scores are logged under."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_invariance.groups.actions import RepresentationAction
from lightning_invariance.metrics import (
    EquivarianceDeviation,
    InvarianceDeviation,
    LieDerivative,
    LinearEquivariance,
    LinearMapFit,
    NormalizedVariance,
    PredictionConsistency,
)
from lightning_invariance.probe import OUTPUT

__all__ = ["DEVIATION_SCORES", "SCORES", "LayerScores", "ScoreOptions", "metric_name"]

#: Scores read off the deviation metric's summary.
DEVIATION_SCORES = ("geed", "geed_normalized", "stderr", "max")
#: Scores of the variance metric (Quiroga et al.), and the summary keys they are read from.
VARIANCE_SCORES = {
    "normalized_variance": "normalized_variance",
    "transformation_variance": "transformation_variance",
    "sample_variance": "sample_variance",
    "dead_units": "dead_units",
}
#: Scores of the fitted linear maps (Lenc & Vedaldi): held-out fitted G-EED and invariance G-EED, normalised.
LINEAR_SCORES = {"linear_equivariance": "linear_geed_normalized", "linear_invariance": "invariance_geed_normalized"}
#: Every score the callback can log; ``consistency`` applies to the model output only.
SCORES = (*DEVIATION_SCORES, "consistency", *VARIANCE_SCORES, *LINEAR_SCORES, "lie_derivative")


def metric_name(prefix: str, layer: str, score: str, dataloader_idx: int, num_dataloaders: int) -> str:
    """``<prefix>/<layer>/<score>``, with ``/dataloader_idx_<i>`` appended when several dataloaders are measured."""
    name = f"{prefix}/{layer}/{score}"
    return f"{name}/dataloader_idx_{dataloader_idx}" if num_dataloaders > 1 else name


@dataclass(frozen=True)
class ScoreOptions:
    """What the callback asks of every layer's metrics."""

    num_elements: int
    scores: tuple[str, ...]
    distance: str
    reference: str
    action: RepresentationAction | None
    num_classes: int | None = None
    keep_sample_deviations: bool = False
    border_mask: bool = False


@dataclass
class LayerScores:
    """The metrics of one layer: the G-EED always; consistency, variances, fitted maps and Lie derivative on demand."""

    deviation: InvarianceDeviation | EquivarianceDeviation
    consistency: PredictionConsistency | None = None
    variance: NormalizedVariance | None = None
    linear_fit: LinearMapFit | None = None
    lie: LieDerivative | None = None
    linear: LinearEquivariance | None = None

    @classmethod
    def create(cls, layer: str, options: ScoreOptions, device: torch.device) -> LayerScores:
        """Fresh metrics for one layer, on ``device``."""
        extras = {"num_classes": options.num_classes, "keep_sample_deviations": options.keep_sample_deviations}
        if options.action is None:
            deviation = InvarianceDeviation(
                options.num_elements, distance=options.distance, reference=options.reference, **extras
            )
        else:
            deviation = EquivarianceDeviation(
                options.action,
                options.num_elements,
                distance=options.distance,
                border_mask=options.border_mask,
                **extras,
            )
        scores = options.scores
        wants = {
            "consistency": "consistency" in scores and layer == OUTPUT,
            "variance": any(score in VARIANCE_SCORES for score in scores),
            "linear": any(score in LINEAR_SCORES for score in scores),
            "lie": "lie_derivative" in scores,
        }
        built = cls(
            deviation.to(device),
            PredictionConsistency(options.num_elements) if wants["consistency"] else None,
            NormalizedVariance() if wants["variance"] else None,
            LinearMapFit(options.num_elements) if wants["linear"] else None,
            LieDerivative(normalize=True) if wants["lie"] else None,
        )
        for metric in built._optional():
            metric.to(device)
        return built

    def _optional(self) -> list:
        return [m for m in (self.consistency, self.variance, self.linear_fit, self.lie) if m is not None]

    def update(self, features: Tensor, labels: Tensor | None = None) -> None:
        """Add one chunk of orbit features (and its samples' labels when per-class scores are kept)."""
        self.deviation.update(features, labels)
        for metric in (self.consistency, self.variance, self.linear or self.linear_fit):
            if metric is not None:
                metric.update(features)

    def update_lie(self, features: Tensor, derivatives: Tensor) -> None:
        """Add one chunk of representations and their Lie derivatives."""
        if self.lie is not None:
            self.lie.update(features, derivatives)

    def fit_linear_maps(self) -> None:
        """End the fitting phase of the linear maps: later chunks are held out.

        Without any fitting input (a cache of one input) the maps stay unfitted, with a warning, and the linear
        scores are not logged this time. Under DDP every process needs inputs: the fit sums are reduced across
        processes.
        """
        if self.linear_fit is None:
            return
        if float(self.linear_fit.fit_samples) == 0 and not torch.distributed.is_initialized():
            rank_zero_warn("InvarianceMonitor: no cached input is left to fit the linear maps; skipping linear_*.")
            return
        self.linear = self.linear_fit.held_out_metric(normalize=True)

    def compute(self) -> dict[str, Tensor]:
        """Every score (synchronised across processes), per-element and per-class values included, as tensors."""
        summary = self.deviation.compute_summary()
        keep = (*DEVIATION_SCORES, "per_element", "per_element_normalized", "num_samples")
        keep += ("per_class", "per_class_normalized", "sample_deviations")
        values = {key: summary[key] for key in keep if key in summary}
        if self.consistency is not None:
            values["consistency"] = self.consistency.compute_summary()["consistency"]
        if self.variance is not None:
            variance = self.variance.compute_summary()
            values |= {score: variance[key] for score, key in VARIANCE_SCORES.items()}
        if self.linear is not None:
            linear = self.linear.compute_summary()
            values |= {score: linear[key] for score, key in LINEAR_SCORES.items()}
        if self.lie is not None:
            values["lie_derivative"] = self.lie.compute_summary()["lie_derivative"]
        return values

    def reset(self) -> None:
        """Forget everything seen, ready for the next measurement."""
        self.deviation.reset()
        for metric in self._optional():
            metric.reset()
        self.linear = None
