"""Actions of a group on representations: how ``g`` should move ``f(x)`` if ``f`` is equivariant."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from lightning_invariance._sync import constant_on
from lightning_invariance.groups.base import Group
from lightning_invariance.groups.image import CyclicRotation

__all__ = ["MatrixAction", "RegularAction", "RepresentationAction", "SpatialAction", "TrivialAction", "VectorAction"]


class RepresentationAction(ABC):
    """How element ``k`` of a group acts on a batch of representations ``(N, ...)``."""

    #: True when every element acts as the identity (equivariance is then invariance).
    trivial: bool = False

    @abstractmethod
    def act(self, features: Tensor, k: int) -> Tensor:
        """Apply element ``k`` to the representations ``features`` (sample axis first)."""

    @property
    def size(self) -> int | None:
        """How many elements this action represents (``None``: any number)."""
        return None

    def check_group(self, group: Group) -> None:
        """Raise ``ValueError`` when this action cannot represent ``group``: by default, when the sizes differ."""
        if self.size is not None and len(group) != self.size:
            raise ValueError(f"{self!r} has {self.size} elements but the input group {group!r} has {len(group)}.")

    def valid_mask(self, k: int, shape: tuple[int, ...]) -> Tensor | None:
        """Where element ``k`` leaves a representation of ``shape`` (no sample axis) valid.

        A 0/1 mask broadcastable to ``shape``, or ``None`` when it loses nothing (the default).
        """
        return None


class TrivialAction(RepresentationAction):
    """Every element acts as the identity: equivariance under it is invariance."""

    trivial = True

    def act(self, features: Tensor, k: int) -> Tensor:
        """Return ``features`` unchanged."""
        return features

    def __repr__(self) -> str:
        return "TrivialAction()"


class SpatialAction(RepresentationAction):
    """The group's own action applied to the representation, e.g. ``rot90`` of a feature map ``(N, C, h, w)``.

    Pass the input group to check "rotating the input rotates the feature map"; pass a different group of the same
    size where the representation moves differently (a translation by ``s`` pixels of the input is one by
    ``s / stride`` on a strided feature map).
    """

    def __init__(self, group: Group) -> None:
        if not isinstance(group, Group):
            raise TypeError(f"Expected argument `group` of SpatialAction to be a Group, got {type(group).__name__}.")
        self.group = group

    def act(self, features: Tensor, k: int) -> Tensor:
        """Apply the group's element ``k`` to the features."""
        return self.group.act(features, k)

    def valid_mask(self, k: int, shape: tuple[int, ...]) -> Tensor | None:
        """The group's valid region of a feature map of ``shape`` (``(C, H, W)`` or ``(H, W)``)."""
        return self.group.valid_mask(k, shape) if len(shape) >= 2 else None

    @property
    def size(self) -> int:
        """The number of elements of the group it was built with."""
        return len(self.group)

    def __repr__(self) -> str:
        return f"SpatialAction({self.group!r})"


class RegularAction(RepresentationAction):
    """The regular representation of C_n in a group-convolutional network: rotate the map, cycle the group channels.

    The channel axis (axis 1) holds ``F`` fields of ``n`` channels each, one per rotation, as e2cnn's regular fields
    (``gspaces.Rot2dOnR2(n).regular_repr``) lay them out. Element ``k`` rotates each feature map by ``k`` steps of
    ``360 / n`` degrees (skipped for ``(N, C)`` vectors, e.g. after global pooling) and shifts the ``n`` channels of
    every field cyclically by ``k``.
    """

    def __init__(self, group: CyclicRotation) -> None:
        if not isinstance(group, CyclicRotation):
            raise TypeError(f"RegularAction represents a CyclicRotation group, but got {type(group).__name__}.")
        self.group = group

    def act(self, features: Tensor, k: int) -> Tensor:
        """Rotate feature maps by element ``k`` and cycle each field's ``n`` group channels by ``k``."""
        n = self.group.n
        if features.ndim < 2 or features.shape[1] % n:
            raise ValueError(
                f"{self!r} needs a channel axis 1 made of fields of n={n} channels; got features of shape "
                f"{tuple(features.shape)} ({features.shape[1] if features.ndim > 1 else 0} channels, not divisible by "
                f"{n})."
            )
        fields = features.reshape(features.shape[0], -1, n, *features.shape[2:])
        moved = torch.roll(fields, shifts=k, dims=2).reshape(features.shape)
        return self.group.act(moved, k) if features.ndim >= 4 else moved

    @property
    def size(self) -> int:
        """``n``: the cyclic group's order."""
        return self.group.n

    def __repr__(self) -> str:
        return f"RegularAction({self.group!r})"


