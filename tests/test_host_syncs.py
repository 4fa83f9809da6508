"""Measuring adds no host-device synchronisation per chunk: the count does not grow with the number of chunks.

A GPU stalls at every ``.item()``, ``float(t)``, ``bool(t)`` or data-dependent shape (boolean indexing,
``nonzero``): the host waits for the queue to drain before it can issue the next kernel. The counter below sees them
on the CPU through a ``TorchFunctionMode``, so the test needs no GPU: if the count for 12 chunks equals the count for
2 chunks, the hot path does not synchronise per chunk. On the CPU the code may branch on the host (a sync is free
there); the tests take the accelerators' path by emptying ``HOST_BRANCH_DEVICES``, and check both paths agree.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torchmetrics import Metric

from lightning_invariance import InvarianceDeviation, LieProbe, Probe, _sync
from lightning_invariance.functional.distances import per_sample_distance
from lightning_invariance.groups import (
    ContinuousRotation,
    CyclicRotation,
    Euclidean3D,
    MatrixAction,
    Permutation,
    Rotation3D,
    Scaling,
    SpatialAction,
)
from lightning_invariance.metrics import (
    EquivarianceDeviation,
    LieDerivative,
    LinearMapFit,
    NormalizedVariance,
    PredictionConsistency,
)

SYNCING = {"__bool__", "__float__", "__int__", "__index__", "item", "tolist", "nonzero", "masked_select"}


class SyncCounter(TorchFunctionMode):
    """Counts the tensor operations that make the host wait for the device."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        boolean_index = name == "__getitem__" and _has_bool_tensor(args[1:])
        if name in SYNCING or boolean_index:
            self.calls.append("boolean index" if boolean_index else name)
        return func(*args, **(kwargs or {}))


def _has_bool_tensor(items) -> bool:
    for item in items:
        if isinstance(item, Tensor) and item.dtype == torch.bool:
            return True
        if isinstance(item, (tuple, list)) and _has_bool_tensor(item):
            return True
    return False


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))


def _metrics(kind: str, group) -> dict[str, Metric]:
    """Each metric at its defaults (normalised where it can be) on layers whose features suit it."""
    if kind == "equivariance":  # the first convolution's feature maps turn with the input
        return {"0": EquivarianceDeviation(SpatialAction(group), normalize=True)}
    if kind == "consistency":
        return {"output": PredictionConsistency(group)}
    if kind == "variance":
        return {"1": NormalizedVariance(), "output": NormalizedVariance("channel_variance")}
    layers = ["output"] if kind in ("kl", "discrete") else ["1", "output"]  # class scores for kl and discrete
    return {layer: InvarianceDeviation(group, distance=kind, normalize=True) for layer in layers}


