"""TorchMetrics class for prediction consistency under a group."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_invariance.functional.deviation import DEFAULT_NORMALIZER_WINDOW
from lightning_invariance.groups.base import Group
from lightning_invariance.metrics._checks import warn_nan
from lightning_invariance.metrics.deviation import _DeviationMetric

__all__ = ["PredictionConsistency"]


class PredictionConsistency(_DeviationMetric):
    r"""Prediction consistency: one minus the prediction flip rate (the ``discrete`` G-EED).

    .. math::
        1 - \frac{1}{|D|\,|G|} \sum_{x \in D} \sum_{g \in G} \mathbb{1}\big[\hat y(g.x) \neq \hat y_{ref}(x)\big]

    The identity element counts in the average (it never flips), as in the G-EED. :meth:`compute_summary` returns
    ``consistency``, ``flip_rate`` (one minus it), ``per_element_consistency``, ``num_samples``,
    ``num_skipped``, ``num_non_finite``, and two numbers that say how much of the consistency is chance:

    - ``chance_consistency``: how often two *different* inputs get the same label (each sample against the
      ``normalizer_window - 1`` before it, as the G-EED normaliser pairs them). A model that predicts one class
      for everything has consistency 1.0 and chance consistency 1.0.
    - ``consistency_kappa`` (identity reference only): Cohen's kappa of the transformed copies' labels against the
      untransformed ones, identity element left out, ``1 - flip_rate' / (1 - chance_consistency)``: 1 for a
      perfectly invariant classifier, 0 when a transformation changes the label as often as swapping the input for
      another one. NaN, with a warning, when every input gets the same label (no chance level to beat) or the group
      has one element.

    As input to ``update``:
        - ``orbit_outputs`` (:class:`~torch.Tensor`): class scores ``(|G|, N, C)`` or integer labels ``(|G|, N)``.

    As output of ``compute``:
        - the consistency in ``[1/|G|, 1]`` (float64 scalar).

    Args:
        num_elements: ``|G|``, or the group.
        reference: ``"identity"`` (the untransformed prediction) or ``"centroid"`` (the orbit's majority label).
        nan_strategy: ``"error"``: :meth:`compute` raises when any class scores held NaN/inf (they have no predicted
            label); ``"skip"``: leave those samples out with a warning (see
            :class:`~lightning_invariance.metrics.InvarianceDeviation`).
        kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = PredictionConsistency(num_elements=2)
        >>> metric.update(torch.tensor([[0, 1, 2, 3], [0, 1, 2, 0]]))
        >>> metric.compute()
        tensor(0.8750, dtype=torch.float64)
    """

    higher_is_better = True
    plot_upper_bound = 1.0

    _compute_key = "consistency"

    def __init__(
        self, num_elements: int | Group, reference: str = "identity", nan_strategy: str = "error", **kwargs: Any
    ) -> None:
        super().__init__(
            num_elements, "discrete", reference, False, True, nan_strategy, DEFAULT_NORMALIZER_WINDOW, None, **kwargs
        )
        self._compute_key = "consistency"

    def _summary(self, warn: bool) -> dict[str, Tensor]:
        """Consistency, flip rate and per-element consistency from the discrete G-EED's statistics."""
        deviation = super()._summary(warn)
        chance_flip_rate = deviation["pair_mean"]
        summary = {
            "consistency": 1.0 - deviation["geed"],
            "flip_rate": deviation["geed"],
            "per_element_consistency": 1.0 - deviation["per_element"],
            "chance_consistency": 1.0 - chance_flip_rate,
            "num_samples": deviation["num_samples"],
            "num_skipped": deviation["num_skipped"],
            "num_non_finite": deviation["num_non_finite"],
        }
        if self.reference != "identity":
            return summary
        transformed_flip_rate = deviation["per_element"][1:].mean()  # the identity never flips: left out
        summary["consistency_kappa"] = 1.0 - transformed_flip_rate / chance_flip_rate
        if warn and float(deviation["num_samples"]) > 1 and self.num_elements > 1 and float(chance_flip_rate) == 0:
            warn_nan(
                "Every input got the same predicted label, so prediction consistency is 1.0 by construction and its "
                "chance-corrected `consistency_kappa` is NaN."
            )
        return summary
