"""The argument checks every module shares: positive ints, and the shape of orbit features.

Metrics and groups raise the torchmetrics-style ``TypeError``/``ValueError``; the callback raises its own.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["check_optional_positive", "check_orbit_features", "check_positive", "is_positive_int"]


def is_positive_int(value: Any) -> bool:
    """An ``int`` (not a ``bool``) of at least 1."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_positive(name: str, value: Any, owner: str | None = None) -> None:
    """Accept a positive int; raise the torchmetrics-style ``ValueError`` naming the argument (and its class)."""
    if not is_positive_int(value):
        where = f"`{name}`" + (f" of {owner}" if owner else "")
        raise ValueError(f"Expected argument {where} to be a positive int, but got {value!r}.")


def check_optional_positive(name: str, value: Any, owner: str | None = None) -> None:
    """Accept ``None`` or a positive int; raise the torchmetrics-style ``ValueError`` otherwise."""
    if value is not None and not is_positive_int(value):
        where = f"`{name}`" + (f" of {owner}" if owner else "")
        raise ValueError(f"Expected argument {where} to be None or a positive int, but got {value!r}.")


def check_orbit_features(orbit_features: Any, num_elements: int | None = None, min_samples: int = 0) -> None:
    """Accept a tensor ``(|G|, N, ...)`` with ``|G| >= 1`` (``num_elements`` if given) and ``N >= min_samples``.

    A non-tensor raises ``TypeError``; a wrong shape raises ``ValueError`` with the shape received.
    """
    if not isinstance(orbit_features, Tensor):
        raise TypeError(f"Expected `orbit_features` to be a torch.Tensor, but got {type(orbit_features).__name__}.")
    shape = tuple(orbit_features.shape)
    if len(shape) < 2 or shape[0] < 1 or shape[1] < min_samples:
        at_least = f", with at least {min_samples} sample{'s' if min_samples > 1 else ''}" if min_samples else ""
        raise ValueError(
            "Expected `orbit_features` of shape (|G|, N, ...): one row per group element (identity first) and one "
            f"column per sample{at_least}, but got shape {shape}."
        )
    if num_elements is not None and shape[0] != num_elements:
        raise ValueError(
            f"Expected `orbit_features` to have {num_elements} group elements on axis 0 (the metric's `num_elements`),"
            f" but got shape {shape}."
        )
