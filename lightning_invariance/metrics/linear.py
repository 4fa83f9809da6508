"""TorchMetrics class for fitted linear equivariance (Lenc & Vedaldi 2015)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_invariance.functional.deviation import DEFAULT_MAX_NORMALIZER_PAIRS
from lightning_invariance.functional.distances import pair_distance_sums
from lightning_invariance.functional.linear import (
    DEFAULT_RIDGE,
    _linear_evaluate,
    _linear_fit_update,
    fit_linear_maps,
    pooled_orbit,
)
from lightning_invariance.metrics._checks import check_positive

__all__ = ["LinearEquivariance"]


class LinearEquivariance(Metric):
    r"""Held-out G-EED of ``f(g.x)`` against a fitted affine map ``M_g f(x)``, next to the invariance G-EED.

    Two phases. Until :meth:`fit` is called, ``update`` accumulates the float64 sums ``X^T X`` and ``X^T Y_g`` of
    the fitting set (``X = [f(x), 1]``, ``Y_g = f(g.x)``, on pooled features); :meth:`fit` reduces them across
    processes and solves one ridge regression per element. After it, ``update`` measures held-out batches:
    ``||f(g.x) - M_g [f(x); 1]||`` and, for comparison, ``||f(g.x) - f(x)||`` on the same pooled features. A low
    fitted score with a high invariance score means *equivariant but not invariant*; both high means *neither*.
    See :mod:`lightning_invariance.functional.linear` for what is pooled and projected.

    As input to ``update``:
        - ``orbit_features`` (:class:`~torch.Tensor`): ``(|G|, N, ...)``, identity first.

    As output of ``compute``:
        - the held-out fitted G-EED (normalised by the mean distance between different held-out inputs when
          ``normalize=True``); :meth:`compute_summary` adds the invariance scores and the fitted maps.

    Args:
        num_elements: ``|G|``.
        ridge: penalty relative to the mean squared feature value.
        normalize: make :meth:`compute` return the normalised score.
        pool_size, max_features, seed: how features are made small, as in
            :func:`~lightning_invariance.functional.linear_equivariance_deviation`.
        kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_invariance.groups import Permutation
        >>> group = Permutation(dim=1, num_elements=3)
        >>> metric = LinearEquivariance(num_elements=3, ridge=1e-9)
        >>> metric.update(group.orbit(torch.randn(40, 5)))  # fitting set
        >>> maps = metric.fit()
        >>> metric.update(group.orbit(torch.randn(20, 5)))  # held out
        >>> summary = metric.compute_summary()
        >>> bool(summary["linear_geed_normalized"] < 1e-6), bool(summary["invariance_geed_normalized"] > 0.5)
        (True, True)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0

    xtx: Tensor
    xty: Tensor
    fit_samples: Tensor
    linear_sum: Tensor
    invariance_sum: Tensor
    num_samples: Tensor
    pair_sum: Tensor
    pair_count: Tensor

    def __init__(
        self,
        num_elements: int,
        ridge: float = DEFAULT_RIDGE,
        normalize: bool = True,
        pool_size: int = 2,
        max_features: int = 256,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (("num_elements", num_elements), ("pool_size", pool_size), ("max_features", max_features)):
            check_positive(name, value)
        if not isinstance(ridge, (int, float)) or ridge < 0:
            raise ValueError(f"Expected argument `ridge` to be a non-negative float, but got {ridge!r}.")
        self.num_elements, self.ridge, self.normalize = num_elements, float(ridge), bool(normalize)
        self.pool_size, self.max_features, self.seed = pool_size, max_features, seed
        self.maps: Tensor | None = None
        f64 = torch.float64
        self.add_state("xtx", torch.zeros(0, 0, dtype=f64), dist_reduce_fx="sum")
        self.add_state("xty", torch.zeros(num_elements, 0, 0, dtype=f64), dist_reduce_fx="sum")
        self.add_state("fit_samples", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("linear_sum", torch.zeros(num_elements, dtype=f64), dist_reduce_fx="sum")
        self.add_state("invariance_sum", torch.zeros(num_elements, dtype=f64), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("pair_sum", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("pair_count", torch.zeros((), dtype=f64), dist_reduce_fx="sum")

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run since the last reset (``update`` then measures held-out data)."""
        return self.maps is not None

    def update(self, orbit_features: Tensor) -> None:
        """Add a fitting batch (before :meth:`fit`) or a held-out batch (after it) of orbit features."""
        if orbit_features.ndim < 2 or orbit_features.shape[0] != self.num_elements:
            raise ValueError(
                f"Expected `orbit_features` of shape ({self.num_elements}, N, ...) (num_elements on axis 0), but got "
                f"shape {tuple(orbit_features.shape)}."
            )
        pooled = pooled_orbit(orbit_features, self.pool_size, self.max_features, self.seed).to(self.xtx.device)
        if self.maps is None:
            xtx, xty = _linear_fit_update(pooled)
            if self.xtx.numel() == 0:
                self.xtx, self.xty = xtx, xty
            else:
                self.xtx.add_(xtx)
                self.xty.add_(xty)
            self.fit_samples.add_(pooled.shape[1])
            return
        if pooled.shape[2] + 1 != self.maps.shape[1]:
            raise ValueError(
                f"The held-out features have {pooled.shape[2]} pooled values but the maps were fitted on "
                f"{self.maps.shape[1] - 1}."
            )
        linear, invariance = _linear_evaluate(pooled, self.maps)
        self.linear_sum.add_(linear.sum(dim=1))
        self.invariance_sum.add_(invariance.sum(dim=1))
        self.num_samples.add_(pooled.shape[1])
        pair_sum, pair_count = pair_distance_sums(pooled[0], "euclidean", DEFAULT_MAX_NORMALIZER_PAIRS)
        self.pair_sum.add_(pair_sum.to(self.pair_sum.device))
        self.pair_count.add_(pair_count.to(self.pair_count.device))

    def fit(self) -> Tensor:
        """Fit ``M_g`` on everything updated so far (all processes under DDP); later updates are held out.

        Returns the maps ``(|G|, F+1, F)``: ``f(g.x) ~ [f(x), 1] @ maps[g]``.
        """
        if self.maps is not None:
            raise RuntimeError("LinearEquivariance.fit() was already called; reset() the metric to fit again.")
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=self._should_unsync
        ):
            self.maps = fit_linear_maps(self.xtx, self.xty, float(self.fit_samples), self.ridge)
        return self.maps

    def reset(self) -> None:
        """Forget the fitting sums, the maps and the held-out scores."""
        super().reset()
        self.maps = None

    def compute(self) -> Tensor:
        """The held-out fitted G-EED (normalised when ``normalize=True``)."""
        return self._summary()["linear_geed_normalized" if self.normalize else "linear_geed"]

    def compute_summary(self) -> dict[str, Tensor]:
        """``linear_geed`` and ``invariance_geed`` (raw, ``_normalized``, ``per_element_*``), and the counts.

        Raises ``RuntimeError`` before :meth:`fit`. Held-out scores are NaN before any held-out update.
        """
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=self._should_unsync
        ):
            return self._summary()

    def _summary(self) -> dict[str, Tensor]:
        if self.maps is None:
            raise RuntimeError(
                "LinearEquivariance: call fit() after the fitting updates, then update on held-out data."
            )
        n = self.num_samples
        pair_mean = self.pair_sum / self.pair_count
        linear, invariance = self.linear_sum / n, self.invariance_sum / n
        return {
            "linear_geed": linear.mean(),
            "linear_geed_normalized": linear.mean() / pair_mean,
            "invariance_geed": invariance.mean(),
            "invariance_geed_normalized": invariance.mean() / pair_mean,
            "per_element_linear": linear,
            "per_element_invariance": invariance,
            "pair_mean": pair_mean.clone(),
            "fit_samples": self.fit_samples.clone(),
            "num_samples": n.clone(),
        }
