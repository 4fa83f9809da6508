"""TorchMetrics class for prediction consistency under a group."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_invariance.functional.deviation import DEFAULT_MAX_NORMALIZER_PAIRS
from lightning_invariance.metrics.deviation import _DeviationMetric

__all__ = ["PredictionConsistency"]


class PredictionConsistency(_DeviationMetric):
    r"""Prediction consistency: one minus the prediction flip rate (the ``discrete`` G-EED).

    .. math::
        1 - \frac{1}{|D|\,|G|} \sum_{x \in D} \sum_{g \in G} \mathbb{1}\big[\hat y(g.x) \neq \hat y_{ref}(x)\big]

    The identity element counts in the average (it never flips), as in the G-EED.
    :meth:`compute_summary`'s ``geed`` is the flip rate.

    As input to ``update``:
        - ``orbit_outputs`` (:class:`~torch.Tensor`): class scores ``(|G|, N, C)`` or integer labels ``(|G|, N)``.

    As output of ``compute``:
        - the consistency in ``[1/|G|, 1]`` (float64 scalar).

    Args:
        num_elements: ``|G|``.
        reference: ``"identity"`` (the untransformed prediction) or ``"centroid"`` (the orbit's majority label).
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

    def __init__(self, num_elements: int, reference: str = "identity", **kwargs: Any) -> None:
        super().__init__(
            num_elements, "discrete", reference, False, True, "error", DEFAULT_MAX_NORMALIZER_PAIRS, None, **kwargs
        )

    def compute(self) -> Tensor:
        """Fraction of (sample, element) predictions equal to the reference's."""
        return 1.0 - super().compute()
