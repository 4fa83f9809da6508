"""Argument checks the metric classes share."""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor

from lightning_invariance._checks import check_optional_positive, check_positive

__all__ = ["check_labels", "check_optional_positive", "check_positive", "warn_nan"]


def check_labels(labels: Any, orbit_features: Tensor, num_classes: int) -> None:
    """Require integer class labels ``(N,)`` in ``[0, num_classes)``, one per sample of the orbit features."""
    if not isinstance(labels, Tensor):
        raise ValueError(
            f"This metric was built with num_classes={num_classes}: pass the class labels (N,) as `labels`, got "
            f"{type(labels).__name__}."
        )
    if labels.ndim != 1 or labels.shape[0] != orbit_features.shape[1] or labels.is_floating_point():
        raise ValueError(
            f"Expected `labels` to be integer class labels of shape ({orbit_features.shape[1]},), one per sample, but "
            f"got dtype {labels.dtype} and shape {tuple(labels.shape)}."
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"Expected `labels` in [0, {num_classes}) (num_classes={num_classes}), but got values in "
            f"[{int(labels.min())}, {int(labels.max())}]."
        )


def warn_nan(message: str) -> None:
    """Warn that a computed value is NaN for lack of data (a NaN is never returned silently)."""
    warnings.warn(message, RuntimeWarning, stacklevel=4)
