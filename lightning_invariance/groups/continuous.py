"""Continuous families measured on a fixed, seeded set of elements: rotations by any angle and scalings."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_invariance._checks import check_positive
from lightning_invariance._sync import constant_on
from lightning_invariance.groups.base import Group

__all__ = ["ContinuousRotation", "Scaling", "affine_transform", "rotation_matrix"]


def rotation_matrix(degrees: float) -> Tensor:
    """The 2x3 ``affine_grid`` matrix of a counter-clockwise rotation (the direction of ``torch.rot90``)."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    return torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=torch.float64)


def affine_transform(x: Tensor, matrix: Tensor, mode: str = "bilinear", padding_mode: str = "zeros") -> Tensor:
    """Resample the last two axes of ``x`` through a 2x3 affine matrix in ``affine_grid``'s normalised coordinates.

    Output pixel ``p`` takes the value of the input at ``matrix @ (p, 1)``; pixels mapped outside the image are
    filled by ``padding_mode``. Works for any number of leading axes and for integer or float dtypes.
    """
    shape = x.shape
    images = x.reshape(-1, 1, shape[-2], shape[-1])
    work_dtype = x.dtype if x.is_floating_point() else torch.float32
    images = images.to(work_dtype)
    theta = matrix.to(device=x.device, dtype=work_dtype).unsqueeze(0).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    return out.reshape(shape).to(x.dtype)


def _seeded_uniform(count: int, low: float, high: float, seed: int) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    return (low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)).tolist()


class _AffineFamily(Group):
    """Elements given by 2x3 affine matrices, resampled with ``grid_sample``."""

    def __init__(self, names: Sequence[str], matrices: Sequence[Tensor], mode: str, padding_mode: str) -> None:
        if mode not in ("bilinear", "nearest", "bicubic"):
            raise ValueError(f"Expected argument `mode` to be one of ('bilinear', 'nearest', 'bicubic'), got {mode!r}.")
        if padding_mode not in ("zeros", "border", "reflection"):
            raise ValueError(
                f"Expected `padding_mode` to be one of ('zeros', 'border', 'reflection'), got {padding_mode!r}."
            )
        self.mode, self.padding_mode = mode, padding_mode
        self._matrices = list(matrices)
        super().__init__(names)

    def _check_input(self, x: Tensor) -> None:
        self._require_image(x)

    def _act(self, x: Tensor, k: int) -> Tensor:
        return affine_transform(x, constant_on(self._matrices[k], x.device), self.mode, self.padding_mode)

    def valid_mask(self, k: int, shape: tuple[int, ...]) -> Tensor:
        """1 where every input pixel that element ``k`` samples lies inside the image, else 0 (``(H, W)``)."""
        if len(shape) < 2:
            raise ValueError(f"{self!r}.valid_mask needs a shape ending in (H, W), got {tuple(shape)}.")
        ones = torch.ones(1, shape[-2], shape[-1], dtype=torch.float64)
        coverage = affine_transform(ones, self._matrices[k], "bilinear", "zeros")[0]
        return (coverage >= 1.0 - 1e-6).to(torch.get_default_dtype())


class ContinuousRotation(_AffineFamily):
    """Rotations by arbitrary angles (degrees, counter-clockwise), interpolated; identity first.

    Give the non-identity ``angles`` explicitly, or ``num_elements`` (identity included) drawn uniformly from
    ``[-max_degrees, max_degrees]`` with a private generator seeded by ``seed``: the same angles every time,
    and the global RNG is not touched.

    Example:
        >>> ContinuousRotation(angles=[15, -15]).names
        ['identity', 'rot15', 'rot-15']
        >>> ContinuousRotation(num_elements=3, seed=0).angles == ContinuousRotation(num_elements=3, seed=0).angles
        True
    """

    def __init__(
        self,
        angles: Sequence[float] | None = None,
        num_elements: int = 8,
        max_degrees: float = 180.0,
        seed: int = 0,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
    ) -> None:
        if angles is None:
            check_positive("num_elements", num_elements, "ContinuousRotation")
            angles = _seeded_uniform(num_elements - 1, -max_degrees, max_degrees, seed)
        angles = [float(a) for a in angles]
        if any(a % 360.0 == 0.0 for a in angles):
            raise ValueError(
                "The rotation by 0 degrees is the identity, element 0, and is added automatically: "
                f"leave it out of `angles` (got {angles})."
            )
        self.angles = [0.0, *angles]
        names = ["identity"] + [f"rot{a:.4g}" for a in angles]
        super().__init__(names, [rotation_matrix(a) for a in self.angles], mode, padding_mode)

    def __repr__(self) -> str:
        return f"ContinuousRotation(angles={[round(a, 3) for a in self.angles[1:]]})"


class Scaling(_AffineFamily):
    """Zooms about the image centre by the given factors (> 1 enlarges), interpolated; identity first.

    Give the non-identity ``factors`` explicitly, or ``num_elements`` (identity included) drawn log-uniformly from
    ``factor_range`` with a private generator seeded by ``seed``.
    """

    def __init__(
        self,
        factors: Sequence[float] | None = None,
        num_elements: int = 8,
        factor_range: tuple[float, float] = (0.8, 1.25),
        seed: int = 0,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
    ) -> None:
        if factors is None:
            check_positive("num_elements", num_elements, "Scaling")
            low, high = factor_range
            if not 0 < low <= high:
                raise ValueError(f"Expected `factor_range` to be (low, high) with 0 < low <= high, got {factor_range}.")
            factors = [math.exp(v) for v in _seeded_uniform(num_elements - 1, math.log(low), math.log(high), seed)]
        factors = [float(f) for f in factors]
        if any(f <= 0 for f in factors) or any(f == 1.0 for f in factors):
            raise ValueError(
                "Expected positive scale `factors` other than 1 (the identity is element 0 and is added "
                f"automatically), but got {factors}."
            )
        self.factors = [1.0, *factors]
        matrices = [torch.tensor([[1 / f, 0.0, 0.0], [0.0, 1 / f, 0.0]], dtype=torch.float64) for f in self.factors]
        super().__init__(["identity"] + [f"scale{f:.4g}" for f in factors], matrices, mode, padding_mode)

    def __repr__(self) -> str:
        return f"Scaling(factors={[round(f, 4) for f in self.factors[1:]]})"
