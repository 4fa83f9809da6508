"""Scaling: time and peak memory as the number of measured inputs grows, and the normaliser's cost per batch size.

Inputs are synthetic and generated batch by batch (nothing is held but the current batch), measured with
``measure()`` over a small CNN and C4. Time should grow linearly with N, peak memory stay flat (it is bounded by
``chunk_size``). Each size runs in a fresh process so its peak resident memory is its own.

    python benchmarks/scaling.py [--quick]
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator

import torch

from lightning_invariance import InvarianceDeviation, measure
from lightning_invariance.functional.normalizer import window_pair_sums
from lightning_invariance.groups import CyclicRotation

from _common import median_seconds, peak_memory_mib, small_cnn, table

BATCH = 256


def synthetic_batches(n: int) -> Iterator[torch.Tensor]:
    """``n`` 8x8 images in batches of ``BATCH``, each batch drawn from its own seeded generator."""
    for index, start in enumerate(range(0, n, BATCH)):
        generator = torch.Generator().manual_seed(index)
        yield torch.randn(min(BATCH, n - start), 1, 8, 8, generator=generator)


def _setup(n: int):
    torch.manual_seed(0)
    model = small_cnn().eval()
    metric = InvarianceDeviation(4, normalize=True)
    return functools.partial(
        measure, model, CyclicRotation(4), _Batches(n), metric, layers=["output", "3"], progress=False
    )


class _Batches:
    """Re-iterable synthetic data (a fresh generator each pass)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[torch.Tensor]:
        return synthetic_batches(self.n)

    def __len__(self) -> int:
        return -(-self.n // BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    args = parser.parse_args()
    sizes = [256, 1024] if args.quick else [1_000, 10_000, 100_000]
    rows = []
    for n in sizes:
        seconds, mib = peak_memory_mib(functools.partial(_setup, n))
        rows.append([n, seconds, seconds / n * 1e6, mib])
    base = rows[0]
    for row in rows:
        row.append(row[1] / base[1] / (row[0] / base[0]))
    print(f"Small CNN, C4, layers output + conv2, batches of {BATCH} 8x8 inputs ({torch.get_num_threads()} threads)")
    print(table(["N", "seconds", "us / input", "peak MiB", "time / linear"], rows))

    print()
    print("Normaliser (each sample against the 63 before it, float32 Gram blocks, float64 sums), D = 2048; median of 5")
    rows = []
    dim = 2048
    for batch in [16, 64, 256, 1024, 4096] if not args.quick else [16, 64]:
        features = torch.randn(batch, dim)
        seconds = median_seconds(lambda f=features: window_pair_sums(f, "euclidean"), 5)
        _, pairs = window_pair_sums(features, "euclidean")
        rows.append([batch, pairs, seconds * 1e3, seconds / batch * 1e6])
    print(table(["batch N", "ordered pairs", "ms", "us / sample"], rows))


if __name__ == "__main__":
    main()
