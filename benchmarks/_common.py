"""Shared by the benchmarks: models, timing (medians of repeats) and peak memory measured in a fresh process."""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import platform
import queue as queue_module
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_invariance import _sync


def tiny_mlp(size: int = 16) -> nn.Module:
    """A two-layer MLP on flattened ``size x size`` images (about 8k parameters)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(size * size, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)
    )


def small_cnn(width: int = 16) -> nn.Module:
    """The examples' small CNN (3 convolutions, about 14k parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 10),
    )  # fmt: skip


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with BatchNorm and a (projected) skip connection."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.skip = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.skip = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))


def resnet18(width: int = 16, num_classes: int = 10) -> nn.Module:
    """ResNet-18's layout (4 stages of 2 basic blocks) for 32x32 images, ``width`` channels in the first stage."""
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    inputs = width
    for stage, outputs in enumerate([width, 2 * width, 4 * width, 8 * width]):
        for block in range(2):
            layers.append(BasicBlock(inputs, outputs, 2 if stage > 0 and block == 0 else 1))
            inputs = outputs
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inputs, num_classes)]
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """ResNet-50's block: 1x1, 3x3 (strided) and 1x1 convolutions with BatchNorm, 4x wider out, and a skip."""

    def __init__(self, inputs: int, width: int, stride: int) -> None:
        super().__init__()
        outputs = 4 * width
        self.conv1, self.bn1 = nn.Conv2d(inputs, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, outputs, 1, bias=False), nn.BatchNorm2d(outputs)
        self.skip = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.skip = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + self.skip(x))


class ImageNetResNet(nn.Module):
    """torchvision's ResNet-18 or ResNet-50 layout for 224x224 images, in plain torch (torchvision may not import).

    The same convolutions, parameter count and stage names (``layer1`` to ``layer4``) as torchvision's models.
    """

    def __init__(self, depth: int = 50, num_classes: int = 1000) -> None:
        super().__init__()
        if depth not in (18, 50):
            raise ValueError(f"Expected depth 18 or 50, got {depth}.")
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inputs, stages = 64, []
        for stage, width in enumerate([64, 128, 256, 512]):
            blocks = []
            for block in range((2, 2, 2, 2)[stage] if depth == 18 else (3, 4, 6, 3)[stage]):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(BasicBlock(inputs, width, stride) if depth == 18 else Bottleneck(inputs, width, stride))
                inputs = width if depth == 18 else 4 * width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(inputs, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def add_device_arguments(parser: argparse.ArgumentParser, autocast: bool = True) -> None:
    """``--device`` (``cpu``, ``cuda``, ``cuda:1``) and, if told, ``--autocast`` (``bf16``: floor and measurement)."""
    parser.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:1, ...")
    if autocast:
        parser.add_argument(
            "--autocast", choices=["off", "bf16"], default="off", help="run every forward pass under bf16 autocast"
        )


def add_accelerator_path_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``: where to run; without it, the accelerators' path emulated on the CPU."""
    parser.add_argument("--device", default=None, help="run on this device (default: emulate an accelerator on CPU)")


def accelerator_path_device(name: str | None) -> torch.device:
    """The device called ``name``; without one, the CPU on the accelerators' path (no host branches, their blocks)."""
    if name is None:
        _sync.HOST_BRANCH_DEVICES = frozenset()
    return torch.device(name or "cpu")


def forward_context(device: torch.device, autocast: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context every timed forward pass runs in (the floor's and the measurement's alike)."""
    if autocast == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def device_name(device: torch.device) -> str:
    """The processor or the card, for a table's heading."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def synchronize(device: torch.device | None) -> None:
    """Wait for the device's queued work, so that wall time covers it."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def orbit_forwards(model: nn.Module, inputs: Tensor, group: Any, chunk: int) -> None:
    """Each chunk's orbit built and run forward under ``torch.no_grad()``, nothing kept.

    The least any measurement must do: ``chunk`` inputs per pass (transformed copies included), as the probe chunks.
    """
    per_chunk = max(1, chunk // len(group))
    with torch.no_grad():
        for start in range(0, len(inputs), per_chunk):
            model(group.orbit(inputs[start : start + per_chunk]).flatten(0, 1))


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1, device: torch.device | None = None) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (the device's queue drained)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_seconds(
    fns: list[Callable[[], Any]], repeats: int, warmup: int = 1, device: torch.device | None = None
) -> list[list[float]]:
    """Wall times of each ``fn`` in round-robin rounds: ``times[round][i]`` for ``fns[i]``.

    Ratios taken within a round cancel the slow drift of a shared machine's speed; take their median.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    rounds = []
    for _ in range(repeats):
        times = []
        for fn in fns:
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - start)
        rounds.append(times)
    return rounds


def cuda_peak_mib(fn: Callable[[], Any], device: torch.device) -> float:
    """MiB of CUDA memory ``fn()`` allocated at its peak, above what was allocated before it."""
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_worker(task: Callable[[], Callable[[], Any]], queue: Any) -> None:
    run = task()  # set-up (model, data) before the baseline
    try:
        with open("/proc/self/clear_refs", "w") as clear:  # reset the peak (VmHWM) to the current resident size
            clear.write("5")
        baseline = _status_kib("VmRSS")
    except OSError:  # not Linux, or not allowed: the peak since start-up is the best there is
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    try:
        peak = _status_kib("VmHWM")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((elapsed, (peak - baseline) / 1024))


def peak_memory_mib(task: Callable[[], Callable[[], Any]]) -> tuple[float, float]:
    """Run ``task()()`` in a fresh process: (seconds, MiB of peak resident memory above the memory after set-up).

    Linux only: the peak (``VmHWM``) is reset through ``/proc/self/clear_refs`` once the set-up is done.

    ``task`` builds the model and data and returns the callable to measure; it must be a module-level function
    (it is pickled to the child).
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_worker, args=(task, queue))
    process.start()
    while True:  # poll: a child that raised or was killed (out of memory) never puts its result
        alive = process.is_alive()  # read before waiting: a child that reported and ended is still read below
        try:
            result = queue.get(timeout=1.0)
            break
        except queue_module.Empty:
            if not alive:
                raise RuntimeError(
                    f"The peak-memory process ended with exit code {process.exitcode} before reporting (it raised, "
                    "or was killed: a negative code is the signal, -9 often the out-of-memory killer)."
                ) from None
    process.join()
    return result


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table, columns padded to their widest cell."""
    cells = [headers] + [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
