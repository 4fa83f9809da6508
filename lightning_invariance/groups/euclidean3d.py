"""Rotations, reflections and translations of 3-D point coordinates ``(..., P, 3)``: SO(3), O(3), E(3), the cube.

Every element is ``x -> x R^T + t`` on the last axis (the coordinates), for every point and every sample alike.
Continuous groups are a fixed, seeded sample (uniform on the group, drawn from a private generator, identity first),
so the same elements are measured every epoch; the cube's rotation group is exact (24 elements, 48 with
reflections). :meth:`matrices` and :meth:`translations` give each element's ``R`` and ``t`` (float64), which the
actions on vector outputs use (:class:`~lightning_invariance.groups.VectorAction`).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from lightning_invariance._checks import check_positive
from lightning_invariance._sync import constant_on
from lightning_invariance.groups.base import Group

__all__ = ["CubeRotations", "Euclidean3D", "RigidMotions", "Rotation3D", "Translation3D"]


class RigidMotions(Group):
    """Given rigid motions ``x -> x R_k^T + t_k`` of ``(..., 3)`` coordinates, identity first.

    For a molecule's point group, the rotations another library drew, or any finite set of elements to measure.

    Args:
        matrices: ``(|G|, 3, 3)`` orthogonal matrices, the identity first.
        translations: ``(|G|, 3)``, zero first; ``None`` for none.
        names: one per element, ``"identity"`` first; default ``identity, g1, g2, ...``.

    Example:
        >>> import torch
        >>> mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
        >>> group = RigidMotions(torch.stack([torch.eye(3), mirror]), names=["identity", "mirror_x"])
        >>> group.act(torch.tensor([[[1.0, 2.0, 3.0]]]), 1)
        tensor([[[-1.,  2.,  3.]]])
    """

    def __init__(self, matrices: Tensor, translations: Tensor | None = None, names: list[str] | None = None) -> None:
        matrices = torch.as_tensor(matrices, dtype=torch.float64)
        count = matrices.shape[0] if matrices.ndim == 3 else 0
        translations = torch.zeros(count, 3, dtype=torch.float64) if translations is None else translations
        translations = torch.as_tensor(translations, dtype=torch.float64)
        if matrices.ndim != 3 or matrices.shape[1:] != (3, 3) or translations.shape != (count, 3) or count == 0:
            raise ValueError(
                f"Expected `matrices` of shape (|G|, 3, 3) and `translations` of shape (|G|, 3), got "
                f"{tuple(matrices.shape)} and {tuple(translations.shape)}."
            )
        eye = torch.eye(3, dtype=torch.float64)
        if not torch.allclose(matrices @ matrices.transpose(1, 2), eye.expand(count, 3, 3), atol=1e-6):
            raise ValueError("Expected orthogonal matrices (R R^T = I): a rigid motion keeps distances.")
        if not torch.allclose(matrices[0], eye, atol=1e-12) or bool(translations[0].any()):
            raise ValueError("Expected the identity (R = I, t = 0) as element 0.")
        super().__init__(names or ["identity"] + [f"g{k}" for k in range(1, count)])
        if len(self) != count:
            raise ValueError(f"Expected {count} names, one per element, got {len(self)}.")
        self._rotations, self._translations = matrices, translations

    def matrices(self) -> Tensor:
        """Each element's orthogonal matrix ``R_k``, ``(|G|, 3, 3)`` float64; the identity first."""
        return self._rotations.clone()

    def translations(self) -> Tensor:
        """Each element's translation ``t_k``, ``(|G|, 3)`` float64 (zeros for rotation groups)."""
        return self._translations.clone()

    def _check_input(self, x: Tensor) -> None:
        if x.ndim < 2 or x.shape[-1] != 3:
            raise ValueError(
                f"{self!r} acts on 3-D coordinates: a batch of shape (N, ..., 3), e.g. (N, P, 3) point clouds; got "
                f"shape {tuple(x.shape)}."
            )
        if not x.is_floating_point():
            raise ValueError(f"{self!r} needs floating-point coordinates, got dtype {x.dtype}.")

    def _act(self, x: Tensor, k: int) -> Tensor:
        rotation = constant_on(self._rotations, x.device, x.dtype)[k]
        return x @ rotation.T + constant_on(self._translations, x.device, x.dtype)[k]


def _uniform_rotations(count: int, generator: torch.Generator) -> Tensor:
    """``count`` rotation matrices uniform on SO(3): normalised Gaussian quaternions (float64)."""
    q = torch.randn(count, 4, generator=generator, dtype=torch.float64)
    w, x, y, z = (q / q.norm(dim=1, keepdim=True)).unbind(1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        dim=1,
    )


