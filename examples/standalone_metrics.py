"""The metrics and the probe without a Trainer: invariance, equivariance and per-element scores in plain PyTorch.

python examples/standalone_metrics.py
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from lightning_invariance import (
    EquivarianceDeviation,
    InvarianceDeviation,
    PredictionConsistency,
    Probe,
    invariance_deviation,
    measure,
)
from lightning_invariance.groups import CyclicRotation, Permutation, SpatialAction

from _digits import digits_datasets, small_cnn


class RotationAveraged(nn.Module):
    """Averages a network's logits over the four rot90 copies of its input: C4-invariant by construction."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([self.net(torch.rot90(x, k, dims=(-2, -1))) for k in range(4)]).mean(0)


class DeepSet(nn.Module):
    """phi per element, sum over the set, rho after: invariant to permuting the set."""

    def __init__(self, dim: int = 3, hidden: int = 32) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU())
        self.rho = nn.Linear(hidden, 4)

    def forward(self, points: Tensor) -> Tensor:
        return self.rho(self.phi(points).sum(dim=1))


def rotation_scores(name: str, model: nn.Module, images: Tensor, group: CyclicRotation) -> None:
    metrics = MetricCollection(
        {
            "geed": InvarianceDeviation(len(group)),
            "cosine": InvarianceDeviation(len(group), distance="cosine"),
            "kl": InvarianceDeviation(len(group), distance="kl"),
            "consistency": PredictionConsistency(len(group)),
        }
    )
    normalized = InvarianceDeviation(len(group), normalize=True)
    probe = Probe(model, group, chunk_size=512)
    for batch in images.split(128):  # many update calls, as over a DataLoader
        probe.update(batch, {"output": [metrics, normalized]})
    values = {key: value.item() for key, value in metrics.compute().items()}
    summary = normalized.compute_summary()
    per_element = ", ".join(
        f"{element} {value:.3f}"
        for element, value in zip(group.names, summary["per_element_normalized"].tolist(), strict=True)
    )
    print(
        f"{name:<22} G-EED {values['geed']:.2e} (±{summary['stderr'].item():.1e})  normalised "
        f"{summary['geed_normalized'].item():.2e}  cosine {values['cosine']:.2e}  KL {values['kl']:.2e}  "
        f"consistency {values['consistency']:.3f}\n{'':<22} per element (normalised): {per_element}"
    )


def main() -> None:
    torch.manual_seed(0)
    _, val = digits_datasets()
    images = val.tensors[0]
    group = CyclicRotation(4)
    cnn = small_cnn()

    print(f"C4 invariance of the output on {len(images)} digits (random weights, no training):")
    rotation_scores("plain CNN", cnn, images, group)
    rotation_scores("rotation-averaged CNN", RotationAveraged(cnn), images, group)

    print("\nEquivariance of the first convolution's feature maps under rotating the map (SpatialAction):")
    conv = nn.Conv2d(1, 8, 3, padding=1)
    symmetric = nn.Conv2d(1, 8, 3, padding=1)
    with torch.no_grad():  # a kernel averaged over its four rotations commutes with rot90
        symmetric.weight.copy_(torch.stack([torch.rot90(conv.weight, k, dims=(-2, -1)) for k in range(4)]).mean(0))
    for name, layer in [("random kernel", conv), ("rotation-symmetric kernel", symmetric)]:
        metric = EquivarianceDeviation(SpatialAction(group), len(group), normalize=True)
        Probe(layer, group).update(images, {"output": metric})
        print(f"  {name:<26} normalised G-EED {metric.compute().item():.2e}")

    print("\nPermutation invariance of point-set models (8 seeded permutations of 16 points):")
    points = torch.randn(256, 16, 3)
    permutations = Permutation(dim=1, num_elements=8, seed=0)
    flat_mlp = nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 4))
    for name, model in [("MLP on the flattened set", flat_mlp), ("DeepSet (sum pooling)", DeepSet())]:
        orbit = Probe(model, permutations).orbit_features(points)["output"]
        print(f"  {name:<26} normalised G-EED {invariance_deviation(orbit, normalize=True).item():.2e}")

    print("\nA whole DataLoader, three layers at once, with a progress bar:")
    loader = torch.utils.data.DataLoader(val, batch_size=64)
    results = measure(
        cnn,
        group,
        loader,
        InvarianceDeviation(len(group), normalize=True),
        layers=["features.relu1", "embedding", "output"],
    )
    for layer, value in results.items():
        print(f"  {layer:<16} normalised G-EED {value.item():.3f}")


if __name__ == "__main__":
    main()
