"""TorchMetrics class for the variance-based invariance measures of Quiroga et al. (2023)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_invariance._checks import check_orbit_features
from lightning_invariance.functional.deviation import screen_non_finite
from lightning_invariance.functional.variance import DEFINITIONS, _variance_compute, _variance_update, chan_merge
from lightning_invariance.metrics._base import SummaryMetric
from lightning_invariance.metrics._checks import add_count, nan_except, non_finite_counts, refuses_non_finite, warn_nan
from lightning_invariance.metrics._records import FoldedRecords

__all__ = ["NormalizedVariance"]


def _merge_statistics(earlier: tuple[Tensor, ...], later: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """Summed orbit spreads and Chan-merged column statistics of two consecutive parts of the data."""
    if later[1].shape != earlier[1].shape:
        raise ValueError(
            f"Expected orbit features with {earlier[1].shape[1]} group elements and {earlier[1].shape[2]} units as in "
            f"earlier updates, but got {later[1].shape[1]} elements and {later[1].shape[2]} units: one metric measures "
            "one layer (another layer's states cannot be merged either)."
        )
    return earlier[0] + later[0], chan_merge(earlier[1], later[1])


class NormalizedVariance(SummaryMetric):
    r"""Transformation, sample and normalised variance per unit, in one pass (Quiroga et al. 2023).

    .. math::
        NV = \operatorname{mean}_u \frac{\frac{1}{N}\sum_n s_g\, a[g,n,u]}{\frac{1}{|G|}\sum_g s_n\, a[g,n,u]}

    0 means transformations leave every unit where it was; 1 means they move units as much as changing the input.
    ``definition="tmeasures"`` (the default) reproduces the authors' reference implementation (every activation a
    unit, standard deviations with ``n - 1``, ``0/0 = 1``); ``"channel_variance"`` is this package's channel-mean
    variant. See :func:`~lightning_invariance.functional.normalized_variance` for both.

    The sample spread needs each (element, unit) column's mean over *all* inputs: it is kept as float64
    ``(count, mean, M2)`` and merged with Chan's parallel formula across ``update`` calls, ``forward``,
    ``merge_state`` and processes, so the result equals the two-pass one. The number of units is set by the first
    batch; the statistics are kept as records (``metrics/_records.py``), so a process that saw nothing is fine.
    ``update`` reads nothing back from the device (NaN/inf features are counted there, see ``nan_strategy``).

    As input to ``update``:
        - ``orbit_features`` (:class:`~torch.Tensor`): ``(|G|, N)``, ``(|G|, N, D)`` or ``(|G|, N, C, ...)``.

    As output of ``compute``:
        - the normalised variance (float64 scalar); NaN with a warning before any sample, or when fewer than two
          samples were seen. :meth:`compute_summary` returns ``normalized_variance``, ``transformation_variance``,
          ``sample_variance``, ``dead_units``, ``num_units``, ``num_samples``, ``num_skipped``, ``num_non_finite``
          and the ``per_unit_*`` tensors (NaN, counts 0, before any sample).

    Args:
        definition: ``"tmeasures"`` or ``"channel_variance"``.
        nan_strategy: ``"error"`` (the default): :meth:`compute` raises when any sample's features held NaN/inf, and
            :meth:`compute_summary` gives every statistic as NaN (the samples are counted on the device, so
            ``update`` never waits for it); ``"skip"``: such samples are left out with a warning (one host sync per
            ``update``).
        kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = NormalizedVariance(definition="channel_variance")
        >>> metric.update(torch.tensor([[[0.0], [2.0]], [[1.0], [3.0]]]))
        >>> metric.compute()
        tensor(0.2500, dtype=torch.float64)
    """

    higher_is_better = False
    plot_lower_bound = 0.0
    _compute_key = "normalized_variance"

    #: Summed orbit spreads and the (element, unit) column statistics, decoded between updates.
    statistics = FoldedRecords(_merge_statistics)
    num_samples: Tensor
    num_non_finite: Tensor

    def __init__(self, definition: str = "tmeasures", nan_strategy: str = "error", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if definition not in DEFINITIONS:
            raise ValueError(f"Expected argument `definition` to be one of {DEFINITIONS} but got {definition!r}.")
        if nan_strategy not in ("error", "skip"):
            raise ValueError(
                f"Expected argument `nan_strategy` to be one of ('error', 'skip') but got {nan_strategy!r}."
            )
        self.definition, self.nan_strategy = definition, nan_strategy
        self.add_state("statistics", [], dist_reduce_fx="cat")
        self.add_state("num_samples", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_non_finite", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, orbit_features: Tensor) -> None:
        """Add a batch of orbit features ``(|G|, N, ...)``."""
        check_orbit_features(orbit_features)
        device = self.num_samples.device
        orbit_features, non_finite = screen_non_finite(orbit_features, self.nan_strategy)
        if orbit_features.shape[1]:
            spread_sum, num_samples, columns = _variance_update(orbit_features, self.definition)
            type(self).statistics.add(self, (spread_sum, columns), device)
            self.num_samples.add_(num_samples)
        add_count(self.num_non_finite, non_finite)

    def _summary(self, warn: bool) -> dict[str, Tensor]:
        refused = refuses_non_finite(self.nan_strategy, self.num_non_finite, self.num_samples, raise_error=warn)
        folded = type(self).statistics.folded(self)
        counts = {"num_samples": self.num_samples.clone()} | non_finite_counts(self.nan_strategy, self.num_non_finite)
        if folded is None or float(self.num_samples) < 2:
            if warn:
                warn_nan(
                    f"NormalizedVariance needs two or more samples (a sample variance) but saw {int(self.num_samples)}:"
                    " its value is NaN."
                )
            nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.num_samples.device)
            zero = torch.zeros((), dtype=torch.float64, device=self.num_samples.device)
            units = zero if folded is None else zero + folded[1].shape[2]
            return counts | {
                "normalized_variance": nan,
                "transformation_variance": nan,
                "sample_variance": nan,
                "dead_units": zero,
                "num_units": units,
            }
        summary = _variance_compute(folded[0], self.num_samples, folded[1], self.definition)
        if refused:  # every statistic would mix in NaN/inf: none is a number (the counts stay)
            summary = nan_except(summary, ("num_units",))
        elif warn:
            self._warn_degenerate(summary)
        return summary | counts

    def _warn_degenerate(self, summary: dict[str, Tensor]) -> None:
        """Say why the value is no measure of invariance where every unit is dead, or inf where some unit is."""
        value, dead = float(summary["normalized_variance"]), int(summary["dead_units"])
        if dead == int(summary["num_units"]):
            convention = "counts 0/0 as 1" if self.definition == "tmeasures" else "leaves such units out"
            warn_nan(
                f"NormalizedVariance is {value}: every one of its {dead} units is dead (its transformation and sample "
                f"variances are both 0: a dead or constant layer), and {self.definition!r} {convention}."
            )
        elif value == float("inf"):
            warn_nan(
                "NormalizedVariance is inf: some unit varies under the transformations but not across inputs (sample "
                "variance 0, x/0 = inf as in tmeasures)."
            )
