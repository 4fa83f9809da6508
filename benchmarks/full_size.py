"""Issue 11's configurations: ResNet-50 and ResNet-18 on 224x224 inputs, and the small CNN on 32x32 inputs.

The table issue 11 was filed with, measured the same way: C4, 512 inputs of 3x224x224 for the ResNets (torchvision's
layout: ``layer1`` to ``layer4`` and the output, 5 layers) and 8192 inputs of 1x32x32 for the small CNN (its two
first ReLUs and the output, 3 layers), the probe at its default chunk size with one normalised G-EED metric per
layer, as the callback measures. The floor is the same orbit forward passes under ``torch.inference_mode()``, no
hooks, no metrics; the loop is the straightforward one of ``vs_loop.py`` (one forward per group element in batches
of 128 with autograd on, hooks keeping every layer's features, the centroid distances at the end). Times are
medians of interleaved rounds (ratios: medians of the per-round ratios); peak memory is CUDA memory allocated above
the set-up on a GPU, resident memory in a fresh process on the CPU. The last column is the largest relative
difference between the loop's and the probe's raw G-EED over the layers (the same measure; under bf16 autocast the
forward passes' batches differ, so the features differ by bf16 rounding).

Meant for a GPU (``--device cuda``, with ``--autocast bf16`` for the bf16 rows): on 2 CPU cores a ResNet-50 round
takes minutes. ``--quick`` runs 32x32 images and a few inputs (peak memory for the first model only), to check the
script runs.

    python benchmarks/full_size.py [--quick] [--device cuda] [--autocast bf16] [--repeats 5] [--models small_cnn]
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
from collections.abc import Callable

import torch
from vs_loop import straightforward

from lightning_invariance import InvarianceDeviation, Probe
from lightning_invariance.groups import CyclicRotation

from _common import (
    ImageNetResNet,
    add_device_arguments,
    cuda_peak_mib,
    device_name,
    forward_context,
    interleaved_seconds,
    peak_memory_mib,
    small_cnn,
    table,
)

GROUP = CyclicRotation(4)
#: name, model factory, input shape, N, layers
Configuration = tuple[str, Callable[[], torch.nn.Module], tuple[int, ...], int, list[str]]
HOW = ("floor", "probe, output", "probe, layers", "loop, layers")


def configurations(quick: bool) -> dict[str, Configuration]:
    """The issue's three configurations by command-line key (a few small inputs if ``quick``)."""
    size, divide = (32, 64) if quick else (224, 1)
    stages = ["layer1", "layer2", "layer3", "layer4", "output"]
    return {
        "resnet50": ("ResNet-50", functools.partial(ImageNetResNet, 50), (3, size, size), 512 // divide, stages),
        "resnet18": ("ResNet-18", functools.partial(ImageNetResNet, 18), (3, size, size), 512 // divide, stages),
        "small_cnn": ("small CNN", small_cnn, (1, 32, 32), 8192 // divide, ["1", "3", "output"]),
    }


def _run(how: str, model: torch.nn.Module, inputs: torch.Tensor, layers: list[str], autocast: str) -> Callable:
    context = functools.partial(forward_context, inputs.device, autocast)
    if how == "floor":
        chunk = Probe(model, GROUP).samples_per_chunk(inputs.device)

        def floor() -> None:
            with torch.inference_mode(), context():
                for start in range(0, len(inputs), chunk):
                    model(GROUP.orbit(inputs[start : start + chunk]).flatten(0, 1))

        return floor
    if how == "loop, layers":

        def loop() -> dict[str, float]:
            with context():
                return {layer: raw for layer, (raw, _) in straightforward(model, inputs, GROUP, layers).items()}

        return loop
    measured = ["output"] if how == "probe, output" else layers
    probe = Probe(model, GROUP, layers=measured)

    def with_probe() -> dict[str, float]:
        metrics = {layer: InvarianceDeviation(GROUP).to(inputs.device) for layer in measured}
        with context():
            probe.update(inputs, metrics)
        return {layer: metric.compute_summary()["geed"].item() for layer, metric in metrics.items()}

    return with_probe


def _setup(key: str, how: str, quick: bool, device: str, autocast: str) -> Callable:
    """Build configuration ``key``'s model and inputs on ``device`` and return the run ``how`` (picklable)."""
    _, factory, shape, n, layers = configurations(quick)[key]
    torch.manual_seed(0)
    model = factory().eval().to(device)
    return _run(how, model, torch.randn(n, *shape).to(device), layers, autocast)


def _peak_mib(key: str, how: str, args: argparse.Namespace) -> float:
    task = functools.partial(_setup, key, how, args.quick, args.device, args.autocast)
    device = torch.device(args.device)
    if device.type == "cuda":
        return cuda_peak_mib(task(), device)
    return peak_memory_mib(task)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one model's peaks: to check the script runs")
    parser.add_argument("--repeats", type=int, default=5)
    keys = list(configurations(False))
    parser.add_argument("--models", nargs="+", choices=keys, default=keys, help="which configurations (default: all)")
    add_device_arguments(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    repeats = 1 if args.quick else args.repeats
    rows = []
    for key in args.models:
        name, _, shape, n, layers = configurations(args.quick)[key]
        runs = [_setup(key, how, args.quick, args.device, args.autocast) for how in HOW]
        probe_scores, loop_scores = runs[2](), runs[3]()
        difference = max(abs(loop_scores[k] - probe_scores[k]) / abs(probe_scores[k]) for k in layers)
        rounds = interleaved_seconds(runs, repeats, device=device)
        floor, _, probe, loop = (statistics.median(times) for times in zip(*rounds, strict=True))
        output_ratio, layers_ratio, loop_ratio = (
            statistics.median(ratio(r) for r in rounds)
            for ratio in (lambda r: r[1] / r[0], lambda r: r[2] / r[0], lambda r: r[3] / r[2])
        )
        peaks = [math.nan] * 3
        if not args.quick or key == args.models[0]:  # quick: the fresh processes for one model only
            peaks = [_peak_mib(key, how, args) for how in ("floor", "probe, layers", "loop, layers")]
        times = [floor, probe, loop, output_ratio, layers_ratio, loop_ratio]
        rows.append([name, "x".join(map(str, shape)), n, len(layers), *times, *peaks, f"{difference:.1e}"])
    print(
        f"Issue 11's configurations, C4 ({device_name(device)}, torch {torch.__version__}, autocast {args.autocast}, "
        f"probe chunk {Probe(torch.nn.Identity(), GROUP).inputs_per_pass(device)} inputs; medians of {repeats} "
        "interleaved rounds)"
    )
    headers = ["model", "input", "N", "L", "floor s", "probe s", "loop s", "probe / floor, output"]
    headers += ["probe / floor, layers", "loop / probe, layers", "floor peak MiB", "probe peak MiB", "loop peak MiB"]
    print(table([*headers, "G-EED loop vs probe"], rows))


if __name__ == "__main__":
    main()
