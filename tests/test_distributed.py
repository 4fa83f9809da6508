"""Two CPU processes (gloo), each updating half of the data, must give the one-process answer."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_invariance.metrics import InvarianceDeviation, PredictionConsistency

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
