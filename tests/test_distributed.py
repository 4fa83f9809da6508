"""Two CPU processes (gloo), each updating a consecutive share of the data, must give the one-process answer.

Shares are consecutive (rank 0 first): the normaliser pairs samples by their order, and a sync joins the processes'
samples in rank order, so this is the order one process would see.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_invariance.metrics import (
    InvarianceDeviation,
    LieDerivative,
    LinearMapFit,
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
        for batch in _share(_batches(), rank, world_size):
            for metric in metrics.values():
                metric.update(batch)
        results = _results(metrics)
        torch.save(results, f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def _share(batches: list, rank: int, world_size: int) -> list:
    """Rank ``rank``'s consecutive share: uneven on purpose (rank 0 gets one batch fewer)."""
    assert world_size == 2
    cut = len(batches) // 2 - 1 if len(batches) > 2 else 1
    return batches[:cut] if rank == 0 else batches[cut:]


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
        "lie": LieDerivative(normalize=True),
        "classes": InvarianceDeviation(NUM_ELEMENTS, num_classes=3, keep_sample_deviations=True),
    }


def _labels(batch: torch.Tensor) -> torch.Tensor:
    return (batch[0, :, 0] > 0).long() + (batch[0, :, 1] > 0).long()


def _new_worker(rank: int, world_size: int, port: int, path: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        batches = _batches()
        # rank r fits on its share of the first half and evaluates its share of the second half
        fit, held_out = batches[: len(batches) // 2], batches[len(batches) // 2 :]
        results = _feed_split(_new_measures(), _share(fit, rank, world_size), _share(held_out, rank, world_size))
        torch.save(results, f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def _feed_split(
    measures: dict, fit: list[torch.Tensor], held_out: list[torch.Tensor], stream: list[torch.Tensor] | None = None
) -> dict:
    """Fit the maps on ``fit``, measure them on ``held_out``; the other measures see ``stream`` (both, in order)."""
    fitting = LinearMapFit(NUM_ELEMENTS, ridge=0.01)
    for batch in fit + held_out if stream is None else stream:
        measures["variance"].update(batch + 3.0)
        measures["lie"].update(batch[0], batch[1])
        measures["classes"].update(batch, _labels(batch))
    for batch in fit:
        fitting.update(batch)
    linear = fitting.held_out_metric()
    for batch in held_out:
        linear.update(batch)
    measures["linear"] = linear
    out = {
        f"{name}_{key}": value for name, metric in measures.items() for key, value in metric.compute_summary().items()
    }
    out["linear_maps"] = linear.maps
    return out


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_new_measures_in_two_gloo_processes_equal_one(tmp_path):
    path = str(tmp_path / "results")
    mp.spawn(_new_worker, args=(2, _free_port(), path), nprocs=2, join=True)
    batches = _batches()
    fit, held_out = batches[: len(batches) // 2], batches[len(batches) // 2 :]
    # one process sees rank 0's share of both halves, then rank 1's
    order = _share(fit, 0, 2) + _share(held_out, 0, 2), _share(fit, 1, 2) + _share(held_out, 1, 2)
    expected = _feed_split(_new_measures(), fit, held_out, order[0] + order[1])
    for rank in range(2):
        got = torch.load(f"{path}.{rank}")
        assert set(got) == set(expected)
        for key, value in expected.items():
            if key == "classes_sample_deviations":  # gathered in rank order, not batch order
                value, got[key] = value.sort().values, got[key].sort().values
            assert torch.allclose(got[key], value, rtol=1e-10, atol=1e-12, equal_nan=True), (rank, key)
