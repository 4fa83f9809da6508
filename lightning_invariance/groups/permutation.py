"""Permutations of one axis: sets, sequences, point clouds."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_invariance._checks import check_positive
from lightning_invariance._sync import constant_on
from lightning_invariance.groups.base import Group

__all__ = ["Permutation", "seeded_permutations"]


def seeded_permutations(seed: int, length: int, count: int) -> Tensor:
    """``count`` permutations of ``range(length)``, row 0 the identity, the same table every time.

    Drawn from a private generator seeded by ``(seed, length)``: the global RNG is untouched.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + length)
    rows = [torch.arange(length)] + [torch.randperm(length, generator=generator) for _ in range(count - 1)]
    return torch.stack(rows)


class Permutation(Group):
    """``num_elements`` permutations (identity first) of axis ``dim`` of the batch, e.g. the points of a point cloud.

    The permutations are drawn once per axis length from a private generator seeded by ``(seed, length)``, so the
    same element permutes the same way every time and the global RNG is untouched. Element names are ``perm1``, ...

    Args:
        dim: the axis to permute, counted on the batch (``1`` for ``(N, L, D)`` sets); not the sample axis 0.
        num_elements: how many permutations, identity included.
        seed: seed of the private generator.

    Example:
        >>> import torch
        >>> group = Permutation(dim=1, num_elements=3)
        >>> x = torch.arange(5.0).reshape(1, 5)
        >>> sorted(group.act(x, 2)[0].tolist())
        [0.0, 1.0, 2.0, 3.0, 4.0]
    """

    def __init__(self, dim: int = 1, num_elements: int = 8, seed: int = 0) -> None:
        check_positive("num_elements", num_elements, "Permutation")
        if dim == 0:
            raise ValueError("Permutation cannot permute axis 0, the sample axis; choose the set or sequence axis.")
        self.dim, self.seed = int(dim), int(seed)
        self._cache: dict[int, Tensor] = {}
        super().__init__(["identity"] + [f"perm{k}" for k in range(1, num_elements)])

    def permutations(self, length: int) -> Tensor:
        """The ``(|G|, length)`` index table for an axis of this length; row 0 is the identity."""
        if length not in self._cache:
            self._cache[length] = seeded_permutations(self.seed, length, len(self))
        return self._cache[length]

    def _check_input(self, x: Tensor) -> None:
        if x.ndim < 2 or not -x.ndim < self.dim < x.ndim:
            raise ValueError(f"{self!r} permutes axis {self.dim}, but the batch has shape {tuple(x.shape)}.")

    def _act(self, x: Tensor, k: int) -> Tensor:
        index = constant_on(self.permutations(x.shape[self.dim]), x.device)[k]
        return x.index_select(self.dim, index)

    def __repr__(self) -> str:
        return f"Permutation(dim={self.dim}, num_elements={len(self)}, seed={self.seed})"
