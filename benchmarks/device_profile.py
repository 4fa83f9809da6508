"""Where a probe pass spends its time on a device: the host issuing operations, or the device running kernels.

On a GPU each operation is a kernel launch the host issues in microseconds; when a pass issues many small ones, the
device waits for the host and the pass costs more than its kernels take. This script takes issue 11's small CNN
(8192 inputs of 1x32x32, its two first ReLUs and the output, C4, the probe at its default chunk size with one
normalised G-EED metric per layer, as ``full_size.py``) and the floor (the same orbit forward passes under
``torch.inference_mode()``), and prints for each: the time of a pass (median of ``--repeats``, the device's queue
drained), the operations it issues (ATen operations that compute or copy, as ``kernel_counts.py`` counts them), and
on a GPU the time its kernels took (``torch.profiler``) and the device's busy fraction (kernel time over the pass's
time: near 1, the kernels bound the pass; well below 1, the host issuing them does, and fewer operations would
help). Then the probe pass's kernels with the most device time and operations with the most host time.

    python benchmarks/device_profile.py [--quick] [--device cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from kernel_counts import KernelCounter
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from lightning_invariance import InvarianceDeviation, Probe
from lightning_invariance.groups import CyclicRotation

from _common import add_device_arguments, device_name, median_seconds, small_cnn, synchronize, table

GROUP = CyclicRotation(4)
LAYERS = ["1", "3", "output"]


def _passes(model: torch.nn.Module, inputs: torch.Tensor) -> dict[str, Callable[[], None]]:
    probe = Probe(model, GROUP, layers=LAYERS)
    chunk = probe.samples_per_chunk(inputs.device)

    def floor() -> None:
        with torch.inference_mode():
            for start in range(0, len(inputs), chunk):
                model(GROUP.orbit(inputs[start : start + chunk]).flatten(0, 1))

    def measure() -> None:
        metrics = {layer: InvarianceDeviation(GROUP, normalize=True).to(inputs.device) for layer in LAYERS}
        probe.update(inputs, metrics)
        for metric in metrics.values():
            metric.compute()

    return {"floor": floor, "probe, layers": measure}


def _device_events(profiled: profile) -> dict[str, list[float]]:
    """Microseconds of each kernel (and copy) the device ran, by name: the profile's device events, each once."""
    durations: dict[str, list[float]] = {}
    for event in profiled.events():
        if event.device_type == DeviceType.CUDA:
            durations.setdefault(event.name, []).append(event.time_range.elapsed_us())
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few inputs, to check the script runs")
    parser.add_argument("--repeats", type=int, default=5)
    add_device_arguments(parser, autocast=False)
    args = parser.parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    torch.manual_seed(0)
    num_inputs, repeats = (64, 1) if args.quick else (8192, args.repeats)
    model, inputs = small_cnn().eval().to(device), torch.randn(num_inputs, 1, 32, 32, device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    rows, host, device_time = [], {}, {}
    for name, fn in _passes(model, inputs).items():
        seconds = median_seconds(fn, repeats, device=device)  # after a warm-up: kernels chosen, masks built
        with KernelCounter() as counter:
            fn()
        operations = sum(counter.counts.values())
        with profile(activities=activities) as profiled:
            fn()
            synchronize(device)
        host[name], device_time[name] = profiled.key_averages(), _device_events(profiled)
        kernel_ms = sum(sum(durations) for durations in device_time[name].values()) / 1e3
        busy = f"{kernel_ms / (seconds * 1e3):.2f}" if on_gpu else "-"
        rows.append([
            name, f"{seconds * 1e3:.1f}", operations, f"{seconds * 1e6 / operations:.1f}",
            f"{kernel_ms:.1f}" if on_gpu else "-", busy,
        ])  # fmt: skip
    print(
        f"A pass of the small CNN on {num_inputs} inputs of 1x32x32, C4, layers {LAYERS} ({device_name(device)}, "
        f"torch {torch.__version__}; pass times: medians of {repeats}; the probe's pass makes, updates and computes "
        "its metrics)"
    )
    headers = ["pass", "ms", "operations", "us per operation", "kernel ms", "device busy"]
    print(table(headers, rows))
    if on_gpu:
        kernels = sorted(device_time["probe, layers"].items(), key=lambda item: -sum(item[1]))[:12]
        print("\nThe probe pass's kernels with the most device time")
        print(table(["kernel", "calls", "device ms"], [[k[:60], len(d), f"{sum(d) / 1e3:.2f}"] for k, d in kernels]))
    busiest = sorted(host["probe, layers"], key=lambda event: -event.self_cpu_time_total)[:12]
    print("\nThe probe pass's operations with the most host time")
    top = [[event.key[:60], event.count, f"{event.self_cpu_time_total / 1e3:.2f}"] for event in busiest]
    print(table(["operation", "calls", "host ms"], top))


if __name__ == "__main__":
    main()
