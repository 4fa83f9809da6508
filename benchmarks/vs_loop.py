"""The probe against the straightforward loop a user would write without this package.

The straightforward way: one forward pass per group element over the data in dataloader-sized batches with autograd
on (as in a training script), forward hooks that keep every layer's features, then the centroid distances in one
vectorised pass, and the normaliser per batch with ``torch.cdist``. Both give the same G-EED
(checked to 1e-4 on the CPU, 1e-2 on a GPU, where TF32 convolutions may differ by batch; the normalised ones to 5%,
as the normalisers pair samples in different groups). The probe runs at
its defaults. The floor is what any measurement must do: each chunk's orbit built and run forward under
``torch.no_grad()`` at the probe's chunk size, nothing kept. Time: the three interleaved in rounds, medians of the
times and of the per-round ratios (which cancels a shared machine's drift); peak memory: a
fresh process each, resident memory above the model's and data's set-up (on a GPU: CUDA memory allocated above it).

    python benchmarks/vs_loop.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import functools
import statistics

import torch

from lightning_invariance import InvarianceDeviation, Probe
from lightning_invariance._layers import ACCELERATOR_CHUNK_SIZE, CPU_CHUNK_SIZE
from lightning_invariance.groups import Dihedral

from _common import (
    add_device_arguments,
    cuda_peak_mib,
    device_name,
    interleaved_seconds,
    orbit_forwards,
    peak_memory_mib,
    small_cnn,
    table,
)

BATCH = 128
INNER = ["1", "3", "6"]


def straightforward(
    model: torch.nn.Module, inputs: torch.Tensor, group, layers: list[str]
) -> dict[str, tuple[float, float]]:
    modules = dict(model.named_modules())
    stored: dict[str, list[list[torch.Tensor]]] = {layer: [[] for _ in range(len(group))] for layer in layers}
    element = [0]
    handles = []
    for layer in layers:
        module = model if layer == "output" else modules[layer]

        def hook(module, args, output, layer=layer):
            stored[layer][element[0]].append(output.detach().flatten(1))

        handles.append(module.register_forward_hook(hook))
    for k in range(len(group)):
        element[0] = k
        for batch in inputs.split(BATCH):
            model(group.act(batch, k))  # autograd on, as in a training script
    for handle in handles:
        handle.remove()
    scores = {}
    for layer in layers:
        orbit = torch.stack([torch.cat(chunks) for chunks in stored[layer]])  # (|G|, N, D)
        geed = torch.linalg.vector_norm(orbit - orbit.mean(0), dim=-1).mean().item()  # one centroid distance pass
        pair_sum, pair_count = 0.0, 0
        for batch in orbit[0].split(BATCH):
            distances = torch.cdist(batch, batch)
            pair_sum += distances.sum().item()
            pair_count += batch.shape[0] * (batch.shape[0] - 1)
        scores[layer] = (geed, geed / (pair_sum / pair_count))
    return scores


def floor(model: torch.nn.Module, inputs: torch.Tensor, group, layers: list[str]) -> None:
    """Each chunk's orbit through the model at the probe's default chunk size, nothing kept."""
    orbit_forwards(model, inputs, group, CPU_CHUNK_SIZE if inputs.device.type == "cpu" else ACCELERATOR_CHUNK_SIZE)


def with_probe(
    model: torch.nn.Module, inputs: torch.Tensor, group, layers: list[str]
) -> dict[str, tuple[float, float]]:
    """The probe at its defaults (chunk size, normaliser pairs within each chunk)."""
    metrics = {layer: InvarianceDeviation(len(group)).to(inputs.device) for layer in layers}
    Probe(model, group, layers=layers).update(inputs, metrics)
    summaries = {layer: metric.compute_summary() for layer, metric in metrics.items()}
    return {layer: (s["geed"].item(), s["geed_normalized"].item()) for layer, s in summaries.items()}


def _setup(n: int, how: str, layers: list[str], device: str = "cpu"):
    torch.manual_seed(0)
    model, inputs, group = small_cnn().eval().to(device), torch.randn(n, 1, 16, 16).to(device), Dihedral(4)
    fn = {"floor": floor, "loop": straightforward, "probe": with_probe}[how]
    return functools.partial(fn, model, inputs, group, layers)


def _peak_mib(n: int, how: str, layers: list[str], device: torch.device) -> float:
    if device.type == "cuda":
        return cuda_peak_mib(_setup(n, how, layers, str(device)), device)
    return peak_memory_mib(functools.partial(_setup, n, how, layers))[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--repeats", type=int, default=5)
    add_device_arguments(parser, autocast=False)
    args = parser.parse_args()
    device = torch.device(args.device)
    n = (128 if args.quick else 2048) * (1 if device.type == "cpu" else 8)
    repeats = 1 if args.quick else args.repeats
    rows = []
    for layers in (["output"], ["output", *INNER]):
        floor_run = _setup(n, "floor", layers, args.device)
        loop_run, probe_run = _setup(n, "loop", layers, args.device), _setup(n, "probe", layers, args.device)
        loop_scores, probe_scores = loop_run(), probe_run()
        # the same G-EED; the normalisers pair samples within different groups. On a GPU the loop's batches (one
        # element, 128 inputs) and the probe's (whole orbits, 2048) may get other convolution algorithms, with TF32
        # by default: their features differ by more than float32 rounding
        tolerance = 1e-4 if device.type == "cpu" else 1e-2
        for layer in layers:
            (loop_raw, loop_normalized), (probe_raw, probe_normalized) = loop_scores[layer], probe_scores[layer]
            assert abs(loop_raw - probe_raw) <= tolerance * abs(loop_raw), (layer, loop_raw, probe_raw)
            assert abs(loop_normalized - probe_normalized) <= 0.05 * abs(loop_normalized), layer
        rounds = interleaved_seconds([floor_run, loop_run, probe_run], repeats, warmup=1, device=device)
        floor_time, loop_time, probe_time = (statistics.median(times) for times in zip(*rounds, strict=True))
        speed_up = statistics.median(loop / probe for _, loop, probe in rounds)
        over_floor = statistics.median(probe / floor for floor, _, probe in rounds)
        mib = [_peak_mib(n, how, layers, device) for how in ("floor", "loop", "probe")]
        rows.append([len(layers), floor_time, loop_time, probe_time, speed_up, over_floor])
        rows[-1] += mib
    print(
        f"Small CNN, |G| = 8 (D4), N = {n} 16x16 inputs, batch {BATCH}; medians of {repeats} interleaved rounds "
        f"({device_name(device)}, torch {torch.__version__})"
    )
    headers = ["L", "floor s", "loop s", "probe s", "speed-up", "probe / floor"]
    print(table([*headers, "floor peak MiB", "loop peak MiB", "probe peak MiB"], rows))


if __name__ == "__main__":
    main()
