"""Measuring early layers only: the probe stops each forward pass after the deepest captured layer.

When the model's output is not measured, every chunk after the first stops its forward pass once the last requested
layer has run (the first chunk runs whole, to check that each layer runs exactly once). This times measuring one
early layer of a ResNet-18-layout CNN (the first block's output) with and without the output in ``layers``: the
ratio is what stopping early saves. Rounds interleave the two; the ratio is the median of per-round ratios.

    python benchmarks/early_layers.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from lightning_invariance import InvarianceDeviation, Probe
from lightning_invariance.groups import CyclicRotation

from _common import interleaved_seconds, resnet18, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    args = parser.parse_args()
    n, repeats = (64, 1) if args.quick else (1024, 5)
    torch.manual_seed(0)
    model, group = resnet18().eval(), CyclicRotation(4)
    inputs = torch.randn(n, 3, 32, 32)
    early = "3"  # the first basic block

    def run(layers: list[str]):
        def measure() -> None:
            metrics = {layer: InvarianceDeviation(len(group)) for layer in layers}
            Probe(model, group, layers=layers).update(inputs, metrics)

        return measure

    rounds = interleaved_seconds([run([early]), run([early, "output"])], repeats)
    ratio = statistics.median(only / whole for only, whole in rounds)
    medians = [statistics.median(times) for times in zip(*rounds, strict=True)]
    print(f"ResNet-18 layout, {n} inputs of 3x32x32 under C4, CPU, chunks of 128 inputs: layer {early!r} (first block)")
    print(table(
        ["early layer only s", "with the output s", "early / with output"],
        [[medians[0], medians[1], ratio]],
    ))  # fmt: skip


if __name__ == "__main__":
    main()
