"""On an accelerator: the same numbers as on the CPU, and no host sync while measuring.

For a small CNN and a ResNet-18-layout CNN, four layers each, the normalised G-EED under D4, the normalised variance
(tmeasures), the output's prediction consistency, fitted linear maps (their Frobenius norm; pooled features projected
to 64, so the projection runs too) and the relative Lie derivative (rotation) are measured on the CPU
and on ``--device`` (the models with TF32 off, so that their features agree to float32 rounding); the table shows both
and their relative difference (float32 rounding of the features, distances and Gram products, about 1e-7 to 1e-6, is
what the README allows), and the difference when the model runs on the device but the
metrics are kept on the CPU (each chunk's results moved to them). On CUDA the measurement runs under
``torch.cuda.set_sync_debug_mode("warn")``, and the script counts the warnings: each is a point where the host
waited for the device while the probe and the metrics were updating (``compute`` is outside, it must read back).
A second table counts them for the other groups' orbits (matrices and permutation tables copied to the device) and
for equivariance with border masks.
Run it on a GPU machine alone, or with the other GPU benchmarks through ``sh benchmarks/gpu_session.sh``:

    PYTHONPATH=. python benchmarks/device_check.py --device cuda

``--quick`` runs tiny sizes (on the CPU both sides are the CPU: the test suite checks the script runs).
"""

from __future__ import annotations

import argparse
import contextlib
import warnings

import torch

from lightning_invariance import InvarianceDeviation, LieDerivative, LieProbe, Probe
from lightning_invariance.groups import (
    ContinuousRotation,
    CyclicRotation,
    Dihedral,
    Permutation,
    Rotation3D,
    Scaling,
    SpatialAction,
)
from lightning_invariance.metrics import EquivarianceDeviation, LinearMapFit, NormalizedVariance, PredictionConsistency

from _common import device_name, resnet18, small_cnn, table


def _metrics(layer: str, group: Dihedral, device: torch.device) -> dict[str, torch.nn.Module]:
    """Every metric the callback can keep per chunk without a host sync (consistency on the output only)."""
    metrics = {
        "G-EED": InvarianceDeviation(group, normalize=True),
        "variance": NormalizedVariance(),
        "fitted maps (norm)": LinearMapFit(group, max_features=64),
    }
    if layer == "output":
        metrics["consistency"] = PredictionConsistency(group)
    return {name: metric.to(device) for name, metric in metrics.items()}


def measure(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    layers: list[str],
    device: torch.device,
    metric_device: torch.device | None = None,
) -> tuple[dict[tuple[str, str], float], int]:
    """Every score per (layer, measure), and the sync warnings raised while updating (CUDA only).

    The model runs on ``device``, the metrics live on ``metric_device`` (``device`` if not given).
    """
    group = Dihedral(4)
    model = model.to(device)
    metrics = {layer: _metrics(layer, group, metric_device or device) for layer in layers}
    lie = {layer: LieDerivative(normalize=True).to(metric_device or device) for layer in layers}
    with warnings.catch_warnings(record=True) as caught, _sync_debug(device):
        warnings.simplefilter("always")
        Probe(model, group, layers=layers).update(inputs.to(device), {k: list(v.values()) for k, v in metrics.items()})
        LieProbe(model, "rotation", layers=layers).update(inputs.to(device), lie)
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    with warnings.catch_warnings():  # an untrained model gives every input one label: consistency 1.0, as it says
        warnings.simplefilter("ignore", RuntimeWarning)
        values = {(layer, name): float(m.compute().norm()) for layer in layers for name, m in metrics[layer].items()}
        values |= {(layer, "Lie derivative"): float(metric.compute()) for layer, metric in lie.items()}
    return values, len(syncs)


def group_syncs(device: torch.device, scale: int) -> list[list]:
    """Syncs while measuring the G-EED under groups whose elements carry constants, and with border masks."""
    torch.manual_seed(0)
    images, points, rows = torch.randn(256 // scale, 1, 16, 16), torch.randn(256 // scale, 12, 3), []
    layers = [torch.nn.Flatten(), torch.nn.Linear(36, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)]
    point_net = torch.nn.Sequential(*layers)
    rotation = ContinuousRotation([30.0, 60.0, -45.0])
    masked = EquivarianceDeviation(SpatialAction(rotation), border_mask=True, normalize=True)
    cases = [
        (rotation, small_cnn(), images, "0", masked),
        (CyclicRotation(8), small_cnn(), images, "output", None),
        (Scaling([0.8, 1.25]), small_cnn(), images, "output", None),
        (Permutation(dim=1, num_elements=4), point_net, points, "output", None),
        (Rotation3D(8), point_net, points, "output", None),
    ]
    for group, model, inputs, layer, metric in cases:
        metric = (metric or InvarianceDeviation(group, normalize=True)).to(device)
        with warnings.catch_warnings(record=True) as caught, _sync_debug(device):
            warnings.simplefilter("always")
            Probe(model.eval().to(device), group, layers=[layer]).update(inputs.to(device), {layer: metric})
        syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
        rows.append([repr(group), layer, type(metric).__name__, f"{float(metric.compute()):.6f}", len(syncs)])
    return rows


@contextlib.contextmanager
def _sync_debug(device: torch.device):
    if device.type != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode("warn")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    args = parser.parse_args()
    device = torch.device(args.device)
    # full float32 convolutions and matrix products in the models (cuDNN allows TF32 by default), so that the device's
    # features match the CPU's to float32 rounding and the first difference shows the metrics' arithmetic
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    scale = 16 if args.quick else 1
    cases = [
        ("small CNN", small_cnn, (1, 16, 16), 2048 // scale, ["1", "3", "6", "output"]),
        ("ResNet-18 (w16)", resnet18, (3, 32, 32), 512 // scale, ["3", "5", "7", "output"]),
    ]
    rows = []
    for name, build, shape, n, layers in cases:
        torch.manual_seed(0)
        model, inputs = build().eval(), torch.randn(n, *shape)
        on_cpu, _ = measure(model, inputs, layers, torch.device("cpu"))
        on_device, syncs = measure(model, inputs, layers, device)
        metrics_on_cpu, _ = measure(model, inputs, layers, device, torch.device("cpu"))  # features moved to them
        for key, value in on_cpu.items():
            difference = abs(on_device[key] - value) / abs(value)
            moved = abs(metrics_on_cpu[key] - on_device[key]) / abs(on_device[key])
            values = [f"{value:.8f}", f"{on_device[key]:.8f}", f"{difference:.1e}", f"{moved:.1e}", syncs]
            rows.append([name, *key, *values])
    print(f"Scores under D4 on the CPU and on {device} ({device_name(device)}, torch {torch.__version__})")
    headers = ["model", "layer", "measure", "CPU", str(device), "relative difference", "metrics on CPU: difference"]
    print(table([*headers, "syncs while updating"], rows))
    print(f"\nOther groups on {device}: host syncs while measuring")
    print(table(["group", "layer", "metric", "value", "syncs while updating"], group_syncs(device, scale)))


if __name__ == "__main__":
    main()
