"""Argument checks and small helpers of InvarianceMonitor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException

from lightning_invariance.callbacks._scores import LINEAR_SCORES
from lightning_invariance.functional.lie import GENERATORS
from lightning_invariance.groups.actions import RepresentationAction

__all__ = [
    "check_measure_options",
    "check_options",
    "check_positive",
    "has_matplotlib",
]


def check_measure_options(
    scores: Sequence[str],
    max_samples: int | None,
    lie_generator: str | None,
    num_classes: int | None,
    border_mask: bool,
    action: RepresentationAction | None,
) -> None:
    if any(score in LINEAR_SCORES for score in scores) and max_samples is None:
        raise MisconfigurationException(
            "The linear_* scores fit maps on half of the cached inputs and test them on the other half: set "
            "`max_samples` (e.g. 512), not None."
        )
    if ("lie_derivative" in scores) != (lie_generator is not None):
        raise MisconfigurationException(
            f'The "lie_derivative" score and `lie_generator` (one of {GENERATORS}) go together; got scores='
            f"{tuple(scores)} and lie_generator={lie_generator!r}."
        )
    if lie_generator is not None:
        check_options("lie_generator", (lie_generator,), GENERATORS)
    if num_classes is not None:
        check_positive("num_classes", num_classes)
    if border_mask and (action is None or action.trivial):
        raise MisconfigurationException("`border_mask=True` needs a spatial `action` (equivariance of feature maps).")


def check_options(name: str, values: Sequence[str], allowed: Sequence[str]) -> None:
    bad = [value for value in values if value not in allowed]
    if bad:
        raise MisconfigurationException(f"`{name}` accepts {tuple(allowed)}, but got {bad[0]!r}.")


def check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise MisconfigurationException(f"`{name}` must be a positive int, got {value!r}.")


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
