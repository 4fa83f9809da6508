"""One TorchMetrics contract, checked on every Metric class of the package (in the spirit of ``MetricTester``).

For each class: forward returns the batch value and accumulates; k updates + compute equal one update on the
concatenation and the functional twin; clone, pickle, state_dict/load_state_dict, reset, merge_state, ``.to``,
MetricCollection membership; and 2 gloo processes holding uneven consecutive shards equal one process.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics import Metric, MetricCollection

from lightning_invariance.functional import (
    equivariance_deviation,
    invariance_deviation,
    lie_derivative,
    linear_equivariance_deviation,
    normalized_variance,
    prediction_consistency,
)
from lightning_invariance.functional.linear import _linear_fit_update, fit_linear_maps, pooled_orbit
from lightning_invariance.groups import CyclicRotation, SpatialAction
from lightning_invariance.metrics import (
    EquivarianceDeviation,
    InvarianceDeviation,
    LieDerivative,
    LinearEquivariance,
    LinearMapFit,
    NormalizedVariance,
    PredictionConsistency,
)

G = 4
SIZES = (70, 3, 9, 1, 40, 5)  # uneven, one batch wider than the normaliser's window, one of a single sample


def _orbits(shape: tuple[int, ...], seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(G, n, *shape, generator=generator, dtype=torch.float64),) for n in SIZES]


def _maps_orbits() -> list[tuple[torch.Tensor, ...]]:
    group = CyclicRotation(4)
    generator = torch.Generator().manual_seed(1)
    return [(group.orbit(torch.randn(n, 2, 5, 5, generator=generator, dtype=torch.float64)) * 1.3,) for n in SIZES]


def _lie_batches() -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(2)
    batches = [(torch.randn(n, 6, generator=generator), torch.randn(n, 6, generator=generator)) for n in SIZES]
    return [(f.double(), d.double()) for f, d in batches]


def _fit_maps() -> torch.Tensor:
    fit = torch.cat([batch[0] for batch in _orbits((6,), seed=7)], dim=1)
    pooled = pooled_orbit(fit)
    return fit_linear_maps(*_linear_fit_update(pooled), pooled.shape[1])


def _cat(batches: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    dim = 0 if batches[0][0].ndim == 2 and len(batches[0]) == 2 else 1  # LieDerivative batches are (N, ...)
    return tuple(torch.cat([batch[i] for batch in batches], dim=dim) for i in range(len(batches[0])))


@dataclass
class Case:
    name: str
    make: Callable[[], Metric]
    batches: Callable[[], list[tuple[torch.Tensor, ...]]]
    twin: Callable[..., torch.Tensor]


CASES = [
    Case(
        "invariance_euclidean",
        lambda: InvarianceDeviation(G, normalize=True),
        lambda: _orbits((3, 2)),
        lambda orbit: invariance_deviation(orbit, normalize=True),
    ),
    Case(
        "invariance_kl_identity",
        lambda: InvarianceDeviation(CyclicRotation(4), distance="kl", reference="identity", normalize=True),
        lambda: _orbits((5,)),
        lambda orbit: invariance_deviation(orbit, distance="kl", reference="identity", normalize=True),
    ),
    Case(
        "equivariance_spatial",
        lambda: EquivarianceDeviation(SpatialAction(CyclicRotation(4)), distance="cosine", normalize=True),
        _maps_orbits,
        lambda orbit: equivariance_deviation(orbit, SpatialAction(CyclicRotation(4)), "cosine", normalize=True),
    ),
    Case(
        "consistency",
        lambda: PredictionConsistency(G),
        lambda: _orbits((3,)),
        prediction_consistency,
    ),
    Case(
        "normalized_variance",
        NormalizedVariance,
        lambda: _orbits((2, 3, 3)),
        lambda orbit: normalized_variance(orbit)["normalized_variance"],
    ),
    Case(
        "normalized_variance_channels",
        lambda: NormalizedVariance(definition="channel_variance"),
        lambda: _orbits((2, 3, 3)),
        lambda orbit: normalized_variance(orbit, definition="channel_variance")["normalized_variance"],
    ),
    Case(
        "linear_map_fit",
        lambda: LinearMapFit(G),
        lambda: _orbits((6,), seed=7),
        lambda orbit: fit_linear_maps(*_linear_fit_update(pooled_orbit(orbit)), orbit.shape[1]),
    ),
    Case(
        "linear_equivariance",
        lambda: LinearEquivariance(_fit_maps(), normalize=True),
        lambda: _orbits((6,)),
        lambda orbit: linear_equivariance_deviation(
            torch.cat([batch[0] for batch in _orbits((6,), seed=7)], dim=1), orbit, normalize=True
        ),
    ),
    Case(
        "lie_derivative",
        lambda: LieDerivative(normalize=True),
        _lie_batches,
        lambda features, derivatives: lie_derivative(features, derivatives, normalize=True),
    ),
]


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(torch.as_tensor(a).double(), torch.as_tensor(b).double(), rtol=1e-9, atol=1e-12)


def _ids(cases: list[Case]) -> list[str]:
    return [case.name for case in cases]


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_updates_equal_one_update_and_the_functional_twin(case: Case) -> None:
    batches = case.batches()
    metric, whole = case.make(), case.make()
    for batch in batches:
        metric.update(*batch)
    whole.update(*_cat(batches))
    _close(metric.compute(), whole.compute())
    _close(metric.compute(), case.twin(*_cat(batches)))


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_forward_returns_the_batch_value_and_accumulates(case: Case) -> None:
    batches = [batch for batch in case.batches() if batch[0].shape[1 if len(batch) == 1 else 0] > 1]
    metric = case.make()
    for batch in batches:
        _close(metric(*batch), case.twin(*batch))
    _close(metric.compute(), case.twin(*_cat(batches)))


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_clone_pickle_state_dict_and_to(case: Case) -> None:
    batches = case.batches()
    metric = case.make()
    for batch in batches[:3]:
        metric.update(*batch)
    expected = metric.compute()
    clone = metric.clone()
    _close(clone.compute(), expected)
    clone.update(*batches[3])  # the clone is independent
    _close(metric.compute(), expected)
    _close(pickle.loads(pickle.dumps(metric)).compute(), expected)
    _close(copy.deepcopy(metric).compute(), expected)
    metric.persistent(True)
    fresh = case.make()
    fresh.load_state_dict(metric.state_dict())
    _close(fresh.compute(), expected)
    _close(metric.to(torch.float64).compute(), expected)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_reset_forgets_everything(case: Case) -> None:
    batches = case.batches()
    metric = case.make()
    metric.update(*batches[0])
    metric.reset()
    for batch in batches[1:3]:
        metric.update(*batch)
    _close(metric.compute(), case.twin(*_cat(batches[1:3])))


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_merge_state_counts_the_incoming_samples_first(case: Case) -> None:
    batches = case.batches()
    first, second = case.make(), case.make()
    for batch in batches[:2]:
        first.update(*batch)
    for batch in batches[2:]:
        second.update(*batch)
    second.merge_state(first)
    _close(second.compute(), case.twin(*_cat(batches)))


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_member_of_a_metric_collection(case: Case) -> None:
    batches = case.batches()
    collection = MetricCollection({"m": case.make()})
    for batch in batches:
        collection.update(*batch)
    _close(collection.compute()["m"], case.twin(*_cat(batches)))


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_compute_before_update_warns_or_raises_never_silent(case: Case) -> None:
    metric = case.make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = metric.compute()
        except ValueError:
            return
    assert value.isnan().all()
    assert caught, "a NaN must come with a warning"


# -- two processes --------------------------------------------------------------------------------------------


def _shard(batches: list, rank: int) -> list:
    return batches[:2] if rank == 0 else batches[2:]  # consecutive and uneven: 73 samples, then 55


def _worker(rank: int, world_size: int, port: int, path: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        results = {}
        for case in CASES:
            metric = case.make()
            for batch in _shard(case.batches(), rank):
                metric.update(*batch)
            results[case.name] = metric.compute()
            summary = getattr(metric, "compute_summary", None)
            if summary is not None and case.name != "linear_map_fit":
                results[f"{case.name}/summary"] = {
                    key: value for key, value in summary().items() if value.ndim <= 1 and key != "sample_deviations"
                }
            empty = case.make()  # a process without data must not block or change anything
            if rank == 0:
                for batch in case.batches():
                    empty.update(*batch)
            if case.name != "linear_map_fit":
                results[f"{case.name}/one_process_empty"] = empty.compute()
        torch.save(results, f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_with_uneven_shards_equal_one_process(tmp_path) -> None:
    path = str(tmp_path / "results")
    mp.spawn(_worker, args=(2, _free_port(), path), nprocs=2, join=True)
    ranks = [torch.load(f"{path}.{rank}") for rank in range(2)]
    for case in CASES:
        metric = case.make()
        for batch in case.batches():
            metric.update(*batch)
        for results in ranks:
            _close(results[case.name], metric.compute())
            if case.name != "linear_map_fit":
                _close(results[f"{case.name}/one_process_empty"], metric.compute())
            for key, value in results.get(f"{case.name}/summary", {}).items():
                expected = metric.compute_summary()[key]
                if math.isnan(float(expected.flatten()[0])) if expected.numel() else False:
                    continue
                _close(value, expected)
