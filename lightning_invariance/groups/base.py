"""The ``Group`` interface: an ordered, finite set of transformations acting on batches."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["BatchGroup", "Group"]


class Group(ABC):
    """An ordered, finite set of transformations ``(g_0 = identity, g_1, ..., g_{k-1})`` acting on batches.

    Continuous families (rotation by any angle) are represented by a fixed, seeded sample of their elements, so that
    the same elements are measured every epoch. Subclasses implement :meth:`_act` and, where the action only makes
    sense for some shapes, :meth:`_check_input`.

    A batch has the sample axis first: ``x`` of shape ``(N, ...)``. ``act(x, k)`` returns ``g_k . x`` with the same
    shape; ``orbit(x)`` returns all of them stacked as ``(|G|, N, ...)``.
    """

    def __init__(self, names: Sequence[str]) -> None:
        if len(names) < 1:
            raise ValueError(f"{type(self).__name__} needs at least one element (the identity), got none.")
        if len(set(names)) != len(names):
            raise ValueError(f"{type(self).__name__} element names must be unique, got {list(names)}.")
        self._names = list(names)

    def __len__(self) -> int:
        return len(self._names)

    @property
    def names(self) -> list[str]:
        """Element names, identity first (used in logged metric names, e.g. ``rot90``)."""
        return list(self._names)

    def check_input(self, x: Tensor) -> None:
        """Raise ``TypeError``/``ValueError`` (naming ``x``'s shape) when this group cannot act on the batch ``x``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{self!r}.act expects a torch.Tensor batch, got {type(x).__name__}.")
        self._check_input(x)

    def act(self, x: Tensor, k: int) -> Tensor:
        """Apply element ``k`` to the batch ``x`` (sample axis first); the result has the shape of ``x``."""
        if not 0 <= k < len(self):
            raise IndexError(f"{self!r} has {len(self)} elements (0..{len(self) - 1}), got element {k}.")
        self.check_input(x)
        if k == 0:
            return x
        out = self._act(x, k)
        if out.shape != x.shape:
            raise ValueError(
                f"{self!r} element {self._names[k]!r} changed the batch shape from {tuple(x.shape)} to "
                f"{tuple(out.shape)}; a group must map inputs to inputs of the same shape."
            )
        return out

    def orbit(self, x: Tensor) -> Tensor:
        """All transformed copies of ``x``, stacked as ``(|G|, N, ...)`` with the untransformed batch first."""
        return torch.stack([self.act(x, k) for k in range(len(self))])

    def valid_mask(self, k: int, shape: tuple[int, ...]) -> Tensor | None:
        """Where element ``k`` leaves an image of ``shape`` (``(..., H, W)``) valid: a 0/1 ``(H, W)`` mask.

        ``None`` (the default) means every position keeps image content (``rot90``, flips, cyclic shifts).
        Interpolating families return 0 where the result was filled from outside the image.
        """
        return None

    def _check_input(self, x: Tensor) -> None:  # noqa: B027 - optional hook, the default accepts any batch
        """Raise ``ValueError`` when ``x`` has a shape this group cannot act on."""

    @abstractmethod
    def _act(self, x: Tensor, k: int) -> Tensor:
        """Apply the non-identity element ``k`` to ``x``."""

    def _require_image(self, x: Tensor, square: bool = False) -> None:
        if x.ndim < 3:
            raise ValueError(
                f"{self!r} acts on image batches of shape (N, H, W) or (N, C, H, W); got shape {tuple(x.shape)}."
            )
        if square and x.shape[-1] != x.shape[-2]:
            raise ValueError(
                f"{self!r} maps an image to itself only when it is square (H == W); got H={x.shape[-2]}, "
                f"W={x.shape[-1]} (batch shape {tuple(x.shape)}). Pad or crop the inputs to a square."
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(|G|={len(self)})"


class BatchGroup(Group):
    """A group acting on structured batches (dicts of fields, graphs): subclasses override :meth:`act` whole.

    Its copies of a batch differ in structure from a stack of tensors, so :func:`lightning_invariance.batches.
    orbit_batch` joins them along the sample axis instead of :meth:`orbit` stacking them.
    """

    def orbit(self, x: Any) -> Any:
        """Not a stack: ``lightning_invariance.batches.orbit_batch`` joins the copies into one batch."""
        raise TypeError(f"{self!r} acts on structured batches: use lightning_invariance.batches.orbit_batch.")

    def _act(self, x: Tensor, k: int) -> Tensor:  # pragma: no cover - act is overridden whole
        raise NotImplementedError