def _element_matrices(group: Group, who: str) -> Tensor:
    matrices = getattr(group, "matrices", None)
    if not callable(matrices):
        raise TypeError(
            f"{who} needs a group with a matrix per element (`matrices()`, e.g. Rotation3D, CubeRotations, "
            f"Euclidean3D), but got {group!r}."
        )
    return matrices()


class MatrixAction(RepresentationAction):
    """Any linear representation: ``f -> f D(g_k)^T`` on the last axis, with ``D`` given per element.

    ``representation`` is either a ``(|G|, d, d)`` tensor of matrices, or a function from an element's 3x3 matrix to
    its ``d x d`` representation, applied to ``group.matrices()``: for an e3nn network,
    ``MatrixAction(group, irreps.D_from_matrix)`` checks its output irreps.

    Example:
        >>> import torch
        >>> from lightning_invariance.groups import CubeRotations
        >>> group = CubeRotations()
        >>> action = MatrixAction(group, lambda r: torch.block_diag(torch.ones(1, 1, dtype=r.dtype), r))
        >>> action.act(torch.tensor([[5.0, 1.0, 0.0, 0.0]]), 0)
        tensor([[5., 1., 0., 0.]])
    """

    def __init__(self, group: Group, representation: Tensor | Callable[[Tensor], Tensor]) -> None:
        if isinstance(representation, Tensor):
            matrices = representation
        elif callable(representation):
            elements = _element_matrices(group, "MatrixAction")
            matrices = torch.stack([torch.as_tensor(representation(r)) for r in elements])
        else:
            raise TypeError(
                f"Expected `representation` to be a (|G|, d, d) tensor or a function of a 3x3 matrix, got "
                f"{type(representation).__name__}."
            )
        if matrices.ndim != 3 or matrices.shape[1] != matrices.shape[2] or matrices.shape[0] != len(group):
            raise ValueError(
                f"Expected one square matrix per element of {group!r}, shape ({len(group)}, d, d); got "
                f"{tuple(matrices.shape)}."
            )
        self.group, self.matrices = group, matrices.to(torch.float64)

    def _expects(self) -> str:
        return f"a last axis of size {self.matrices.shape[-1]}"

    def act(self, features: Tensor, k: int) -> Tensor:
        """Apply element ``k``'s matrix to the last axis."""
        if features.shape[-1] != self.matrices.shape[-1]:
            raise ValueError(f"{self!r} acts on {self._expects()}; got features of shape {tuple(features.shape)}.")
        return features @ constant_on(self.matrices, features.device, features.dtype)[k].T

    @property
    def size(self) -> int:
        """One element per matrix."""
        return len(self.matrices)

    def __repr__(self) -> str:
        return f"MatrixAction({self.group!r}, d={self.matrices.shape[-1]})"


class VectorAction(MatrixAction):
    """Rotate 3-D vectors: ``v -> v R_k^T`` on the last axis, translations ignored (forces, velocities, dipoles).

    For "forces are rotation-equivariant": the model's output ``(N, P, 3)`` (or ``(N, 3)``) measured with
    ``EquivarianceDeviation(VectorAction(group))``. Under a translation a vector does not move, so translation
    equivariance of forces is their invariance. For outputs that are positions (they translate too), use
    ``SpatialAction(group)``.
    """

    def __init__(self, group: Group) -> None:
        super().__init__(group, _element_matrices(group, "VectorAction"))

    def _expects(self) -> str:
        return "3-D vectors on the last axis (it rotates them)"

    def __repr__(self) -> str:
        return f"VectorAction({self.group!r})"
