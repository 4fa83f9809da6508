"""The metrics one (dataloader, layer) pair needs, and the names its scores are logged under."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
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
from lightning_invariance.metrics._checks import nan_except
from lightning_invariance.probe import OUTPUT

__all__ = ["DEVIATION_SCORES", "NON_FINITE", "SCORES", "LayerScores", "ScoreOptions", "logged_keys"]

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
#: What the callback does with a layer whose features hold NaN/inf for some inputs.
NON_FINITE = ("nan", "skip", "error")
#: Scores logged under more than their own name: consistency comes with its chance level and kappa, so that an
#: untrained model predicting one class for everything (consistency 1.0) cannot be read as invariant.
COMPANIONS = {"consistency": ("consistency", "consistency_chance", "consistency_kappa")}


def logged_keys(score: str) -> tuple[str, ...]:
    """The names a requested score is logged under (usually just itself)."""
    return COMPANIONS.get(score, (score,))


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
    non_finite: str = "nan"


@dataclass
class LayerScores:
    """The metrics of one layer: the G-EED always; consistency, variances, fitted maps and Lie derivative on demand."""

    deviation: InvarianceDeviation | EquivarianceDeviation
    consistency: PredictionConsistency | None = None
    variance: NormalizedVariance | None = None
    linear_fit: LinearMapFit | None = None
    lie: LieDerivative | None = None
    linear: LinearEquivariance | None = None
    non_finite_policy: str = "nan"
    layer: str = OUTPUT
    #: Every fitting input held NaN/inf: no map was fitted and the linear scores are NaN this time.
    linear_unfitted: bool = False

    @classmethod
    def create(cls, layer: str, options: ScoreOptions, device: torch.device) -> LayerScores:
        """Fresh metrics for one layer, on ``device``."""
        # the metrics count samples with NaN/inf features on the device ("error": no host sync) or skip them
        nan_strategy = "skip" if options.non_finite == "skip" else "error"
        extras = {
            "num_classes": options.num_classes,
            "keep_sample_deviations": options.keep_sample_deviations,
            "nan_strategy": nan_strategy,
        }
        if options.action is None:
            deviation = InvarianceDeviation(
                options.num_elements, distance=options.distance, reference=options.reference, **extras
            )
        else:
            deviation = EquivarianceDeviation(
                options.action,
                options.num_elements,
                distance=options.distance,
                border_mask=options.border_mask and not options.action.trivial,
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
            PredictionConsistency(options.num_elements, nan_strategy=nan_strategy) if wants["consistency"] else None,
            NormalizedVariance(nan_strategy=nan_strategy) if wants["variance"] else None,
            # the maps are fitted on the finite samples (left out on the device); the layer is reported by policy
            LinearMapFit(options.num_elements, nan_strategy="skip") if wants["linear"] else None,
            LieDerivative(normalize=True, nan_strategy=nan_strategy) if wants["lie"] else None,
            non_finite_policy=options.non_finite,
            layer=layer,
        )
        for metric in built._optional():
            metric.to(device)
        return built

    def _optional(self) -> list:
        metrics = (self.consistency, self.variance, self.linear_fit, self.lie)
        return [m for m in metrics if m is not None]

    def update(self, features: Tensor, labels: Tensor | None = None) -> None:
        """Add one chunk of orbit features (and its samples' labels when per-class scores are kept).

        Every metric counts the samples whose features hold NaN/inf on the device (or leaves them out, under
        ``non_finite="skip"``; the maps are fitted on the finite samples), and :meth:`compute` reports the layer as
        NaN or raises, by policy; this reads nothing back from the device except under ``"skip"``.
        """
        with warnings.catch_warnings():  # the callback warns once per layer instead of once per chunk
            warnings.simplefilter("ignore")
            self.deviation.update(features, labels)
            for metric in (self.consistency, self.variance, self.linear or self.linear_fit):
                if metric is not None:
                    metric.update(features)

    def update_lie(self, features: Tensor, derivatives: Tensor) -> None:
        """Add one chunk of representations and their Lie derivatives (NaN/inf counted, or skipped, by policy)."""
        if self.lie is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.lie.update(features, derivatives)

    def fit_linear_maps(self) -> None:
        """End the fitting phase of the linear maps: later chunks are held out.

        Without any fitting input (a cache of one input) the maps stay unfitted, with a warning, and the linear
        scores are not logged this time; when every fitting input held NaN/inf they are NaN (reported like the
        layer's other scores). Under DDP every process needs inputs: the fit sums are reduced across processes.
        """
        if self.linear_fit is None:
            return
        if float(self.linear_fit.fit_samples) == 0 and not torch.distributed.is_initialized():
            if float(self.linear_fit.num_non_finite) > 0:
                self.linear_unfitted = True
                return
            rank_zero_warn("InvarianceMonitor: no cached input is left to fit the linear maps; skipping linear_*.")
            return
        nan_strategy = "skip" if self.non_finite_policy == "skip" else "error"
        with warnings.catch_warnings():  # inputs left out of the fit are the callback's one warning for the layer
            warnings.simplefilter("ignore")
            self.linear = self.linear_fit.held_out_metric(normalize=True, nan_strategy=nan_strategy)

    def compute(self) -> dict[str, Tensor]:
        """Every score (synchronised across processes), per-element and per-class values included, as tensors.

        ``non_finite`` holds how many inputs had NaN/inf features (all processes); under the ``"nan"`` policy every
        value is then NaN (the metrics' own warnings about it are left to the callback's one warning), and under
        ``"error"`` this raises on every process.
        """
        with warnings.catch_warnings():
            if float(self.deviation.num_non_finite) > 0:  # this process saw NaN/inf: the callback warns once for it
                warnings.simplefilter("ignore")
            values = self._compute_scores()
        non_finite = values.pop("num_non_finite")
        if float(non_finite) > 0 and self.non_finite_policy == "error":
            raise MisconfigurationException(
                f"InvarianceMonitor(non_finite='error'): layer {self.layer!r} produced NaN or infinite values for "
                f"{int(non_finite)} of {int(values['num_samples'])} measured inputs. Pass non_finite='nan' to log NaN "
                "for it instead, or 'skip' to measure the finite inputs."
            )
        if float(non_finite) > 0 and self.non_finite_policy == "nan":
            values = nan_except(values, ())
        return values | {"non_finite": non_finite}

    def _compute_scores(self) -> dict[str, Tensor]:
        summary = self.deviation.compute_summary()
        keep = (*DEVIATION_SCORES, "per_element", "per_element_normalized", "num_samples", "pair_mean")
        keep += ("num_non_finite", "per_class", "per_class_normalized", "sample_deviations")
        values = {key: summary[key] for key in keep if key in summary}
        if self.consistency is not None:
            consistency = self.consistency.compute_summary()
            values |= {
                "consistency": consistency["consistency"],
                "consistency_chance": consistency["chance_consistency"],
                "consistency_kappa": consistency["consistency_kappa"],
            }
        if self.variance is not None:
            variance = self.variance.compute_summary()
            values |= {score: variance[key] for score, key in VARIANCE_SCORES.items()}
        if self.linear is not None:
            linear = self.linear.compute_summary()
            values |= {score: linear[key] for score, key in LINEAR_SCORES.items()}
        elif self.linear_unfitted:
            nan = torch.full((), float("nan"), dtype=torch.float64, device=summary["num_samples"].device)
            values |= dict.fromkeys(LINEAR_SCORES, nan)
        if self.lie is not None:
            values["lie_derivative"] = self.lie.compute_summary()["lie_derivative"]
        return values

    def reset(self) -> None:
        """Forget everything seen, ready for the next measurement."""
        self.deviation.reset()
        for metric in self._optional():
            metric.reset()
        self.linear, self.linear_unfitted = None, False
