"""Operations per metric update: on a GPU each is a kernel launch, which for a small layer costs more than its work.

A GPU runs a small layer's mean, difference and norm in microseconds, while issuing each operation costs the host
several microseconds; when the metrics issue hundreds of operations per chunk, the host falls behind the device and
the measurement costs many times the forward passes (issue 11: a small CNN's layers at 6x the floor on an H200). This
script counts, on any machine, the ATen operations that compute something (views and metadata left out) in one
``update`` of the default G-EED metric (normalised), taking the accelerators' path (no branching on values on the
host; a GPU's block sizes); ``--device`` runs it on that device instead of emulating it. The counts do not depend on
the machine: they are what the code issues. A second table counts the operations per chunk of a whole probe pass
(the small CNN and the ResNet-18 layout with 4 layers, D4, the accelerators' chunk of 2048 inputs) against the bare
forward passes of the same chunks.

    python benchmarks/kernel_counts.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_invariance import InvarianceDeviation, Probe
from lightning_invariance._layers import ACCELERATOR_CHUNK_SIZE
from lightning_invariance.groups import Dihedral
from lightning_invariance.metrics import LinearMapFit, NormalizedVariance

from _common import accelerator_path_device, add_accelerator_path_arguments, resnet18, small_cnn, table

#: Operations that only make a new view of the same memory (no kernel).
VIEWS = frozenset({
    "alias", "as_strided", "detach", "expand", "permute", "reshape", "select", "slice", "split", "squeeze", "t",
    "transpose", "unbind", "unflatten", "unfold", "unsqueeze", "view", "_unsafe_view", "_reshape_alias",
})  # fmt: skip


class KernelCounter(TorchDispatchMode):
    """Counts the ATen operations that compute or copy (each is at least one kernel launch on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in VIEWS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def operations_per_update(metric, features: torch.Tensor) -> Counter[str]:
    """Operations in the third ``update`` of ``features`` (the first two fill the normaliser's boundary rows)."""
    metric.update(features)
    metric.update(features)
    with KernelCounter() as counter:
        metric.update(features)
    return counter.counts


def probe_operations(model: torch.nn.Module, inputs: torch.Tensor, layers: list[str]) -> tuple[float, float]:
    """Operations per chunk: the bare orbit forward passes, and a probe pass with the G-EED of every layer."""
    group = Dihedral(4)
    per_chunk = ACCELERATOR_CHUNK_SIZE // len(group)
    chunks = range(0, len(inputs), per_chunk)
    probe = Probe(model, group, layers=layers, chunk_size=ACCELERATOR_CHUNK_SIZE)
    metrics = {layer: InvarianceDeviation(group, normalize=True).to(inputs.device) for layer in layers}
    probe.update(inputs[:per_chunk], metrics)  # the first chunk checks every layer runs; later ones stop early
    with KernelCounter() as floor, torch.no_grad():
        for start in chunks:
            model(group.orbit(inputs[start : start + per_chunk]).flatten(0, 1))
    with KernelCounter() as measured:
        probe.update(inputs, metrics)
    return sum(floor.counts.values()) / len(chunks), sum(measured.counts.values()) / len(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    add_accelerator_path_arguments(parser)
    args = parser.parse_args()
    device = accelerator_path_device(args.device)
    samples = (16, 32) if args.quick else (32, 256, 1024)
    cases = [("class scores", (10,)), ("pooled features", (512,)), ("feature map 32x16x16", (32, 16, 16))]
    metrics = {
        "G-EED (normalised)": lambda: InvarianceDeviation(8, normalize=True),
        "normalised variance": NormalizedVariance,
        "fitted maps (fit)": lambda: LinearMapFit(8),
    }
    rows = []
    for metric_name, build in metrics.items():
        for case, shape in cases:
            counts = []
            for n in samples:
                features = torch.randn(8, n, *shape, generator=torch.Generator().manual_seed(0)).to(device)
                counts.append(operations_per_update(build().to(device), features))
            top = ", ".join(f"{name} {count}" for name, count in counts[-1].most_common(4))
            rows.append([metric_name, case, *[sum(c.values()) for c in counts], top])
    path = "emulated accelerator path on the CPU" if args.device is None else str(device)
    print(f"Operations per update, |G| = 8 ({path}, torch {torch.__version__})")
    headers = ["metric", "layer", *[f"N = {n}" for n in samples], f"most frequent at N = {samples[-1]}"]
    print(table(headers, rows))
    rows = []
    chunks = 1 if args.quick else 2
    models = [("small CNN", small_cnn, (1, 16, 16), ["1", "3", "6", "output"])]
    if not args.quick:
        models.append(("ResNet-18 (w16)", resnet18, (3, 32, 32), ["3", "5", "7", "output"]))
    for name, build, shape, layers in models:
        inputs = torch.randn(chunks * ACCELERATOR_CHUNK_SIZE // 8, *shape).to(device)
        floor, measured = probe_operations(build().eval().to(device), inputs, layers)
        rows.append([name, len(layers), f"{floor:.0f}", f"{measured:.0f}", f"{measured / floor:.1f}"])
    print(f"\nOperations per chunk of {ACCELERATOR_CHUNK_SIZE} inputs under D4, the G-EED of every layer ({path})")
    print(table(["model", "layers", "bare forward", "probe", "probe / bare"], rows))


if __name__ == "__main__":
    main()
