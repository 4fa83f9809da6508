"""The one summary protocol of the package's metrics: ``compute_summary()`` and ``compute()`` read one dict."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchmetrics import Metric

__all__ = ["SummaryMetric"]


class SummaryMetric(Metric):
    """A metric whose statistics come as one dict, synchronised across processes like ``compute()``.

    Subclasses write ``_summary()`` (the dict, from the states as they are) and name the entry ``compute()`` returns
    in ``_compute_key``; :meth:`compute_summary` synchronises the states through TorchMetrics' public
    ``sync_context`` exactly as ``compute()`` does, so the two never disagree.
    """

    full_state_update = False
    is_differentiable = False
    _compute_key: str

    def compute(self) -> Tensor:
        """The metric's score (see the class docstring)."""
        return self._summary(warn=True)[self._compute_key]

    def compute_summary(self) -> dict[str, Tensor]:
        """Every statistic at once (the keys are listed in the class docstring), synchronised like ``compute()``."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            return self._summary(warn=False)

    def _summary(self, warn: bool) -> dict[str, Tensor]:
        """The statistics from the current states; ``warn`` when a value is NaN for lack of data."""
        raise NotImplementedError

    def plot(self, val: Tensor | list[Tensor] | None = None, ax: Any = None) -> Any:
        """Plot one value or a series of values of ``compute()`` (needs matplotlib); returns ``(figure, axis)``.

        Example:
            >>> import torch
            >>> from lightning_invariance.metrics import InvarianceDeviation
            >>> metric = InvarianceDeviation(num_elements=2)
            >>> values = []
            >>> for _ in range(3):
            ...     values.append(metric(torch.randn(2, 8, 5)))
            >>> figure, axis = metric.plot(values)
        """
        return self._plot(val, ax)
