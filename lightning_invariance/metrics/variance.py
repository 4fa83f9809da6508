"""TorchMetrics class for the variance-based invariance measures of Quiroga et al. (2023)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_invariance.functional.variance import _variance_compute, _variance_update, chan_merge, chan_reduce

__all__ = ["NormalizedVariance"]


class NormalizedVariance(Metric):
    r"""Transformation, sample and normalised variance per unit, in one pass (Quiroga et al. 2023).

    .. math::
        NV = \operatorname{mean}_u \frac{\frac{1}{N}\sum_n \mathrm{Var}_g\, a[g,n,u]}{\frac{1}{|G|}\sum_g
        \mathrm{Var}_n\, a[g,n,u]}

    0 means transformations leave every unit where it was; 1 means they move units as much as changing the input.
    The sample variance needs the mean of each (element, unit) column over *all* inputs: it is kept as float64
    ``(count, mean, M2)`` and merged with Chan's parallel formula across ``update`` calls and, under DDP, across
    processes, so the result equals the two-pass one. The number of units is taken from the first ``update``; under
    DDP every process must see at least one batch. See :func:`~lightning_invariance.functional.normalized_variance`
    for the definitions, dead units (0/0, counted, not averaged) and the units of feature maps (channels, averaged
    over space).

    As input to ``update``:
        - ``orbit_features`` (:class:`~torch.Tensor`): ``(|G|, N)``, ``(|G|, N, D)`` or ``(|G|, N, C, ...)``.

    As output of ``compute``:
        - the normalised variance (float64 scalar); :meth:`compute_summary` gives every score.

    Example:
        >>> import torch
        >>> metric = NormalizedVariance()
        >>> metric.update(torch.tensor([[[0.0], [2.0]], [[1.0], [3.0]]]))
        >>> metric.compute()
        tensor(0.2500, dtype=torch.float64)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0

    orbit_variance_sum: Tensor
    num_samples: Tensor
    columns: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        f64 = torch.float64
        self.add_state("orbit_variance_sum", torch.zeros(0, dtype=f64), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("columns", torch.zeros(3, 0, 0, dtype=f64), dist_reduce_fx=chan_reduce)

    def update(self, orbit_features: Tensor) -> None:
        """Add a batch of orbit features ``(|G|, N, ...)``."""
        orbit_variance_sum, num_samples, columns = _variance_update(orbit_features)
        columns = columns.to(self.columns.device)
        if self.columns.numel() == 0:
            self.orbit_variance_sum = orbit_variance_sum.to(self.columns.device)
            self.columns = columns
        elif columns.shape != self.columns.shape:
            raise ValueError(
                f"Expected orbit features with {self.columns.shape[1]} group elements and {self.columns.shape[2]} "
                f"units as in earlier updates, but got {columns.shape[1]} elements and {columns.shape[2]} units "
                f"(from shape {tuple(orbit_features.shape)})."
            )
        else:
            self.orbit_variance_sum.add_(orbit_variance_sum.to(self.columns.device))
            self.columns.copy_(chan_merge(self.columns, columns))
        self.num_samples.add_(num_samples)

    def compute(self) -> Tensor:
        """The normalised variance averaged over the units that are not dead (NaN if every unit is dead)."""
        return self._summary()["normalized_variance"]

    def compute_summary(self) -> dict[str, Tensor]:
        """Every score, synchronised like :meth:`compute`.

        Returns ``normalized_variance``, ``transformation_variance``, ``sample_variance``, ``num_dead_units``,
        ``num_units``, ``num_samples`` and the ``per_unit_*`` tensors; all NaN (counts 0) before any update.
        """
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=self._should_unsync
        ):
            return self._summary()

    def _summary(self) -> dict[str, Tensor]:
        if self.columns.numel() == 0:
            nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.columns.device)
            zero = torch.zeros((), dtype=torch.float64, device=self.columns.device)
            return {
                "normalized_variance": nan,
                "transformation_variance": nan,
                "sample_variance": nan,
                "num_dead_units": zero,
                "num_units": zero,
                "num_samples": zero,
            }
        summary = _variance_compute(self.orbit_variance_sum, self.num_samples, self.columns)
        summary["num_samples"] = self.num_samples.clone()
        return summary
