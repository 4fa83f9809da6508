"""Argument checks the metric classes share."""

from __future__ import annotations

import warnings
from collections.abc import Collection
from typing import Any

import torch
from torch import Tensor

from lightning_invariance._checks import check_optional_positive, check_positive
from lightning_invariance._sync import branches_on_host

__all__ = [
    "add_count",
    "check_group_size",
    "check_label_range",
    "check_labels",
    "check_optional_positive",
    "check_positive",
    "nan_except",
    "non_finite_counts",
    "refuses_non_finite",
    "warn_nan",
]


def check_labels(labels: Any, orbit_features: Tensor, num_classes: int) -> None:
    """Require integer class labels ``(N,)``, one per sample of the orbit features, in ``[0, num_classes)``.

    The range is checked here where reading a value back is free (the CPU); on accelerators the metric counts labels
    out of range on the device and refuses them at ``compute()``, so that ``update`` never waits for the device.
    """
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
    if branches_on_host(labels.device):
        check_label_range(labels, num_classes)


def check_label_range(labels: Tensor, num_classes: int) -> None:
    """Require ``labels`` in ``[0, num_classes)`` (reads their range back from the device)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"Expected `labels` in [0, {num_classes}) (num_classes={num_classes}), but got values in "
            f"[{int(labels.min())}, {int(labels.max())}]."
        )


def check_group_size(num_elements: Any) -> None:
    """Accept ``|G|``, a positive int; warn when it is 1, where every deviation is 0 by definition."""
    check_positive("num_elements", num_elements)
    if num_elements == 1:
        warnings.warn(
            "The group holds only the identity (|G| = 1): each sample is compared with itself, so every deviation is "
            "0 and every prediction consistent by definition, whatever the model. `num_elements` counts the "
            "identity: the identity and one transformation are num_elements=2.",
            UserWarning,
            stacklevel=4,
        )


def warn_nan(message: str) -> None:
    """Warn that a computed value is NaN for lack of data (a NaN is never returned silently)."""
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def refuses_non_finite(nan_strategy: str, num_non_finite: Tensor, num_samples: Tensor, raise_error: bool) -> bool:
    """Whether samples counted with NaN/inf features leave no statistic a number (``nan_strategy="error"``).

    The metrics count such samples on the device while updating (no host sync) and look once, here: ``compute()``
    (``raise_error``) raises, ``compute_summary()`` gives NaN statistics with the counts.
    """
    refused = nan_strategy == "error" and float(num_non_finite) > 0
    if refused and raise_error:
        raise ValueError(
            f"The features held NaN or infinite values for {int(num_non_finite)} of {int(num_samples)} samples. "
            "Fix the model or inputs, or pass nan_strategy='skip' to leave those samples out with a warning."
        )
    return refused


def nan_except(summary: dict[str, Tensor], counts: Collection[str]) -> dict[str, Tensor]:
    """``summary`` with every value NaN (float64) except the ``counts``."""
    return {
        key: value if key in counts else torch.full_like(value, float("nan"), dtype=torch.float64)
        for key, value in summary.items()
    }


def add_count(state: Tensor, count: Tensor | int) -> None:
    """Add ``count`` (an int, or a tensor on any device) to the count state ``state`` in place (no host sync)."""
    state.add_(count.to(state.device) if isinstance(count, Tensor) else count)


def non_finite_counts(nan_strategy: str, num_non_finite: Tensor) -> dict[str, Tensor]:
    """A summary's ``num_skipped`` (the samples left out, under ``"skip"``) and ``num_non_finite``."""
    skipped = num_non_finite if nan_strategy == "skip" else torch.zeros_like(num_non_finite)
    return {"num_skipped": skipped.clone(), "num_non_finite": num_non_finite.clone()}
