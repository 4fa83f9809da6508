"""Peak memory of the probe on the accelerators' path against the bare forward passes, measured as allocations.

On a GPU the probe runs 2048 inputs a pass, where one layer's orbit can hold 2^26 values or more, so any temporary
the size of a layer adds that layer to the forward pass's peak. Without a GPU this script takes the accelerators'
path on the CPU (no host branches, the accelerators' block sizes, 2048 inputs a pass) and reads the peak of the
tensors alive at once from PyTorch's memory profiler (the allocations, not the process's resident memory, which the
CPU allocator's caching blurs): the floor's (each chunk's orbit through the model under ``torch.no_grad()``) and the
probe's with the normalised G-EED of every layer, and with the variance and fitted maps too. On a GPU,
``--device cuda`` reads ``torch.cuda.max_memory_allocated`` instead.

    python benchmarks/accelerator_memory.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from lightning_invariance import InvarianceDeviation, Probe
from lightning_invariance._layers import ACCELERATOR_CHUNK_SIZE
from lightning_invariance.groups import CyclicRotation
from lightning_invariance.metrics import LinearMapFit, NormalizedVariance

from _common import (
    ImageNetResNet,
    accelerator_path_device,
    add_accelerator_path_arguments,
    cuda_peak_mib,
    device_name,
    small_cnn,
    table,
)

GROUP = CyclicRotation(4)


def allocated_peak_mib(fn: Callable[[], object]) -> float:
    """MiB of tensors alive at once at the peak of ``fn()`` on the CPU (PyTorch's memory profiler)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action  # private: the timeline of allocations

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    alive = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        alive += size if action == Action.CREATE else -size if action == Action.DESTROY else 0
        peak = max(peak, alive)
    return peak / 2**20


def runs(model: torch.nn.Module, inputs: torch.Tensor, layers: list[str]) -> dict[str, Callable[[], None]]:
    per_chunk = ACCELERATOR_CHUNK_SIZE // len(GROUP)

    def floor() -> None:
        with torch.no_grad():
            for start in range(0, len(inputs), per_chunk):
                model(GROUP.orbit(inputs[start : start + per_chunk]).flatten(0, 1))

    def probe(with_more: bool) -> Callable[[], None]:
        def run() -> None:
            metrics = {}
            for layer in layers:
                metrics[layer] = [InvarianceDeviation(GROUP, normalize=True).to(inputs.device)]
                if with_more:
                    metrics[layer] += [NormalizedVariance().to(inputs.device), LinearMapFit(GROUP).to(inputs.device)]
            chunks = Probe(model, GROUP, layers=layers, chunk_size=ACCELERATOR_CHUNK_SIZE)
            chunks.run(inputs, lambda name, features: [metric.update(features) for metric in metrics[name]])

        return run

    return {"floor": floor, "G-EED": probe(False), "G-EED, variance, maps": probe(True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    add_accelerator_path_arguments(parser)
    args = parser.parse_args()
    device, emulated = accelerator_path_device(args.device), args.device is None
    n, size = (128, 32) if args.quick else (1024, 112)
    torch.manual_seed(0)
    cases = [
        ("small CNN", small_cnn().eval().to(device), torch.randn(n, 1, 32, 32), ["1", "3", "output"]),
        ("ResNet-18", ImageNetResNet(18).eval().to(device), torch.randn(n, 3, size, size), ["layer1", "layer2"]),
    ]
    rows = []
    for name, model, inputs, layers in cases:
        inputs = inputs.to(device)
        named = runs(model, inputs, layers)
        peak = allocated_peak_mib if device.type != "cuda" else lambda fn, device=device: cuda_peak_mib(fn, device)
        floor = peak(named["floor"])
        for what in ("G-EED", "G-EED, variance, maps"):
            measured = peak(named[what])
            rows.append([name, f"{n} x {tuple(inputs.shape[1:])}", ", ".join(layers), what, floor, measured])
            rows[-1].append(measured / floor)
    path = "accelerators' path emulated on the CPU, allocations" if emulated else device_name(device)
    path += "" if emulated or device.type == "cuda" else ", allocations"
    print(f"Peak memory at {ACCELERATOR_CHUNK_SIZE} inputs a pass under C4 ({path}, torch {torch.__version__})")
    headers = ["model", "inputs", "layers", "measured", "floor MiB", "probe MiB", "probe / floor"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
