"""Exact and interpolated symmetries of square image grids: rotations, flips, the dihedral group, translations."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from lightning_invariance._checks import check_positive
from lightning_invariance._sync import constant_on
from lightning_invariance.groups.base import Group
from lightning_invariance.groups.continuous import affine_transform, rotation_matrix

__all__ = ["CyclicRotation", "CyclicTranslation", "Dihedral", "Flip"]


def _format_degrees(degrees: float) -> str:
    return f"{degrees:g}"


def _rotate(x: Tensor, degrees: float) -> Tensor:
    """Rotate the last two axes counter-clockwise (as ``torch.rot90``); exact for multiples of 90 degrees."""
    quarter_turns = degrees / 90.0
    if math.isclose(quarter_turns, round(quarter_turns), abs_tol=1e-9):
        return torch.rot90(x, round(quarter_turns) % 4, dims=(-2, -1))
    return affine_transform(x, constant_on(_rotation(degrees), x.device))


@functools.lru_cache(maxsize=256)
def _rotation(degrees: float) -> Tensor:
    """One matrix per angle, kept: :func:`constant_on` then copies it to a device once."""
    return rotation_matrix(degrees)


class CyclicRotation(Group):
    """The cyclic group C_n of rotations by multiples of ``360 / n`` degrees about the image centre.

    Rotations by multiples of 90 degrees use ``torch.rot90`` and are exact; the others (n not dividing 4) are
    bilinearly interpolated with zero padding, so they lose the corners and are only approximately a group.
    Acts on the last two axes of ``(N, H, W)`` or ``(N, C, H, W)`` batches of square images.

    Example:
        >>> import torch
        >>> group = CyclicRotation(4)
        >>> group.names
        ['identity', 'rot90', 'rot180', 'rot270']
        >>> x = torch.arange(4.0).reshape(1, 2, 2)
        >>> group.act(x, 1)
        tensor([[[1., 3.],
                 [0., 2.]]])
    """

    def __init__(self, n: int = 4) -> None:
        check_positive("n", n, "CyclicRotation")
        self.n = n
        self.degrees = [360.0 * k / n for k in range(n)]
        super().__init__(["identity"] + [f"rot{_format_degrees(d)}" for d in self.degrees[1:]])

    def _check_input(self, x: Tensor) -> None:
        self._require_image(x, square=True)

    def _act(self, x: Tensor, k: int) -> Tensor:
        return _rotate(x, self.degrees[k])

    def valid_mask(self, k: int, shape: tuple[int, ...]) -> Tensor | None:
        """``None`` for the exact multiples of 90 degrees; for the others, 1 where the rotated image has content."""
        quarter_turns = self.degrees[k] / 90.0
        if math.isclose(quarter_turns, round(quarter_turns), abs_tol=1e-9):
            return None
        ones = torch.ones(1, shape[-2], shape[-1], dtype=torch.float64)
        coverage = affine_transform(ones, rotation_matrix(self.degrees[k]))[0]
        return (coverage >= 1.0 - 1e-6).to(torch.get_default_dtype())

    def __repr__(self) -> str:
        return f"CyclicRotation(n={self.n})"


class Flip(Group):
    """Mirror images: ``{identity, flip}`` about the vertical axis (``"horizontal"``) or the horizontal one."""

    _AXES: ClassVar[dict[str, int]] = {"horizontal": -1, "vertical": -2}

    def __init__(self, axis: str = "horizontal") -> None:
        if axis not in self._AXES:
            raise ValueError(f"Expected argument `axis` of Flip to be one of {tuple(self._AXES)}, but got {axis!r}.")
        self.axis = axis
        super().__init__(["identity", "hflip" if axis == "horizontal" else "vflip"])

    def _check_input(self, x: Tensor) -> None:
        self._require_image(x)

    def _act(self, x: Tensor, k: int) -> Tensor:
        return torch.flip(x, dims=(self._AXES[self.axis],))

    def __repr__(self) -> str:
        return f"Flip(axis={self.axis!r})"


class Dihedral(Group):
    """The dihedral group D_n: the n rotations of :class:`CyclicRotation`, then each of them after a horizontal flip.

    Element ``k < n`` is the rotation by ``360 k / n`` degrees; element ``n + k`` flips first, then rotates by the
    same angle. ``Dihedral(4)`` (the default) is the 8 exact symmetries of a square pixel grid.
    """

    def __init__(self, n: int = 4) -> None:
        check_positive("n", n, "Dihedral")
        self.n = n
        self.degrees = [360.0 * k / n for k in range(n)]
        rotations = ["identity"] + [f"rot{_format_degrees(d)}" for d in self.degrees[1:]]
        flips = ["hflip"] + [f"hflip_rot{_format_degrees(d)}" for d in self.degrees[1:]]
        super().__init__(rotations + flips)

    def _check_input(self, x: Tensor) -> None:
        self._require_image(x, square=True)

    def _act(self, x: Tensor, k: int) -> Tensor:
        if k >= self.n:
            x = torch.flip(x, dims=(-1,))
        return _rotate(x, self.degrees[k % self.n])

    def orbit(self, x: Tensor) -> Tensor:
        """As :meth:`Group.orbit`, the batch flipped once for all ``n`` flipped elements (one copy, one operation)."""
        self.check_input(x)
        copies = []
        for image in (x, torch.flip(x, dims=(-1,))):  # elements 0..n-1, then n..2n-1 (flipped first)
            copies += [image] + [_rotate(image, degrees) for degrees in self.degrees[1:]]
        return torch.stack(copies)

    def __repr__(self) -> str:
        return f"Dihedral(n={self.n})"


class CyclicTranslation(Group):
    """Cyclic shifts (``torch.roll``) of the last ``len(dims)`` axes by the given offsets; identity added first.

    Args:
        shifts: the non-identity offsets, one tuple of ``len(dims)`` ints each (e.g. ``[(0, 1), (1, 0)]`` for
            one-pixel shifts right and down). The zero shift is element 0 and must not be listed.
        dims: the axes to shift, counted on the batch (``(-2, -1)``: height and width; ``(-1,)`` for sequences).
    """

    def __init__(self, shifts: Sequence[Sequence[int]], dims: Sequence[int] = (-2, -1)) -> None:
        self.dims = tuple(int(d) for d in dims)
        if not self.dims or any(d == 0 for d in self.dims):
            raise ValueError(f"Expected argument `dims` to name non-batch axes (not 0), but got {tuple(dims)!r}.")
        parsed = []
        for shift in shifts:
            offsets = tuple(int(s) for s in (shift if isinstance(shift, Sequence) else (shift,)))
            if len(offsets) != len(self.dims):
                raise ValueError(
                    f"Each shift needs {len(self.dims)} offsets (one per axis in dims={self.dims}), but got {shift!r}."
                )
            if not any(offsets):
                raise ValueError(
                    "The zero shift is the identity, element 0, and is added automatically: leave it out of `shifts`."
                )
            parsed.append(offsets)
        self.shifts = [(0,) * len(self.dims), *parsed]
        super().__init__(["identity"] + ["shift" + "".join(f"{s:+d}" for s in offsets) for offsets in parsed])

    def _check_input(self, x: Tensor) -> None:
        if x.ndim < 1 + max(abs(d) if d < 0 else d for d in self.dims):
            raise ValueError(f"{self!r} shifts axes {self.dims} but the batch has shape {tuple(x.shape)}.")

    def _act(self, x: Tensor, k: int) -> Tensor:
        return torch.roll(x, shifts=self.shifts[k], dims=self.dims)

    def __repr__(self) -> str:
        return f"CyclicTranslation(shifts={self.shifts[1:]}, dims={self.dims})"
