"""A group acting on a dict batch field by field: coordinates move, vectors turn, node fields permute together.

For batches such as ``{"pos": (N, P, 3), "force": (N, P, 3), "x": (N, P, F), "mask": (N, P), "adj": (N, P, P)}``
(point clouds, molecules, dense graphs with a fixed or padded number of nodes ``P``). Fields not named are left as
they are (scalars, labels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning_invariance.groups.base import BatchGroup, Group
from lightning_invariance.groups.permutation import Permutation

__all__ = ["FieldGroup"]


class FieldGroup(BatchGroup):
    """Apply ``group`` to the named fields of a dict batch, with the same element for every field.

    Args:
        group: the transformations, e.g. ``Euclidean3D(8)`` or ``Permutation(dim=1)``.
        fields: fields the group acts on as it acts on a tensor: coordinates ``(N, P, 3)`` under a 3-D group, node
            fields ``(N, P, ...)`` under ``Permutation(dim=1)`` (every field gets the same permutation).
        vectors: fields of 3-D vectors that turn with the rotation but do not move with a translation (velocities,
            forces given as inputs); needs a group with ``matrices()``.
        pairs: fields indexed by two nodes, ``(N, P, P, ...)`` (an adjacency or distance matrix): permuted on both
            node axes; needs a ``Permutation``.

    Example:
        >>> import torch
        >>> from lightning_invariance.groups import Permutation
        >>> group = FieldGroup(Permutation(dim=1, num_elements=3), fields=["x"], pairs=["adj"])
        >>> graph = {"x": torch.arange(3.0).reshape(1, 3, 1), "adj": torch.eye(3).roll(1, 1)[None]}
        >>> moved = group.act(graph, 1)
        >>> sorted(moved["x"].flatten().tolist()), moved["adj"].sum().item()
        ([0.0, 1.0, 2.0], 3.0)
    """

    def __init__(
        self, group: Group, fields: Sequence[str] = (), vectors: Sequence[str] = (), pairs: Sequence[str] = ()
    ) -> None:
        if not isinstance(group, Group):
            raise TypeError(f"Expected `group` of FieldGroup to be a Group, got {type(group).__name__}.")
        self.group = group
        self.fields, self.vectors, self.pairs = list(fields), list(vectors), list(pairs)
        named = self.fields + self.vectors + self.pairs
        if not named or len(set(named)) != len(named):
            raise ValueError(f"Name each field once, in `fields`, `vectors` or `pairs`; got {named}.")
        if self.vectors and not callable(getattr(group, "matrices", None)):
            raise TypeError(f"`vectors` turn with a rotation: {group!r} has no `matrices()`.")
        if self.pairs and not isinstance(group, Permutation):
            raise TypeError(f"`pairs` are permuted on two node axes: they need a Permutation group, got {group!r}.")
        self._matrices = group.matrices() if self.vectors else None  # type: ignore[attr-defined]
        super().__init__(group.names)

    def check_input(self, x: Any) -> None:
        """Require a dict holding every named field, each of a shape the group acts on."""
        if not isinstance(x, Mapping) and not _is_graph(x):
            raise TypeError(
                f"{self!r} acts on dict batches ({{field: tensor}}) or torch_geometric graphs, got "
                f"{type(x).__name__}; for a plain tensor use {self.group!r} itself."
            )
        missing = [name for name in self.fields + self.vectors + self.pairs if name not in x]
        if missing:
            present = sorted(map(str, x.keys()))
            raise KeyError(f"{self!r} needs the fields {missing}, but the batch has {present}.")
        for name in self.fields:
            self.group.check_input(x[name])
        for name in self.vectors:
            if x[name].shape[-1] != 3:
                raise ValueError(
                    f"Field {name!r} holds 3-D vectors on its last axis; got shape {tuple(x[name].shape)}."
                )
        for name in self.pairs:
            dim = self.group.dim  # type: ignore[attr-defined]
            shape = x[name].shape
            if x[name].ndim < dim + 2 or shape[dim] != shape[dim + 1]:
                raise ValueError(
                    f"Field {name!r} is indexed by two nodes on axes {dim} and {dim + 1}; got shape {tuple(shape)}."
                )

    def act(self, x: Any, k: int) -> Any:
        """Apply element ``k`` to every named field; the other fields are passed through unchanged."""
        if not 0 <= k < len(self):
            raise IndexError(f"{self!r} has {len(self)} elements (0..{len(self) - 1}), got element {k}.")
        self.check_input(x)
        out = dict(x) if isinstance(x, Mapping) else x.clone()
        if k == 0:
            return out
        for name in self.fields:
            out[name] = self.group.act(x[name], k)
        for name in self.vectors:
            out[name] = x[name] @ self._matrices[k].to(x[name].device, x[name].dtype).T  # type: ignore[index]
        for name in self.pairs:
            dim = self.group.dim  # type: ignore[attr-defined]
            index = self.group.permutations(x[name].shape[dim])[k].to(x[name].device)  # type: ignore[attr-defined]
            out[name] = x[name].index_select(dim, index).index_select(dim + 1, index)
        return out

    def __repr__(self) -> str:
        parts = [f"fields={self.fields}"] + [
            f"{n}={v}" for n, v in (("vectors", self.vectors), ("pairs", self.pairs)) if v
        ]
        return f"FieldGroup({self.group!r}, {', '.join(parts)})"


def _is_graph(x: Any) -> bool:
    """A torch_geometric ``Data``/``Batch``: fields by name, ``clone()`` (duck-typed: torch_geometric is optional)."""
    return all(hasattr(x, name) for name in ("keys", "clone", "num_nodes"))