def _syncs_while_measuring(num_chunks: int, kind: str) -> list[str]:
    group = CyclicRotation(4)
    metrics = _metrics(kind, group)
    probe = Probe(_model(), group, layers=list(metrics), chunk_size=4 * 8)  # 8 samples a chunk
    inputs = torch.randn(8 * num_chunks, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with SyncCounter() as counter:
        probe.update(inputs, metrics)
    return counter.calls


@pytest.mark.parametrize("kind", ["euclidean", "cosine", "kl", "discrete", "equivariance", "consistency", "variance"])
def test_measuring_does_not_synchronise_per_chunk(accelerator_path, kind) -> None:
    few, many = _syncs_while_measuring(2, kind), _syncs_while_measuring(12, kind)
    assert len(many) == len(few), f"{len(few)} syncs for 2 chunks, {len(many)} for 12: {many}"


def test_the_accelerator_path_gives_the_cpu_path_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows whose float32 norm overflows, underflows or is 0 are recomputed (CPU) or selected (accelerators) alike."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 6, 33, generator=generator), torch.randn(4, 6, 33, generator=generator)
    a[0, 1] *= 1e25  # overflows in float32 squares
    a[1, 2], b[1, 2] = a[1, 2] * 1e-25, b[1, 2] * 1e-25  # underflows
    b[2, 3] = a[2, 3]  # exactly 0
    on_host = per_sample_distance(a, b, "euclidean")
    monkeypatch.setattr(_sync, "HOST_BRANCH_DEVICES", frozenset())
    on_device = per_sample_distance(a, b, "euclidean")
    reference = torch.linalg.vector_norm(a.double() - b.double(), dim=-1)
    torch.testing.assert_close(on_device, on_host, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(on_host, reference, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("non_finite", ["nan", "error"])
@pytest.mark.parametrize(
    "scores",
    [("geed", "geed_normalized"), ("geed", "consistency", "normalized_variance"), ("geed", "linear_equivariance")],
    ids=["geed", "optional", "linear"],
)
def test_the_callbacks_layer_scores_do_not_synchronise_per_chunk(accelerator_path, scores, non_finite) -> None:
    """The callback's metrics take a chunk's features without a sync: G-EED, consistency, variances, fitted maps."""
    from lightning_invariance.callbacks._scores import LayerScores, ScoreOptions

    def syncs(num_chunks: int) -> list[str]:
        group = CyclicRotation(4)
        options = ScoreOptions(len(group), scores, "euclidean", "centroid", None, non_finite=non_finite)
        layer_scores = {layer: LayerScores.create(layer, options, torch.device("cpu")) for layer in ("1", "output")}
        probe = Probe(_model(), group, layers=list(layer_scores), chunk_size=4 * 8)
        inputs = torch.randn(8 * num_chunks, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        inputs[3] = float("nan")  # counted on the device, not read back
        calls = []
        for phase in ("fit", "held out"):  # the fitted maps' two phases (the others see both alike)
            with SyncCounter() as counter:
                probe.run(inputs, lambda name, features: layer_scores[name].update(features))
            calls += counter.calls
            if phase == "fit":
                for scores_of_layer in layer_scores.values():
                    scores_of_layer.fit_linear_maps()
        return calls

    assert syncs(12) == syncs(2) == []


def test_fitting_linear_maps_updates_without_a_sync(accelerator_path) -> None:
    """The fit sums stay decoded between updates, and samples with NaN/inf are left out of them on the device."""
    fit = LinearMapFit(4, nan_strategy="skip")
    orbit = CyclicRotation(4).orbit(torch.randn(6, 2, 4, 4, generator=torch.Generator().manual_seed(2)))
    fit.update(orbit)
    with_nan = orbit.clone()
    with_nan[2, 1] = float("nan")
    with SyncCounter() as counter:
        for _ in range(5):
            fit.update(with_nan)
    assert counter.calls == []
    summary = fit.compute_summary()
    assert (int(summary["fit_samples"]), int(summary["num_skipped"])) == (6 + 5 * 5, 5)


def test_the_lie_derivative_updates_without_a_sync(accelerator_path) -> None:
    features = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    features[0] = 0.0  # a zero representation is counted, not indexed away
    metric = LieDerivative(normalize=True)
    with SyncCounter() as counter:
        for _ in range(5):
            metric.update(features, torch.randn_like(features))
    assert counter.calls == []
    assert int(metric.compute_summary()["num_zero"]) == 5


def test_per_class_labels_are_checked_without_a_sync_and_refused_at_compute(accelerator_path) -> None:
    """On accelerators labels out of range are counted on the device; on the CPU they fail in update()."""
    orbit = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(5))
    metric = InvarianceDeviation(4, num_classes=3)
    with SyncCounter() as counter:
        metric.update(orbit, torch.tensor([0, 1, 2, 2, 1, 0]))
        metric.update(orbit, torch.tensor([0, 1, 2, 3, -1, 0]))
    assert counter.calls == []
    for compute in (metric.compute, metric.compute_summary):
        with pytest.raises(ValueError, match=r"2 of the labels given to update\(\) were outside \[0, 3\)"):
            compute()
    metric.reset()
    metric.update(orbit, torch.tensor([0, 1, 2, 2, 1, 0]))
    reference = InvarianceDeviation(4, num_classes=3)
    reference.update(orbit, torch.tensor([0, 1, 2, 2, 1, 0]))
    torch.testing.assert_close(metric.compute_summary()["per_class"], reference.compute_summary()["per_class"])


def test_per_class_labels_out_of_range_fail_in_update_on_the_cpu() -> None:
    with pytest.raises(ValueError, match=r"Expected `labels` in \[0, 3\).*\[-1, 3\]"):
        InvarianceDeviation(4, num_classes=3).update(torch.randn(4, 3, 2), torch.tensor([3, -1, 0]))


class _CopiesFromTheCpu(TorchFunctionMode):
    """Counts ``Tensor.to`` calls on CPU tensors (copies to another device make the host wait for it)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") == "to" and isinstance(args[0], Tensor) and args[0].device.type == "cpu":
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    ("group", "shape"),
    [
        (ContinuousRotation([30.0, -15.0]), (2, 1, 8, 8)),
        (Scaling([1.2]), (2, 1, 8, 8)),
        (CyclicRotation(8), (2, 1, 8, 8)),
        (Permutation(dim=1, num_elements=3), (2, 5)),
        (Rotation3D(4), (2, 5, 3)),
        (Euclidean3D(3), (2, 5, 3)),
    ],
    ids=repr,
)
def test_groups_copy_their_constants_to_a_device_once(group, shape) -> None:
    """Matrices and permutation tables go to the inputs' device once, not in every chunk ("meta" stands in for it)."""
    inputs = torch.randn(shape).to("meta")
    group.orbit(inputs)
    with _CopiesFromTheCpu() as copies:
        for _ in range(3):
            group.orbit(inputs)
    assert copies.count == 0


def test_a_matrix_action_copies_its_matrices_to_a_device_once() -> None:
    group = Rotation3D(4)
    action = MatrixAction(group, group.matrices())
    features = torch.randn(2, 5, 3).to("meta")
    action.act(features, 1)
    with _CopiesFromTheCpu() as copies:
        for k in range(4):
            action.act(features, k)
    assert copies.count == 0


def test_the_fitted_maps_copy_their_projection_to_a_device_once() -> None:
    """Wide pooled features are projected by a matrix drawn on the CPU: copied to the device once, not per update."""
    fit = LinearMapFit(4, max_features=8).to("meta")
    orbit = torch.randn(4, 6, 3, 8, 8).to("meta")  # 3 x 2 x 2 = 12 pooled values, projected to 8
    fit.update(orbit)
    with _CopiesFromTheCpu() as copies:
        for _ in range(3):
            fit.update(orbit)
    assert copies.count == 0


@pytest.mark.parametrize(
    ("build", "inputs"),
    [
        (lambda: InvarianceDeviation(4, normalize=True), lambda n: (torch.randn(4, n, 3, 8, 8),)),
        (lambda: InvarianceDeviation(4, distance="cosine"), lambda n: (torch.randn(4, n, 16),)),
        (lambda: InvarianceDeviation(4, distance="kl"), lambda n: (torch.randn(4, n, 10),)),
        (lambda: InvarianceDeviation(4, distance="discrete"), lambda n: (torch.randn(4, n, 10),)),
        (lambda: InvarianceDeviation(4, num_classes=3), lambda n: (torch.randn(4, n, 16), torch.randint(3, (n,)))),
        (
            lambda: EquivarianceDeviation(SpatialAction(ContinuousRotation([30.0, 60.0, 90.0])), border_mask=True),
            lambda n: (torch.randn(4, n, 3, 8, 8),),
        ),
        (NormalizedVariance, lambda n: (torch.randn(4, n, 16),)),
        (lambda: LinearMapFit(4, max_features=8), lambda n: (torch.randn(4, n, 3, 8, 8),)),
        (lambda: PredictionConsistency(4), lambda n: (torch.randn(4, n, 10),)),
        (lambda: LieDerivative(normalize=True), lambda n: (torch.randn(n, 16), torch.randn(n, 16))),
    ],
    ids=[
        "geed",
        "cosine",
        "kl",
        "discrete",
        "per-class",
        "masked equivariance",
        "variance",
        "fit",
        "consistency",
        "lie",
    ],
)
def test_updates_run_on_a_device_whose_values_cannot_be_read(meta_device, build, inputs) -> None:
    """Two updates of 300 samples each, so the normaliser's queue is paired (its batched pass and masks run too)."""
    metric = build().to("meta")
    for _ in range(2):
        metric.update(*[tensor.to("meta") for tensor in inputs(300)])


def test_the_probe_and_the_callbacks_scores_run_on_a_device_whose_values_cannot_be_read(meta_device) -> None:
    from lightning_invariance.callbacks._scores import LayerScores, ScoreOptions

    scores = ("geed", "geed_normalized", "consistency", "normalized_variance", "linear_equivariance")
    options = ScoreOptions(4, scores, "euclidean", "centroid", None, non_finite="nan")
    layer_scores = {layer: LayerScores.create(layer, options, torch.device("meta")) for layer in ("1", "output")}
    probe = Probe(_model().to("meta"), CyclicRotation(4), layers=list(layer_scores), chunk_size=4 * 64)
    probe.run(torch.randn(300, 1, 8, 8).to("meta"), lambda name, features: layer_scores[name].update(features))


def test_the_lie_probe_runs_on_a_device_whose_values_cannot_be_read(meta_device) -> None:
    layers = ["1", "output"]
    metrics = {layer: LieDerivative(normalize=True).to("meta") for layer in layers}
    LieProbe(_model().to("meta"), "rotation", layers=layers).update(torch.randn(40, 1, 8, 8).to("meta"), metrics)
