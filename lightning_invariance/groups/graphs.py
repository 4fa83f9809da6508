"""Node permutations of torch_geometric graphs: each graph's nodes permuted within the graph, edges relabelled.

For a ``torch_geometric`` ``Data`` (one graph) or ``Batch`` (several, with ``ptr``), element ``k`` permutes the
nodes of every graph with the seeded permutation for that graph's size, moves every node-level field (``x``,
``pos``, ... by default every node attribute), and relabels ``edge_index`` so that the same graph is described in a
new node order. Edge order and edge attributes stay as they are; graph-level fields are untouched. torch_geometric is
an optional extra; nothing here imports it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_invariance._checks import check_positive
from lightning_invariance._graph_batches import join_graph_batches
from lightning_invariance.groups.base import BatchGroup
from lightning_invariance.groups.permutation import seeded_permutations

__all__ = ["GraphPermutation"]


class GraphPermutation(BatchGroup):
    """``num_elements`` node permutations (identity first) of torch_geometric graphs, within each graph.

    Args:
        num_elements: how many permutations, identity included.
        seed: seed of the private generator (a graph of ``n`` nodes gets the same permutation every time).
        node_fields: the node-level fields to move; ``None``: every node attribute except ``batch``.
        edge_index: the name of the edge list to relabel (``None`` for graphs without one).

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data  # doctest: +SKIP
        >>> graph = Data(x=torch.arange(4.0)[:, None], edge_index=torch.tensor([[0, 1], [1, 2]]))  # doctest: +SKIP
        >>> GraphPermutation(num_elements=3).act(graph, 1)  # doctest: +SKIP
    """

    def __init__(
        self,
        num_elements: int = 8,
        seed: int = 0,
        node_fields: Sequence[str] | None = None,
        edge_index: str | None = "edge_index",
    ) -> None:
        check_positive("num_elements", num_elements, "GraphPermutation")
        self.seed, self.edge_index = int(seed), edge_index
        self.node_fields = None if node_fields is None else list(node_fields)
        self._cache: dict[int, Tensor] = {}
        super().__init__(["identity"] + [f"perm{k}" for k in range(1, num_elements)])

    def permutations(self, nodes: int) -> Tensor:
        """The ``(|G|, nodes)`` permutations of a graph of this size; row 0 is the identity."""
        if nodes not in self._cache:
            self._cache[nodes] = seeded_permutations(self.seed, nodes, len(self))
        return self._cache[nodes]

    def check_input(self, x: Any) -> None:
        """Require a torch_geometric ``Data``/``Batch`` (an object with ``num_nodes``, ``keys()`` and ``clone()``)."""
        if not all(hasattr(x, name) for name in ("num_nodes", "keys", "clone", "is_node_attr")):
            raise TypeError(
                f"{self!r} acts on torch_geometric Data/Batch graphs, got {type(x).__name__}; for dense graphs in a "
                "dict use FieldGroup(Permutation(dim=1), fields=[...], pairs=['adj'])."
            )
        if self.edge_index is not None and self.edge_index not in x:
            raise KeyError(f"{self!r} relabels {self.edge_index!r}, which the graph lacks; pass edge_index=None.")

    def node_order(self, graph: Any, k: int) -> Tensor:
        """For every node position of the permuted batch, the old node it holds (graphs permuted within)."""
        return self._node_orders(graph, slice(k, k + 1))[0]

    def _node_orders(self, graph: Any, elements: slice = slice(None)) -> Tensor:
        """``(elements, nodes)``: :meth:`node_order` of those elements, every one by default (one read of the sizes)."""
        ptr = getattr(graph, "ptr", None)
        bounds = [0, int(graph.num_nodes)] if ptr is None else ptr.tolist()
        parts = [start + self.permutations(end - start)[elements] for start, end in itertools.pairwise(bounds)]
        rows = len(range(len(self))[elements])
        return torch.cat(parts, dim=1) if parts else torch.zeros((rows, 0), dtype=torch.long)

    def whole_orbit(self, x: Any) -> Any:
        """Every element's copy of the graphs ``x`` in one batch, element-major, built at once.

        The same batch as joining :meth:`act`'s copies: ``x`` repeated ``|G|`` times, then one node permutation of
        all copies (one read of the graph sizes, one copy of the order to the device).
        """
        self.check_input(x)
        num_nodes = int(x.num_nodes)
        offsets = torch.arange(len(self)).unsqueeze(1) * num_nodes
        return self._permuted(join_graph_batches([x] * len(self)), (self._node_orders(x) + offsets).reshape(-1))

    def act(self, x: Any, k: int) -> Any:
        """Permute every graph's nodes by element ``k`` and relabel the edges."""
        if not 0 <= k < len(self):
            raise IndexError(f"{self!r} has {len(self)} elements (0..{len(self) - 1}), got element {k}.")
        self.check_input(x)
        if k == 0:
            return x.clone()
        return self._permuted(x.clone(), self.node_order(x, k))

    def _permuted(self, x: Any, order: Tensor) -> Any:
        """``x`` (changed in place) with node ``order[p]`` moved to position ``p`` and the edges relabelled."""
        fields = self.node_fields
        if fields is None:
            fields = [key for key in x.keys() if key != "batch" and x.is_node_attr(key)]  # noqa: SIM118 - a method
        for key in fields:
            x[key] = x[key][order.to(x[key].device)]
        if self.edge_index is not None:
            new_position = torch.empty_like(order)
            new_position[order] = torch.arange(len(order))
            x[self.edge_index] = new_position.to(x[self.edge_index].device)[x[self.edge_index]]
        return x

    def __repr__(self) -> str:
        return f"GraphPermutation(num_elements={len(self)}, seed={self.seed})"