class Rotation3D(RigidMotions):
    """A seeded sample of SO(3) (or O(3) with ``reflections=True``), identity first, acting on ``(..., 3)`` points.

    Rotations are uniform on SO(3) (Gaussian quaternions). With reflections, every second element is composed with
    the point reflection ``x -> -x``, so proper and improper elements alternate. Names: ``rot1``, ``rot2``, ...
    (``rotinv3``, ... for improper ones).

    Args:
        num_elements: how many elements, identity included.
        reflections: O(3) instead of SO(3).
        seed: seed of the private generator (the global RNG is untouched).

    Example:
        >>> import torch
        >>> group = Rotation3D(num_elements=4, seed=0)
        >>> points = torch.randn(2, 5, 3)
        >>> torch.allclose(group.act(points, 2).norm(dim=-1), points.norm(dim=-1), atol=1e-6)
        True
    """

    def __init__(self, num_elements: int = 8, reflections: bool = False, seed: int = 0) -> None:
        check_positive("num_elements", num_elements, "Rotation3D")
        self.reflections, self.seed = bool(reflections), int(seed)
        generator = torch.Generator().manual_seed(self.seed)
        identity = torch.eye(3, dtype=torch.float64)[None]
        rotations = torch.cat([identity, _uniform_rotations(num_elements - 1, generator)])
        names = ["identity"]
        for k in range(1, num_elements):
            improper = self.reflections and k % 2 == 0
            if improper:
                rotations[k] = -rotations[k]
            names.append(f"rotinv{k}" if improper else f"rot{k}")
        super().__init__(rotations, names=names)

    def __repr__(self) -> str:
        return f"Rotation3D(num_elements={len(self)}, reflections={self.reflections}, seed={self.seed})"


class CubeRotations(RigidMotions):
    """The symmetries of a cube centred at the origin: 24 rotations (48 with reflections), exact, identity first.

    Each element permutes and flips the signs of the three coordinates (a signed permutation matrix with
    determinant +1, or either sign with ``reflections=True``). The elements are closed under composition and
    inverse, so the group's laws hold exactly. Names spell the matrix: ``+y-x+z`` maps ``(x, y, z)`` to
    ``(y, -x, z)``.

    Example:
        >>> len(CubeRotations()), len(CubeRotations(reflections=True))
        (24, 48)
    """

    def __init__(self, reflections: bool = False) -> None:
        self.reflections = bool(reflections)
        elements = []
        for order in itertools.permutations(range(3)):
            for signs in itertools.product((1.0, -1.0), repeat=3):
                matrix = torch.zeros(3, 3, dtype=torch.float64)
                for row, (column, sign) in enumerate(zip(order, signs, strict=True)):
                    matrix[row, column] = sign
                if self.reflections or torch.linalg.det(matrix) > 0:
                    elements.append(matrix)
        elements.sort(key=lambda m: (not torch.equal(m, torch.eye(3, dtype=torch.float64)), m.flatten().tolist()))
        names = ["identity"] + [_spell(matrix) for matrix in elements[1:]]
        super().__init__(torch.stack(elements), names=names)

    def __repr__(self) -> str:
        return f"CubeRotations(reflections={self.reflections})"


def _spell(matrix: Tensor) -> str:
    """``+y-x+z`` for the matrix mapping ``(x, y, z)`` to ``(y, -x, z)``."""
    parts = []
    for row in matrix:
        column = int(row.abs().argmax())
        parts.append(("+" if row[column] > 0 else "-") + "xyz"[column])
    return "".join(parts)


class Translation3D(RigidMotions):
    """A seeded sample of translations ``x -> x + t`` of ``(..., 3)`` points, ``t ~ N(0, scale^2 I)``, identity first.

    Translation invariance is what a model on centred or relative coordinates should have (and a classic bug when
    it does not). Names: ``shift1``, ``shift2``, ...
    """

    def __init__(self, num_elements: int = 8, scale: float = 1.0, seed: int = 0) -> None:
        check_positive("num_elements", num_elements, "Translation3D")
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"Expected argument `scale` to be a positive number, but got {scale!r}.")
        self.scale, self.seed = float(scale), int(seed)
        generator = torch.Generator().manual_seed(self.seed)
        shifts = torch.randn(num_elements, 3, generator=generator, dtype=torch.float64) * self.scale
        shifts[0] = 0
        eye = torch.eye(3, dtype=torch.float64).expand(num_elements, 3, 3)
        super().__init__(eye, shifts, ["identity"] + [f"shift{k}" for k in range(1, num_elements)])

    def __repr__(self) -> str:
        return f"Translation3D(num_elements={len(self)}, scale={self.scale}, seed={self.seed})"


class Euclidean3D(RigidMotions):
    """A seeded sample of E(3) (SE(3) without reflections): a uniform rotation then a Gaussian translation.

    Names: ``motion1``, ``motion2``, ...; with reflections every second element is improper.
    """

    def __init__(self, num_elements: int = 8, scale: float = 1.0, reflections: bool = False, seed: int = 0) -> None:
        rotations = Rotation3D(num_elements, reflections, seed)
        shifts = Translation3D(num_elements, scale, seed + 1)
        self.scale, self.reflections, self.seed = shifts.scale, rotations.reflections, int(seed)
        names = ["identity"] + [f"motion{k}" for k in range(1, num_elements)]
        super().__init__(rotations.matrices(), shifts.translations(), names)

    def __repr__(self) -> str:
        settings = f"scale={self.scale}, reflections={self.reflections}, seed={self.seed}"
        return f"Euclidean3D(num_elements={len(self)}, {settings})"
