"""TorchMetrics class for the Lie derivative (Gruver et al., ICLR 2023)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_invariance.functional.lie import _lie_update

__all__ = ["LieDerivative"]


class LieDerivative(Metric):
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
        - the normalised mean (``normalize=True``) or the mean ``||L f(x)||`` (float64 scalar).

    Example:
        >>> import torch
        >>> metric = LieDerivative()
        >>> metric.update(torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
        >>> metric.compute()
        tensor(0.1000, dtype=torch.float64)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0

    derivative_sum: Tensor
    relative_sum: Tensor
    num_samples: Tensor
    num_zero: Tensor
    max_relative: Tensor

    def __init__(self, normalize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.normalize = bool(normalize)
        f64 = torch.float64
        self.add_state("derivative_sum", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("relative_sum", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("num_zero", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("max_relative", torch.zeros((), dtype=f64), dist_reduce_fx="max")

    def update(self, features: Tensor, derivatives: Tensor) -> None:
        """Add a batch of representations and their Lie derivatives."""
        derivative_norms, feature_norms = _lie_update(features, derivatives)
        derivative_norms, feature_norms = (
            derivative_norms.to(self.num_samples.device),
            feature_norms.to(self.num_samples.device),
        )
        nonzero = feature_norms > 0
        relative = derivative_norms[nonzero] / feature_norms[nonzero]
        self.derivative_sum.add_(derivative_norms.sum())
        self.relative_sum.add_(relative.sum())
        self.num_samples.add_(derivative_norms.numel())
        self.num_zero.add_((~nonzero).sum())
        if relative.numel():
            torch.maximum(self.max_relative, relative.max(), out=self.max_relative)

    def compute(self) -> Tensor:
        """The mean relative (``normalize=True``) or raw Lie derivative norm."""
        return self._summary()["lie_derivative" if self.normalize else "lie_derivative_raw"]

    def compute_summary(self) -> dict[str, Tensor]:
        """Every score, synchronised like :meth:`compute`.

        ``lie_derivative`` (relative), ``lie_derivative_raw``, ``lie_derivative_max`` (the largest relative one),
        ``num_samples`` and ``num_zero``.
        """
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=self._should_unsync
        ):
            return self._summary()

    def _summary(self) -> dict[str, Tensor]:
        counted = self.num_samples - self.num_zero
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.num_samples.device)
        return {
            "lie_derivative": self.relative_sum / counted if float(counted) > 0 else nan,
            "lie_derivative_raw": self.derivative_sum / self.num_samples if float(self.num_samples) > 0 else nan,
            "lie_derivative_max": self.max_relative.clone() if float(counted) > 0 else nan,
            "num_samples": self.num_samples.clone(),
            "num_zero": self.num_zero.clone(),
        }
