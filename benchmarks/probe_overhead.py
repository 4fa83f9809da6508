"""Probe overhead: measuring time over the time of the bare forward passes it needs (the floor).

For N inputs and a group G, measuring needs N x |G| forward passes; the floor is the time of exactly those passes on
pre-transformed inputs at the probe's batch size (``chunk_size``), in eval mode under ``torch.no_grad()``. The probe
also transforms the inputs, captures L layers with hooks and computes the G-EED statistics of each (one metric per
layer, as the callback does): all of that is the overhead. The last column divides by the transform-and-forward time
instead: building the orbit is work any measurement must do, and for a tiny model it alone costs about half a forward
pass. Each round times the floors and the probe back to back; the ratios are medians of the per-round ratios, which
cancels the drift of a shared machine's speed.

On a GPU (``--device cuda``) the probe runs at its accelerator chunk size (2048 inputs a pass) and every size is 8x
larger, so that each run holds several chunks; ``--autocast bf16`` runs the floor's and the probe's forward passes
under bf16 autocast (the metrics compute in float32 or wider either way).

    python benchmarks/probe_overhead.py [--quick] [--device cuda] [--autocast bf16]
"""

from __future__ import annotations

import argparse
import functools
import statistics
from collections.abc import Callable

import torch

from lightning_invariance import InvarianceDeviation, Probe
from lightning_invariance._layers import ACCELERATOR_CHUNK_SIZE, CPU_CHUNK_SIZE
from lightning_invariance.groups import CyclicRotation, CyclicTranslation, Dihedral

from _common import (
    add_device_arguments,
    device_name,
    forward_context,
    interleaved_seconds,
    orbit_forwards,
    resnet18,
    small_cnn,
    table,
    tiny_mlp,
)


def groups() -> dict[int, object]:
    shifts = [(dy, dx) for dy in range(4) for dx in range(4) if dy or dx]
    return {4: CyclicRotation(4), 8: Dihedral(4), 16: CyclicTranslation(shifts)}


def models(quick: bool, scale: int) -> list[tuple[str, torch.nn.Module, tuple[int, ...], int, list[str]]]:
    """(name, model, input shape, N, the 3 inner layers used for L = 4); N times ``scale``, an eighth if quick."""
    divide = 8 if quick else 1
    return [
        ("tiny MLP", tiny_mlp(), (1, 16, 16), 4096 * scale // divide, ["1", "3", "5"]),
        ("small CNN", small_cnn(), (1, 16, 16), 2048 * scale // divide, ["1", "3", "6"]),
        ("ResNet-18 (w16)", resnet18(), (3, 32, 32), 256 * scale // divide, ["3", "5", "7"]),
    ]


def floor_run(model: torch.nn.Module, inputs: torch.Tensor, group, chunk: int, context) -> Callable[[], None]:
    """Bare forwards over the pre-transformed orbits, chunked as the probe chunks them."""
    per_chunk = max(1, chunk // len(group))
    batches = [group.orbit(inputs[s : s + per_chunk]).flatten(0, 1) for s in range(0, len(inputs), per_chunk)]

    def run() -> None:
        with torch.no_grad(), context():
            for batch in batches:
                model(batch)

    return run


def transform_floor_run(model: torch.nn.Module, inputs: torch.Tensor, group, chunk: int, context) -> Callable[[], None]:
    """Building each chunk's orbit, then the bare forward: the least any measurement must do."""

    def run() -> None:
        with context():
            orbit_forwards(model, inputs, group, chunk)

    return run


def probe_run(
    model: torch.nn.Module, inputs: torch.Tensor, group, layers: list[str], chunk: int, context
) -> Callable[[], None]:
    probe = Probe(model, group, layers=layers, chunk_size=chunk)

    def run() -> None:  # one metric per layer, as the callback uses: its summary has the raw and normalised G-EED
        metrics = {layer: InvarianceDeviation(len(group)).to(inputs.device) for layer in layers}
        with context():
            probe.update(inputs, metrics)
        for metric in metrics.values():
            metric.compute_summary()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--repeats", type=int, default=7)
    add_device_arguments(parser)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    device = torch.device(args.device)
    chunk = CPU_CHUNK_SIZE if device.type == "cpu" else ACCELERATOR_CHUNK_SIZE  # the probe's defaults
    context = functools.partial(forward_context, device, args.autocast)
    torch.manual_seed(0)
    rows = []
    for name, model, shape, n, inner in models(args.quick, 1 if device.type == "cpu" else 8):
        model.eval().to(device)
        inputs = torch.randn(n, *shape).to(device)
        for size, group in groups().items():
            runs = [
                floor_run(model, inputs, group, chunk, context),
                transform_floor_run(model, inputs, group, chunk, context),
            ]
            runs += [
                probe_run(model, inputs, group, layers, chunk, context) for layers in (["output"], ["output", *inner])
            ]
            rounds = interleaved_seconds(runs, repeats, device=device)
            floor = statistics.median(r[0] for r in rounds)
            for index, num_layers in ((2, 1), (3, 1 + len(inner))):
                probe = statistics.median(r[index] for r in rounds)
                over_floor = statistics.median(r[index] / r[0] for r in rounds)
                over_transform = statistics.median(r[index] / r[1] for r in rounds)
                rows.append([name, n, size, num_layers, floor * 1000, probe * 1000, over_floor, over_transform])
    print(
        f"Probe overhead ({device_name(device)}, torch {torch.__version__}, chunk_size={chunk}, autocast "
        f"{args.autocast}, medians of {repeats} interleaved rounds)"
    )
    headers = ["model", "N", "|G|", "L", "floor ms", "probe ms", "probe / floor", "probe / (transform + floor)"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
