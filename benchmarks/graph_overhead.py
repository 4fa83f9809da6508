"""Measuring a graph network's invariance to node permutations: the probe against the forward passes it needs.

torch_geometric batches of small graphs (10 to 29 nodes, 3 edges a node), a two-layer message-passing network with a
sum readout, ``GraphPermutation(8)``, the probe at its CPU chunk size. Timed, interleaved round by round:

- the floor: the bare forward passes over the orbits, built beforehand;
- building those orbits chunk by chunk (slicing the chunk, the 8 permuted copies joined) whole, as the probe does;
- the same graph by graph: every chunk and copy separated into graphs and collated again (``index_select``,
  ``to_data_list``, ``from_data_list``), as the probe did before;
- the probe measuring the G-EED of the output.

    python benchmarks/graph_overhead.py [--quick]   (needs torch_geometric)
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from lightning_invariance import InvarianceDeviation, Probe
from lightning_invariance._layers import CPU_CHUNK_SIZE
from lightning_invariance.batches import orbit_batch, slice_batch
from lightning_invariance.groups import GraphPermutation

from _common import interleaved_seconds, table


class SumGNN(nn.Module):
    """Two rounds of message passing (index_add over the edges) and a sum over each graph's nodes."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.embed, self.message, self.head = nn.Linear(3, width), nn.Linear(width, width), nn.Linear(width, 10)

    def forward(self, batch) -> torch.Tensor:
        h = torch.tanh(self.embed(batch.x))
        source, target = batch.edge_index
        for _ in range(2):
            h = torch.tanh(self.message(torch.zeros_like(h).index_add_(0, target, h[source])) + h)
        return self.head(torch.zeros(batch.num_graphs, h.shape[1]).index_add_(0, batch.batch, h))


def graphs(count: int):
    """``count`` random graphs in one torch_geometric batch."""
    from torch_geometric.data import Batch, Data

    generator, data = torch.Generator().manual_seed(0), []
    for number in range(count):
        nodes = 10 + number % 20
        edges = torch.randint(nodes, (2, 3 * nodes), generator=generator)
        data.append(Data(x=torch.randn(nodes, 3, generator=generator), edge_index=edges))
    return Batch.from_data_list(data)


def graph_by_graph_orbit(group: GraphPermutation, batch, start: int, stop: int):
    """A chunk's orbit the way it was built before: separating and collating every graph of every copy."""
    chunk = type(batch).from_data_list(batch.index_select(slice(start, stop)))
    copies = [group.act(chunk, k) for k in range(len(group))]
    return type(batch).from_data_list([graph for copy in copies for graph in copy.to_data_list()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    args = parser.parse_args()
    count, repeats = (64, 1) if args.quick else (2048, 7)
    torch.manual_seed(0)
    model, batch, group = SumGNN().eval(), graphs(count), GraphPermutation(8)
    per_chunk = CPU_CHUNK_SIZE // len(group)
    starts = range(0, count, per_chunk)
    orbits = [orbit_batch(group, slice_batch(batch, start, start + per_chunk)) for start in starts]

    def floor() -> None:
        with torch.no_grad():
            for orbit in orbits:
                model(orbit)

    def whole() -> None:
        for start in starts:
            orbit_batch(group, slice_batch(batch, start, start + per_chunk))

    def graph_by_graph() -> None:
        for start in starts:
            graph_by_graph_orbit(group, batch, start, start + per_chunk)

    def probe() -> None:
        Probe(model, group).update(batch, {"output": InvarianceDeviation(group, normalize=True)})

    rounds = interleaved_seconds([floor, whole, graph_by_graph, probe], repeats)
    medians = [statistics.median(r[i] for r in rounds) for i in range(4)]
    ratios = [statistics.median(r[i] / r[0] for r in rounds) for i in range(4)]
    names = ["bare forward passes (floor)", "orbits built whole", "orbits built graph by graph", "probe (G-EED)"]
    rows = [[name, seconds, ratio] for name, seconds, ratio in zip(names, medians, ratios, strict=True)]
    print(
        f"{count} graphs of 10-29 nodes, GraphPermutation(8), chunks of {per_chunk} graphs; medians of {repeats} "
        "interleaved rounds"
    )
    print(table(["what", "seconds", "over the floor"], rows))


if __name__ == "__main__":
    main()
