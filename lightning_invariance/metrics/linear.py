"""TorchMetrics classes for fitted linear equivariance (Lenc & Vedaldi 2015): fit the maps, then measure them."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from lightning_invariance._checks import check_orbit_features
from lightning_invariance.functional.deviation import NAN_STRATEGIES, finite_samples, screen_non_finite
from lightning_invariance.functional.distances import check_choice
from lightning_invariance.functional.linear import (
    DEFAULT_RIDGE,
    _linear_evaluate,
    _linear_fit_update,
    fit_linear_maps,
    pooled_orbit,
)
from lightning_invariance.functional.normalizer import DEFAULT_NORMALIZER_WINDOW
from lightning_invariance.groups.base import Group
from lightning_invariance.metrics._base import SummaryMetric
from lightning_invariance.metrics._checks import (
    add_count,
    check_group_size,
    check_positive,
    nan_except,
    non_finite_counts,
    refuses_non_finite,
    warn_nan,
)
from lightning_invariance.metrics._normalizer import WindowNormalizer
from lightning_invariance.metrics._records import FoldedRecords

__all__ = ["LinearEquivariance", "LinearMapFit"]


def _check_pooling(pool_size: int, max_features: int, seed: int) -> None:
    check_positive("pool_size", pool_size)
    check_positive("max_features", max_features)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"Expected argument `seed` to be an int, but got {seed!r}.")


def _add_sums(earlier: tuple[Tensor, ...], later: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """``X^T X`` and ``X^T Y`` of two parts of the data, summed; parts of another width raise."""
    if later[0].shape != earlier[0].shape:
        raise ValueError(
            f"Expected {earlier[0].shape[0] - 1} pooled values per sample as in earlier updates, but got "
            f"{later[0].shape[0] - 1}: one metric fits one layer's maps."
        )
    return earlier[0] + later[0], earlier[1] + later[1]


class LinearMapFit(SummaryMetric):
    r"""Fit one affine map per group element, ``f(g.x) ~ M_g [f(x); 1]``, by ridge regression (Lenc & Vedaldi 2015).

    ``update`` accumulates the float64 sums ``X^T X`` and ``X^T Y_g`` of pooled features (``X = [f(x), 1]``,
    ``Y_g = f(g.x)``; see :mod:`lightning_invariance.functional.linear` for the pooling); ``compute`` reduces them
    across processes and solves the ridge regressions. Samples whose features hold NaN/inf are left out of the sums
    on the device and counted (``update`` reads nothing back from it); ``nan_strategy`` says what ``compute`` does
    about them. Measure the maps on held-out data with
    :meth:`held_out_metric` (a :class:`LinearEquivariance`). The width of the sums is set by the first batch;
    TorchMetrics merges them as records (see ``metrics/_records.py``), so a process that saw nothing is fine.

    As input to ``update``:
        - ``orbit_features`` (:class:`~torch.Tensor`): ``(|G|, N, ...)``, identity first.

    As output of ``compute``:
        - the maps ``(|G|, F+1, F)`` (float64): ``f(g.x) ~ [f(x), 1] @ maps[g]``. :meth:`compute_summary` adds
          ``fit_samples`` (the samples the maps were fitted on), ``num_skipped`` and ``num_non_finite``.

    Args:
        num_elements: ``|G|``, or the group.
        ridge: penalty relative to the mean squared feature value.
        pool_size, max_features, seed: how features are made small, as in
            :func:`~lightning_invariance.functional.linear_equivariance_deviation`.
        nan_strategy: ``"error"`` (the default): :meth:`compute` raises when any sample's features held NaN/inf
            (:meth:`compute_summary` gives NaN maps and the count); ``"skip"``: the maps are fitted on the other
            samples, and :meth:`compute` warns how many were left out.
        kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_invariance.groups import Permutation
        >>> group = Permutation(dim=1, num_elements=3)
        >>> fit = LinearMapFit(group, ridge=1e-9)
        >>> fit.update(group.orbit(torch.randn(40, 5)))
        >>> metric = fit.held_out_metric(normalize=True)
        >>> metric.update(group.orbit(torch.randn(20, 5)))
        >>> summary = metric.compute_summary()
        >>> bool(summary["linear_geed_normalized"] < 1e-6), bool(summary["invariance_geed_normalized"] > 0.5)
        (True, True)
    """

    higher_is_better = None
    _compute_key = "maps"

    #: ``X^T X`` and ``X^T Y`` summed over the fitting samples, decoded between updates.
    sums = FoldedRecords(_add_sums)
    fit_samples: Tensor
    num_non_finite: Tensor

    def __init__(
        self,
        num_elements: int | Group,
        ridge: float = DEFAULT_RIDGE,
        pool_size: int = 2,
        max_features: int = 256,
        seed: int = 0,
        nan_strategy: str = "error",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        num_elements = len(num_elements) if isinstance(num_elements, Group) else num_elements
        check_group_size(num_elements)
        _check_pooling(pool_size, max_features, seed)
        if not isinstance(ridge, (int, float)) or isinstance(ridge, bool) or ridge < 0:
            raise ValueError(f"Expected argument `ridge` to be a non-negative float, but got {ridge!r}.")
        check_choice("nan_strategy", nan_strategy, NAN_STRATEGIES)
        self.num_elements, self.ridge, self.nan_strategy = num_elements, float(ridge), nan_strategy
        self.pool_size, self.max_features, self.seed = pool_size, max_features, seed
        self.add_state("sums", [], dist_reduce_fx="cat")
        self.add_state("fit_samples", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_non_finite", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, orbit_features: Tensor) -> None:
        """Add a fitting batch of orbit features ``(|G|, N, ...)``; samples holding NaN/inf are counted, not fitted."""
        check_orbit_features(orbit_features, self.num_elements)
        if orbit_features.shape[1] == 0:
            return
        finite = finite_samples(orbit_features)  # on the device: the sums leave the other samples out by selection
        pooled = pooled_orbit(orbit_features, self.pool_size, self.max_features, self.seed)
        type(self).sums.add(self, _linear_fit_update(pooled, finite), self.fit_samples.device)
        num_finite = finite.sum().to(self.fit_samples.device)
        self.fit_samples.add_(num_finite)
        self.num_non_finite.add_(finite.numel() - num_finite)

    def held_out_metric(self, **kwargs: Any) -> LinearEquivariance:
        """A :class:`LinearEquivariance` measuring the fitted maps, pooled alike; ``kwargs`` go to it.

        It takes this metric's ``nan_strategy`` unless ``kwargs`` give one.
        """
        kwargs = {"nan_strategy": self.nan_strategy} | kwargs
        return LinearEquivariance(
            self.compute(), pool_size=self.pool_size, max_features=self.max_features, seed=self.seed, **kwargs
        ).to(self.fit_samples.device)

    def _summary(self, warn: bool) -> dict[str, Tensor]:
        seen = self.fit_samples + self.num_non_finite
        refused = refuses_non_finite(self.nan_strategy, self.num_non_finite, seen, raise_error=warn)
        sums = type(self).sums.folded(self)
        if sums is None:
            raise ValueError(
                "Cannot fit the linear maps: no fitting samples were seen. Update the metric before compute()."
            )
        unfitted = float(self.fit_samples) == 0  # every sample seen held NaN/inf (and was left out)
        if warn and unfitted:
            raise ValueError(
                f"Cannot fit the linear maps: all {int(seen)} fitting samples held NaN or infinite values. Fix the "
                "model or inputs, or measure a layer whose values are finite."
            )
        if warn and self.nan_strategy == "skip" and float(self.num_non_finite) > 0:
            warnings.warn(
                f"LinearMapFit left out {int(self.num_non_finite)} of {int(seen)} fitting samples whose features are "
                "NaN or infinite.",
                stacklevel=3,
            )
        xtx, xty = sums
        if unfitted or refused:  # no finite sample, or NaN/inf features refused: no map stands for the data given
            maps = torch.full_like(xty, float("nan"))
        else:
            maps = fit_linear_maps(xtx, xty, float(self.fit_samples), self.ridge)
        counts = {"fit_samples": self.fit_samples.clone()} | non_finite_counts(self.nan_strategy, self.num_non_finite)
        return {"maps": maps} | counts


class LinearEquivariance(SummaryMetric, WindowNormalizer):
    r"""Held-out G-EED of ``f(g.x)`` against fitted affine maps ``M_g f(x)``, next to the invariance G-EED.

    ``||f(g.x) - M_g [f(x); 1]||`` and, for comparison, ``||f(g.x) - f(x)||`` on the same pooled features. A low
    fitted score with a high invariance score means *equivariant but not invariant*; both high means *neither*. Fit
    the maps with :class:`LinearMapFit` (its :meth:`~LinearMapFit.held_out_metric` builds this metric) or pass them.

    As input to ``update``:
        - ``orbit_features`` (:class:`~torch.Tensor`): ``(|G|, N, ...)``, identity first.

    As output of ``compute``:
        - the held-out fitted G-EED, divided with ``normalize=True`` by the mean distance between different held-out
          inputs' pooled features (pairs as in :class:`InvarianceDeviation`). :meth:`compute_summary` returns
          ``linear_geed``, ``linear_geed_normalized``, ``invariance_geed``, ``invariance_geed_normalized``,
          ``per_element_linear``, ``per_element_invariance``, ``pair_mean``, ``num_samples``, ``num_skipped`` and
          ``num_non_finite``.

    Args:
        maps: ``(|G|, F+1, F)`` fitted maps (from :class:`LinearMapFit`); kept as a buffer (in ``state_dict``).
        normalize: make :meth:`compute` return the normalised score.
        pool_size, max_features, seed: the pooling the maps were fitted on.
        normalizer_window: the normaliser's pairs, as in :class:`InvarianceDeviation`.
        nan_strategy: ``"error"`` (the default): samples whose features hold NaN/inf are counted on the device (no
            host sync), and :meth:`compute` raises when there were any (:meth:`compute_summary` gives NaN scores and
            the count); ``"skip"``: they are left out with a warning (one host sync per update).
        kwargs: passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better = False
    plot_lower_bound = 0.0

    maps: Tensor
    linear_sum: Tensor
    invariance_sum: Tensor
    num_samples: Tensor
    num_non_finite: Tensor
    pair_sum: Tensor
    pair_count: Tensor

    def __init__(
        self,
        maps: Tensor,
        normalize: bool = False,
        pool_size: int = 2,
        max_features: int = 256,
        seed: int = 0,
        normalizer_window: int = DEFAULT_NORMALIZER_WINDOW,
        nan_strategy: str = "error",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(maps, Tensor) or maps.ndim != 3 or maps.shape[1] != maps.shape[2] + 1:
            shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise ValueError(f"Expected `maps` of shape (|G|, F+1, F) from LinearMapFit, but got {shape}.")
        _check_pooling(pool_size, max_features, seed)
        check_choice("nan_strategy", nan_strategy, NAN_STRATEGIES)
        self.normalize, self.normalizer_window, self.nan_strategy = bool(normalize), normalizer_window, nan_strategy
        self.pool_size, self.max_features, self.seed = pool_size, max_features, seed
        self.num_elements = maps.shape[0]
        self._compute_key = "linear_geed_normalized" if self.normalize else "linear_geed"
        self.register_buffer("maps", maps.detach().to(torch.float64).clone())
        f64 = torch.float64
        self.add_state("linear_sum", torch.zeros(self.num_elements, dtype=f64), dist_reduce_fx="sum")
        self.add_state("invariance_sum", torch.zeros(self.num_elements, dtype=f64), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("num_non_finite", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self._add_normalizer_states("euclidean", normalizer_window)

    def update(self, orbit_features: Tensor) -> None:
        """Add a held-out batch of orbit features ``(|G|, N, ...)``."""
        check_orbit_features(orbit_features, self.num_elements)
        orbit_features, non_finite = screen_non_finite(orbit_features, self.nan_strategy)
        add_count(self.num_non_finite, non_finite)
        pooled = pooled_orbit(orbit_features, self.pool_size, self.max_features, self.seed).to(self.maps.device)
        if pooled.shape[2] + 1 != self.maps.shape[1]:
            raise ValueError(
                f"The held-out features have {pooled.shape[2]} pooled values but the maps were fitted on "
                f"{self.maps.shape[1] - 1}."
            )
        if pooled.shape[1] == 0:
            return
        linear, invariance = _linear_evaluate(pooled, self.maps)
        self.linear_sum.add_(linear.sum(dim=1))
        self.invariance_sum.add_(invariance.sum(dim=1))
        self.num_samples.add_(pooled.shape[1])
        self._update_normalizer(pooled[0])

    def _summary(self, warn: bool) -> dict[str, Tensor]:
        n = self.num_samples
        refused = refuses_non_finite(self.nan_strategy, self.num_non_finite, n, raise_error=warn)
        if warn and float(n) == 0:
            warn_nan("LinearEquivariance has seen no held-out sample: its value is NaN.")
        pair_mean = self._normalizer_mean()
        if warn and self.normalize and float(n) > 0 and bool(torch.isnan(pair_mean)):
            warn_nan("The normalised LinearEquivariance needs two or more held-out samples: its value is NaN.")
        linear, invariance = self.linear_sum / n, self.invariance_sum / n
        summary = {
            "linear_geed": linear.mean(),
            "linear_geed_normalized": linear.mean() / pair_mean,
            "invariance_geed": invariance.mean(),
            "invariance_geed_normalized": invariance.mean() / pair_mean,
            "per_element_linear": linear,
            "per_element_invariance": invariance,
            "pair_mean": pair_mean,
        }
        if refused:  # distances and pairs mix in NaN/inf: none is a number (the counts stay)
            summary = nan_except(summary, ())
        return summary | {"num_samples": n.clone()} | non_finite_counts(self.nan_strategy, self.num_non_finite)
