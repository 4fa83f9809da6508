"""TorchMetrics class for the Lie derivative (Gruver et al., ICLR 2023)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_invariance.functional.deviation import NAN_STRATEGIES, screen_non_finite
from lightning_invariance.functional.distances import check_choice
from lightning_invariance.functional.lie import _lie_update
from lightning_invariance.metrics._base import SummaryMetric
from lightning_invariance.metrics._checks import nan_except, non_finite_counts, refuses_non_finite, warn_nan

__all__ = ["LieDerivative"]


class LieDerivative(SummaryMetric):
    r"""Mean norm of the Lie derivative of a representation, raw and relative to the representation's norm.

    .. math::
        \mathrm{LD} = \frac{1}{N} \sum_x \frac{\|L f(x)\|_2}{\|f(x)\|_2}, \qquad
        L f(x) = \frac{d}{dt} f(T_t x) \Big|_{t=0}

    (or ``d/dt [f(T_t x) - T_t f(x)]`` for equivariant feature maps), per unit of ``t`` (radian, log-scale or input
    pixel). Samples with ``f(x) = 0`` are left out of the normalised mean and counted (``num_zero``). Feed it with
    :class:`~lightning_invariance.LieProbe`.

    As input to ``update``:
        - ``features`` (:class:`~torch.Tensor`): ``(N, ...)``, ``f(x)``.
        - ``derivatives`` (:class:`~torch.Tensor`): ``(N, ...)``, ``L f(x)``.

    As output of ``compute``:
        - the normalised mean (``normalize=True``) or the mean ``||L f(x)||`` (float64 scalar); NaN with a warning
          before any sample. :meth:`compute_summary` returns ``lie_derivative`` (relative), ``lie_derivative_raw``,
          ``max`` (the largest relative one), ``num_samples``, ``num_zero``, ``num_skipped`` and
          ``num_non_finite``.

    Args:
        normalize: :meth:`compute` gives the relative value (``True``) or the raw mean norm.
        nan_strategy: ``"error"`` (the default): :meth:`compute` raises when any sample's representation or derivative
            held NaN/inf, and :meth:`compute_summary` gives every statistic as NaN (the samples are counted on the
            device, so ``update`` never waits for it); ``"skip"``: such samples are left out with a warning (one host
            sync per ``update``).
        kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = LieDerivative(normalize=True)
        >>> metric.update(torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
        >>> metric.compute()
        tensor(0.1000, dtype=torch.float64)
    """

    higher_is_better = False
    plot_lower_bound = 0.0

    derivative_sum: Tensor
    relative_sum: Tensor
    num_samples: Tensor
    num_zero: Tensor
    max_relative: Tensor
    num_non_finite: Tensor

    def __init__(self, normalize: bool = False, nan_strategy: str = "error", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice("nan_strategy", nan_strategy, NAN_STRATEGIES)
        self.normalize, self.nan_strategy = bool(normalize), nan_strategy
        self._compute_key = "lie_derivative" if self.normalize else "lie_derivative_raw"
        f64 = torch.float64
        self.add_state("derivative_sum", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("relative_sum", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("num_zero", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("max_relative", torch.zeros((), dtype=f64), dist_reduce_fx="max")
        self.add_state("num_non_finite", torch.zeros((), dtype=f64), dist_reduce_fx="sum")

    def update(self, features: Tensor, derivatives: Tensor) -> None:
        """Add a batch of representations and their Lie derivatives (reads nothing back from the device)."""
        derivative_norms, feature_norms = _lie_update(features, derivatives)
        device = self.num_samples.device
        derivative_norms, feature_norms = derivative_norms.to(device), feature_norms.to(device)
        norms, non_finite = screen_non_finite(torch.stack([derivative_norms, feature_norms]), self.nan_strategy)
        self.num_non_finite.add_(non_finite)
        derivative_norms, feature_norms = norms
        nonzero = feature_norms > 0
        relative = torch.where(nonzero, derivative_norms / torch.where(nonzero, feature_norms, 1.0), 0.0)
        self.derivative_sum.add_(derivative_norms.sum())
        self.relative_sum.add_(relative.sum())
        self.num_samples.add_(derivative_norms.numel())
        self.num_zero.add_((~nonzero).sum())
        if relative.numel():  # zero-norm samples add 0, which the maximum (from 0) ignores
            torch.maximum(self.max_relative, relative.max(), out=self.max_relative)

    def _summary(self, warn: bool) -> dict[str, Tensor]:
        refused = refuses_non_finite(self.nan_strategy, self.num_non_finite, self.num_samples, raise_error=warn)
        counted = self.num_samples - self.num_zero
        if warn and float(self.num_samples) == 0:
            warn_nan("LieDerivative has seen no sample: its value is NaN.")
        elif warn and self.normalize and float(counted) == 0:
            warn_nan("Every representation LieDerivative saw is zero, so the relative value is NaN.")
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.num_samples.device)
        summary = {
            "lie_derivative": self.relative_sum / counted if float(counted) > 0 else nan,
            "lie_derivative_raw": self.derivative_sum / self.num_samples if float(self.num_samples) > 0 else nan,
            "max": self.max_relative.clone() if float(counted) > 0 else nan,
            "num_samples": self.num_samples.clone(),
            "num_zero": self.num_zero.clone(),
        }
        if refused:  # the sums hold NaN/inf: none is a number (the counts stay)
            summary = nan_except(summary, ("num_samples", "num_zero"))
        return summary | non_finite_counts(self.nan_strategy, self.num_non_finite)
