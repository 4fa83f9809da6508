"""Dict batches (fields): FieldGroup, the probe, the metrics, the assertion helpers and the callback on them."""

import itertools
import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_invariance import EquivarianceDeviation, InvarianceDeviation, InvarianceMonitor, Probe
from lightning_invariance.batches import concat_batches, orbit_batch, slice_batch
from lightning_invariance.groups import FieldGroup, Permutation, Rotation3D, SpatialAction, Translation3D
from lightning_invariance.testing import assert_equivariant, assert_invariant

from models import quiet_trainer

NODES = Permutation(dim=1, num_elements=6, seed=0)


def _graphs(n: int = 20, nodes: int = 7, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    upper = (torch.rand(n, nodes, nodes, generator=generator) < 0.4).float().triu(1)
    return {
        "x": torch.randn(n, nodes, 4, generator=generator),
        "adj": upper + upper.transpose(1, 2),
        "y": torch.arange(n) % 3,
    }


class DenseGNN(nn.Module):
    """Two rounds of message passing over a dense adjacency, then a sum: node features are permutation-equivariant,
    the graph output invariant."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.message, self.head = nn.Linear(4, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.nodes = nn.Identity()  # the node features, to capture

    def forward(self, graph: dict) -> torch.Tensor:
        h = torch.tanh(self.embed(graph["x"]))
        h = self.nodes(torch.tanh(self.message(graph["adj"] @ h) + h))
        return self.head(h.sum(dim=1))


class FlatMLP(nn.Module):
    def __init__(self, nodes: int = 7) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(nodes * 4 + nodes * nodes, 32), nn.Tanh(), nn.Linear(32, 3))

    def forward(self, graph: dict) -> torch.Tensor:
        return self.net(torch.cat([graph["x"].flatten(1), graph["adj"].flatten(1)], dim=1))


def test_field_group_moves_every_named_field_with_the_same_element():
    graphs = _graphs()
    group = FieldGroup(NODES, fields=["x"], pairs=["adj"])
    for k in range(len(group)):
        moved = group.act(graphs, k)
        order = NODES.permutations(7)[k]
        for n, i in itertools.product(range(20), range(7)):  # a loop reference
            assert torch.equal(moved["x"][n, i], graphs["x"][n, order[i]])
            for j in range(7):
                assert moved["adj"][n, i, j] == graphs["adj"][n, order[i], order[j]]
        assert moved["y"] is graphs["y"]  # not named: passed through


def test_field_group_rotates_coordinates_and_vectors_but_shifts_only_coordinates():
    points = {"pos": torch.randn(5, 6, 3, dtype=torch.float64), "vel": torch.randn(5, 6, 3, dtype=torch.float64)}
    motions = Rotation3D(4, seed=1)
    group = FieldGroup(motions, fields=["pos"], vectors=["vel"])
    rotation = motions.matrices()[2]
    moved = group.act(points, 2)
    assert torch.allclose(moved["pos"], points["pos"] @ rotation.T) and torch.allclose(
        moved["vel"], points["vel"] @ rotation.T
    )
    shifts = Translation3D(3, seed=2)
    moved = FieldGroup(shifts, fields=["pos"], vectors=["vel"]).act(points, 1)
    assert torch.allclose(moved["pos"], points["pos"] + shifts.translations()[1]) and torch.equal(
        moved["vel"], points["vel"]
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FieldGroup(NODES), "Name each field once"),
        (lambda: FieldGroup(NODES, vectors=["v"]), "matrices"),
        (lambda: FieldGroup(Rotation3D(2), pairs=["adj"]), "Permutation"),
        (lambda: FieldGroup(NODES, fields=["x"]).act({"pos": torch.zeros(2, 3)}, 1), r"needs the fields \['x'\]"),
        (lambda: FieldGroup(NODES, fields=["x"]).act(torch.zeros(2, 3), 1), "dict batches"),
        (lambda: FieldGroup(NODES, pairs=["adj"]).act({"adj": torch.zeros(2, 3, 4)}, 1), "two nodes"),
    ],
)
def test_field_group_errors(make, message):
    with pytest.raises((TypeError, KeyError, ValueError), match=message):
        make()


def _reference_geed(orbit: torch.Tensor) -> float:
    """Mean distance to the orbit centroid, in plain float64 loops."""
    total = 0.0
    elements, samples = orbit.shape[:2]
    for n in range(samples):
        rows = [orbit[k, n].flatten().double() for k in range(elements)]
        centroid = sum(rows) / elements
        total += sum(math.sqrt(float(((row - centroid) ** 2).sum())) for row in rows)
    return total / (elements * samples)


@pytest.mark.parametrize("chunk_size", [6, 30, 1024])
def test_probe_on_dict_batches_matches_a_loop_and_every_chunking(chunk_size):
    torch.manual_seed(0)
    graphs, group = _graphs(), FieldGroup(NODES, fields=["x"], pairs=["adj"])
    gnn, mlp = DenseGNN(), FlatMLP()
    probe = Probe(gnn, group, layers=["nodes", "output"], chunk_size=chunk_size)
    invariant = InvarianceDeviation(group, normalize=True)
    equivariant = EquivarianceDeviation(SpatialAction(NODES), normalize=True)
    probe.update(graphs, {"output": invariant, "nodes": equivariant})
    assert invariant.compute().item() < 1e-5 and equivariant.compute().item() < 1e-5
    mlp_metric = InvarianceDeviation(group)
    Probe(mlp, group, chunk_size=chunk_size).update(graphs, {"output": mlp_metric})
    with torch.no_grad():
        orbit = torch.stack([mlp(group.act(graphs, k)) for k in range(len(group))])
    assert mlp_metric.compute().item() == pytest.approx(_reference_geed(orbit), rel=1e-6)
    assert _reference_geed(orbit) > 0.01


def test_batch_helpers_slice_and_join_fields():
    graphs = _graphs(n=5)
    parts = [slice_batch(graphs, 0, 2), slice_batch(graphs, 2, 5)]
    joined = concat_batches(parts)
    assert all(torch.equal(joined[key], graphs[key]) for key in graphs)
    group = FieldGroup(NODES, fields=["x"], pairs=["adj"])
    orbit = orbit_batch(group, graphs)
    assert orbit["x"].shape == (6 * 5, 7, 4) and torch.equal(orbit["x"][5:10], group.act(graphs, 1)["x"])


def test_assertion_helpers_on_dict_batches():
    torch.manual_seed(0)
    graphs, group = _graphs(), FieldGroup(NODES, fields=["x"], pairs=["adj"])
    gnn = DenseGNN()
    assert_invariant(gnn, group, graphs)
    assert_equivariant(lambda g: gnn.nodes(torch.tanh(gnn.embed(g["x"]))), group, SpatialAction(NODES), graphs)
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(FlatMLP(), group, graphs)


class GraphData(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        self.graphs = _graphs(n, seed=seed)

    def __len__(self) -> int:
        return len(self.graphs["y"])

    def __getitem__(self, index: int) -> dict:
        return {key: value[index] for key, value in self.graphs.items()}


class GraphClassifier(pl.LightningModule):
    def __init__(self, invariant: bool = True) -> None:
        super().__init__()
        self.net = DenseGNN() if invariant else FlatMLP()

    def forward(self, graph: dict) -> torch.Tensor:
        return self.net(graph)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch), batch["y"])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", nn.functional.cross_entropy(self(batch), batch["y"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self):
        return DataLoader(GraphData(48, 1), batch_size=16)

    def val_dataloader(self):
        return DataLoader(GraphData(40, 2), batch_size=16)


def _graph_fields(batch: dict) -> dict:
    return {"x": batch["x"], "adj": batch["adj"]}


@pytest.mark.parametrize("max_samples", [24, None])
def test_callback_measures_dict_batches(tmp_path, max_samples):
    group = FieldGroup(NODES, fields=["x"], pairs=["adj"])
    values = {}
    for invariant in (True, False):
        monitor = InvarianceMonitor(
            group,
            layers=["output"],
            input_key=_graph_fields,
            max_samples=max_samples,
            measure_before_training=True,
            print_summary=False,
        )
        trainer = quiet_trainer(tmp_path, [monitor])
        torch.manual_seed(0)
        trainer.fit(GraphClassifier(invariant))
        values[invariant] = monitor.history[-1]["values"]["invariance/output/geed_normalized"]
    assert values[True] < 1e-5 and values[False] > 0.01


def _share_worker(rank: int, world_size: int, port: int, path: str) -> None:
    import os

    import torch.distributed as dist

    from lightning_invariance.callbacks._shares import my_share

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    graphs = _graphs(n=11)
    mine = [i for i in range(11) if i % world_size == rank]  # a DistributedSampler's round-robin dealing
    cached = [({key: graphs[key][mine] for key in ("x", "adj")}, graphs["y"][mine])]
    share = my_share(cached, max_samples=9, dataset_size=11)
    torch.save({"inputs": share.inputs, "labels": share.labels, "start": share.start}, f"{path}_{rank}.pt")
    dist.destroy_process_group()


def test_ddp_shares_of_dict_batches_are_the_one_process_inputs_in_order(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = str(tmp_path / "share")
    mp.spawn(_share_worker, args=(2, port, path), nprocs=2, join=True)
    shares = [torch.load(f"{path}_{rank}.pt") for rank in range(2)]
    graphs = _graphs(n=11)
    joined = concat_batches([share["inputs"] for share in shares])
    assert torch.equal(joined["x"], graphs["x"][:9]) and torch.equal(joined["adj"], graphs["adj"][:9])
    assert torch.equal(torch.cat([share["labels"] for share in shares]), graphs["y"][:9])
    assert [share["start"] for share in shares] == [0, 4]
