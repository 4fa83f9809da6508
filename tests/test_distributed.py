"""Two CPU processes (gloo), each updating half of the data, must give the one-process answer."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_invariance.metrics import (
    InvarianceDeviation,
    LieDerivative,
    LinearEquivariance,
    NormalizedVariance,
    PredictionConsistency,
)

NUM_ELEMENTS = 4


def _batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(123)
    return [torch.randn(NUM_ELEMENTS, n, 5, generator=generator, dtype=torch.float64) for n in (6, 3, 7, 1, 4, 5)]


def _metrics() -> dict:
    return {
        "raw": InvarianceDeviation(NUM_ELEMENTS),
        "normalized": InvarianceDeviation(NUM_ELEMENTS, distance="cosine", reference="identity", normalize=True),
        "consistency": PredictionConsistency(NUM_ELEMENTS),
    }


def _results(metrics: dict) -> dict:
    out = {name: metric.compute() for name, metric in metrics.items()}
    summary = metrics["raw"].compute_summary()
    out.update({f"summary_{key}": value for key, value in summary.items()})
    return out


def _worker(rank: int, world_size: int, port: int, path: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        metrics = _metrics()
        for batch in _batches()[rank::world_size]:
            for metric in metrics.values():
                metric.update(batch)
        results = _results(metrics)
        torch.save(results, f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_gloo_processes_equal_one(tmp_path):
    path = str(tmp_path / "results")
    mp.spawn(_worker, args=(2, _free_port(), path), nprocs=2, join=True)
    single = _metrics()
    for batch in _batches():
        for metric in single.values():
            metric.update(batch)
    expected = _results(single)
    for rank in range(2):
        got = torch.load(f"{path}.{rank}")
        for key, value in expected.items():
            assert torch.allclose(got[key], value, rtol=1e-12, atol=1e-15), (rank, key, got[key], value)


# ---- the measures beyond G-EED: Chan-merged variances, fitted linear maps, Lie derivatives, per-class and samples


def _new_measures() -> dict:
    return {
        "variance": NormalizedVariance(),
        "linear": LinearEquivariance(NUM_ELEMENTS, ridge=0.01),
        "lie": LieDerivative(),
        "classes": InvarianceDeviation(NUM_ELEMENTS, num_classes=3, keep_sample_deviations=True),
    }


def _labels(batch: torch.Tensor) -> torch.Tensor:
    return (batch[0, :, 0] > 0).long() + (batch[0, :, 1] > 0).long()


def _new_worker(rank: int, world_size: int, port: int, path: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        batches = _batches()
        mine = batches[rank : len(batches) // 2 : world_size] + batches[len(batches) // 2 + rank :: world_size]
        # rank r fits on its share of the first half and evaluates its share of the second half
        measures = _new_measures()
        half = len(batches[rank : len(batches) // 2 : world_size])
        results = _feed_split(measures, mine, half)
        torch.save(results, f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def _feed_split(measures: dict, batches: list[torch.Tensor], num_fit: int) -> dict:
    for i, batch in enumerate(batches):
        measures["variance"].update(batch + 3.0)
        measures["lie"].update(batch[0], batch[1])
        measures["classes"].update(batch, _labels(batch))
        if i < num_fit:
            measures["linear"].update(batch)
    measures["linear"].fit()
    for batch in batches[num_fit:]:
        measures["linear"].update(batch)
    out = {
        f"{name}_{key}": value for name, metric in measures.items() for key, value in metric.compute_summary().items()
    }
    out["linear_maps"] = measures["linear"].maps
    return out


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_new_measures_in_two_gloo_processes_equal_one(tmp_path):
    path = str(tmp_path / "results")
    mp.spawn(_new_worker, args=(2, _free_port(), path), nprocs=2, join=True)
    expected = _feed_split(_new_measures(), _batches(), len(_batches()) // 2)
    for rank in range(2):
        got = torch.load(f"{path}.{rank}")
        assert set(got) == set(expected)
        for key, value in expected.items():
            if key == "classes_sample_deviations":  # gathered in rank order, not batch order
                value, got[key] = value.sort().values, got[key].sort().values
            assert torch.allclose(got[key], value, rtol=1e-10, atol=1e-12, equal_nan=True), (rank, key)
