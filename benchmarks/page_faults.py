"""Page faults of the probe on the CPU, with glibc's malloc settled by the probe (the default) and left as it was.

glibc gives the top of its heap back to the system when more than twice its (dynamic) mmap threshold lies free
there, and a chunk's temporaries then fault every page in again (see ``lightning_invariance/_host_memory.py``).
The probe settles the thresholds once per process; this script measures the small CNN of ``probe_overhead.py``
(4 layers) in fresh processes with and without that, alternating the processes, and prints the probe over its bare
forward passes and the page faults of one probe pass (``ru_minflt``), medians over the processes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from probe_overhead import floor_run, probe_run

from lightning_invariance.groups import CyclicRotation, Dihedral

from _common import device_name, small_cnn, table

LAYERS, CHUNK = ["output", "1", "3", "6"], 128  # the layers of probe_overhead.py with L = 4, the CPU chunk


def _faults_and_seconds(fn: Callable[[], Any]) -> tuple[int, float]:
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, time.perf_counter() - start


def _worker(settled: bool, size: int, num_inputs: int, repeats: int) -> tuple[float, float, float]:
    """In a fresh process: the median probe / floor ratio, and the median page faults of a probe and a floor pass."""
    if not settled:
        from lightning_invariance import _host_memory

        _host_memory._settled = True  # as if settled already: the thresholds stay where this process has them
    torch.manual_seed(0)
    group = CyclicRotation(4) if size == 4 else Dihedral(4)
    model, inputs = small_cnn().eval(), torch.randn(num_inputs, 1, 16, 16)
    floor = floor_run(model, inputs, group, CHUNK, contextlib.nullcontext)  # as probe_overhead.py measures them
    measure = probe_run(model, inputs, group, LAYERS, CHUNK, contextlib.nullcontext)
    floor(), measure()  # warm-up
    rounds = [(_faults_and_seconds(floor), _faults_and_seconds(measure)) for _ in range(repeats)]
    ratio = statistics.median(probe[1] / bare[1] for bare, probe in rounds)
    return ratio, statistics.median(probe[0] for _, probe in rounds), statistics.median(bare[0] for bare, _ in rounds)


def _in_fresh_process(*args: Any) -> tuple[float, float, float]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_worker, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per case, alternated")
    args = parser.parse_args()
    num_inputs, repeats, processes = (64, 1, 1) if args.quick else (2048, 5, args.processes)
    rows = []
    for size in (4,) if args.quick else (4, 8):
        results: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
        for _ in range(processes):
            for settled in (False, True):
                results[settled].append(_in_fresh_process(settled, size, num_inputs, repeats))
        for settled in (False, True):
            ratio, probe_faults, floor_faults = (statistics.median(r[i] for r in results[settled]) for i in range(3))
            name = "settled by the probe" if settled else "as the process had it"
            rows.append([name, size, ratio, int(probe_faults), int(floor_faults)])
    print(
        f"Small CNN, {num_inputs} inputs of 1x16x16, layers {LAYERS}, chunks of 128 "
        f"({device_name(torch.device('cpu'))}, torch {torch.__version__}); medians of {repeats} rounds in each of "
        f"{processes} fresh processes per case"
    )
    headers = ["malloc thresholds", "|G|", "probe / floor", "page faults / probe pass", "page faults / floor pass"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
