"""What each measure costs on top of the forward passes it needs, for a CNN's inner layer and output.

For N inputs under C4 (|G| = 4) it times, interleaved round by round (so the VM's drift cancels in the ratios):

- the floor of the orbit measures: the bare forward pass of the 4N transformed inputs, no hooks, no metrics;
- the G-EED alone, and the G-EED with the normalised variance and the fitted linear maps (half the inputs fit,
  half held out) fed from the same probe pass;
- the floor of the Lie derivative: the bare forward pass of the N inputs;
- the Lie derivative (one ``torch.func.jvp`` per chunk).

and prints the median of the per-round ratios: measure time over its floor.

    python benchmarks/measures_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from lightning_invariance import (
    InvarianceDeviation,
    LieDerivative,
    LieProbe,
    LinearMapFit,
    NormalizedVariance,
    Probe,
)
from lightning_invariance.groups import CyclicRotation

from _common import interleaved_seconds, small_cnn, table

LAYERS = ["3", "output"]  # the second convolution's ReLU and the output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for the test suite")
    args = parser.parse_args()
    torch.manual_seed(0)
    num_inputs, repeats = (64, 3) if args.quick else (1024, 15)
    model, group = small_cnn().eval(), CyclicRotation(4)
    x = torch.randn(num_inputs, 1, 16, 16)
    probe, lie_probe = Probe(model, group, LAYERS), LieProbe(model, "rotation", LAYERS)
    chunk = probe.samples_per_chunk()

    def orbit_floor() -> None:
        with torch.no_grad():
            for start in range(0, num_inputs, chunk):
                model(group.orbit(x[start : start + chunk]).flatten(0, 1))

    def geed() -> None:
        probe.update(x, {layer: InvarianceDeviation(4, normalize=True) for layer in LAYERS})

    def all_orbit_measures() -> None:
        metrics = {layer: [InvarianceDeviation(4, normalize=True), NormalizedVariance()] for layer in LAYERS}
        fits = {layer: LinearMapFit(4) for layer in LAYERS}
        half = num_inputs // 2
        probe.update(x[:half], {layer: [*metrics[layer], fits[layer]] for layer in LAYERS})
        linear = {layer: fit.held_out_metric() for layer, fit in fits.items()}
        probe.update(x[half:], {layer: [*metrics[layer], linear[layer]] for layer in LAYERS})

    def plain_floor() -> None:
        with torch.no_grad():
            for start in range(0, num_inputs, 128):
                model(x[start : start + 128])

    def lie() -> None:
        lie_probe.update(x, {layer: LieDerivative(normalize=True) for layer in LAYERS})

    rounds = interleaved_seconds([orbit_floor, geed, all_orbit_measures, plain_floor, lie], repeats)

    def ratio(i: int, floor: int) -> float:
        return statistics.median(r[i] / r[floor] for r in rounds)

    def ms(i: int) -> str:
        return f"{1000 * statistics.median(r[i] for r in rounds):.1f}"

    print(f"small CNN, {num_inputs} inputs of 16x16, C4, layers {LAYERS}, median of {repeats} interleaved rounds")
    print(
        table(
            ["measure", "ms", "floor", "ms", "measure / floor"],
            [
                ["G-EED", ms(1), "orbit forward (4N)", ms(0), f"{ratio(1, 0):.2f}"],
                ["G-EED + variance + fitted maps", ms(2), "orbit forward (4N)", ms(0), f"{ratio(2, 0):.2f}"],
                ["Lie derivative (jvp)", ms(4), "plain forward (N)", ms(3), f"{ratio(4, 3):.2f}"],
                ["Lie derivative (jvp)", ms(4), "orbit forward (4N)", ms(0), f"{ratio(4, 0):.2f}"],
            ],
        )
    )


if __name__ == "__main__":
    main()
