"""The same right number whatever the chunking, batch split, precision, autocast, compilation or RNG use.

Each test here failed before the fix it guards (issue 9): the number moved or came back NaN/0 without an error.
"""

from __future__ import annotations

import math
import random
import warnings

import numpy
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from lightning_invariance import Probe
from lightning_invariance.functional import invariance_deviation, normalized_variance
from lightning_invariance.groups import ContinuousRotation, CyclicRotation, SpatialAction
from lightning_invariance.metrics import (
    EquivarianceDeviation,
    InvarianceDeviation,
    LieDerivative,
    LinearMapFit,
    NormalizedVariance,
    PredictionConsistency,
)

from references import reference_geed


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 6), nn.ReLU(), nn.Linear(6, 3)
    )


def _normalized(model: nn.Module, group, x: torch.Tensor, chunk_size: int | None, layers=("1", "output")) -> dict:
    probe = Probe(model, group, list(layers), chunk_size=chunk_size)
    metrics = {layer: InvarianceDeviation(len(group)) for layer in layers}
    probe.update(x, metrics)
    return {layer: metric.compute_summary() for layer, metric in metrics.items()}


def _reference_pair_mean(rows: torch.Tensor, window: int) -> float:
    """Mean euclidean distance over pairs of samples fewer than ``window`` apart, by plain loops in float64."""
    flat = rows.double().flatten(1).tolist()
    total, count = 0.0, 0
    for j in range(len(flat)):
        for i in range(max(0, j - window + 1), j):
            total += 2 * math.sqrt(sum((a - b) ** 2 for a, b in zip(flat[i], flat[j], strict=True)))
            count += 2
    return total / count


# -- 2. the normaliser does not depend on chunking or batching ------------------------------------------------


def test_normalized_geed_does_not_depend_on_the_chunk_size() -> None:
    model, x = _cnn(), torch.randn(300, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    results = {chunk: _normalized(model, CyclicRotation(4), x, chunk) for chunk in (8, 16, 64, 128, 512, 2048)}
    expected = results[2048]
    for layer in ("1", "output"):
        for summary in results.values():
            assert float(summary[layer]["geed"]) == pytest.approx(float(expected[layer]["geed"]), rel=1e-6)
            assert float(summary[layer]["geed_normalized"]) == pytest.approx(
                float(expected[layer]["geed_normalized"]), rel=1e-6
            )
    # and it is the pair mean of an independent loop over the output rows
    with torch.no_grad():
        output = model(x)
    assert float(expected["output"]["pair_mean"]) == pytest.approx(_reference_pair_mean(output, 64), rel=1e-6)


def test_normalized_geed_does_not_depend_on_how_the_data_is_split_into_updates() -> None:
    orbit = torch.randn(4, 200, 7, generator=torch.Generator().manual_seed(1))
    whole = InvarianceDeviation(4, normalize=True)
    whole.update(orbit)
    for cuts in ([1, 5, 64, 130], [63, 64, 65], list(range(0, 200, 7))):
        split = InvarianceDeviation(4, normalize=True)
        for start, stop in zip([0, *cuts], [*cuts, 200], strict=True):
            split.update(orbit[:, start:stop])
        assert float(split.compute()) == pytest.approx(float(whole.compute()), rel=1e-9)
    assert float(whole.compute()) == pytest.approx(float(invariance_deviation(orbit, normalize=True)), rel=1e-12)


def test_large_groups_are_normalised_on_cpu() -> None:
    """|G| >= 65 left a single sample per chunk on CPU: the normaliser had no pair and logged NaN silently."""
    model, x = _cnn(), torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    group = ContinuousRotation(num_elements=65)
    summary = _normalized(model, group, x, None, layers=("output",))["output"]
    assert math.isfinite(float(summary["geed_normalized"]))
    assert float(summary["geed_normalized"]) == pytest.approx(
        float(_normalized(model, group, x, 10_000, layers=("output",))["output"]["geed_normalized"]), rel=1e-6
    )


# -- 3. precision: float16/bfloat16 features, huge values, autocast --------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_low_precision_features_are_measured_in_float32_or_wider(dtype: torch.dtype, distance: str) -> None:
    features = (torch.randn(4, 64, 512, generator=torch.Generator().manual_seed(3)) * 12).to(dtype)
    for normalize in (False, True):
        value = invariance_deviation(features, distance=distance, normalize=normalize)
        expected = invariance_deviation(features.double(), distance=distance, normalize=normalize)
        assert float(value) == pytest.approx(float(expected), rel=1e-5), (normalize, float(value))
    assert float(invariance_deviation(features, normalize=True)) > 0.5  # it read 0.0 (perfectly invariant) before


def test_raw_euclidean_beyond_the_float16_range_is_finite() -> None:
    features = (torch.randn(2, 8, 64, generator=torch.Generator().manual_seed(4)) * 8e3).half()
    assert math.isfinite(float(invariance_deviation(features)))
    assert float(invariance_deviation(features)) == pytest.approx(float(invariance_deviation(features.double())), 1e-5)


@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_huge_and_tiny_float32_features_do_not_overflow(scale: float) -> None:
    base = torch.randn(4, 10, 30, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    features = (base * scale).float()
    for distance in ("euclidean", "cosine"):
        value = invariance_deviation(features, distance=distance, normalize=True)
        expected = invariance_deviation(base.float().double(), distance=distance, normalize=True)
        assert float(value) == pytest.approx(float(expected), rel=1e-5), distance
    assert float(invariance_deviation(features)) == pytest.approx(
        reference_geed([features.double()], "euclidean", "centroid"), rel=1e-5
    )


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_measuring_inside_autocast_computes_as_outside(device: str) -> None:
    model, x = _cnn().to(device), torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(6)).to(device)
    captured = {}
    probe = Probe(model, CyclicRotation(4), ["1", "output"])
    with torch.autocast(device, dtype=torch.bfloat16):
        probe.run(x, lambda name, features: captured.setdefault(name, []).append(features.clone()))
        metrics = {layer: InvarianceDeviation(4, normalize=True).to(device) for layer in ("1", "output")}
        probe.update(x, metrics)
        inside = {layer: float(metric.compute()) for layer, metric in metrics.items()}
    for layer, chunks in captured.items():
        features = torch.cat(chunks, dim=1)
        outside = InvarianceDeviation(4, normalize=True).to(device)
        outside.update(features)
        reference = float(invariance_deviation(features.double(), normalize=True))
        assert inside[layer] == pytest.approx(float(outside.compute()), rel=1e-6)
        assert inside[layer] == pytest.approx(reference, rel=1e-5)


# -- 1. torch.compile ----------------------------------------------------------------------------------------


def test_compiled_models_measure_as_eager() -> None:
    model, x = _cnn(), torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    eager = _normalized(model, CyclicRotation(4), x, None, layers=("0", "output"))
    compiled = torch.compile(model)
    compiled(x)  # compiled before the probe's hooks exist
    for layers in (("_orig_mod.0", "output"), ("0", "output")):
        measured = _normalized(compiled, CyclicRotation(4), x, None, layers=layers)
        for layer, eager_layer in zip(layers, ("0", "output"), strict=True):
            assert float(measured[layer]["num_samples"]) == 16
            assert float(measured[layer]["geed"]) == pytest.approx(float(eager[eager_layer]["geed"]), rel=1e-5)


def test_a_compiled_submodule_measures_as_eager() -> None:
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = torch.compile(_cnn())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x)

    model, x = Wrapper(), torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    model(x)
    measured = _normalized(model, CyclicRotation(4), x, None, layers=("backbone.1",))
    eager = _normalized(model.backbone._orig_mod, CyclicRotation(4), x, None, layers=("1",))
    assert float(measured["backbone.1"]["geed"]) == pytest.approx(float(eager["1"]["geed"]), rel=1e-5)


# -- 5. every global RNG is forked ------------------------------------------------------------------------


def test_the_probe_leaves_python_and_numpy_random_streams_alone() -> None:
    class Noisy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1) * (1 + random.random() + float(numpy.random.rand()) + float(torch.rand(())))

    x = torch.randn(3, 4, 4)
    random.seed(0)
    numpy.random.seed(0)
    torch.manual_seed(0)
    states = random.getstate(), numpy.random.get_state()[1].copy(), torch.get_rng_state()
    Probe(Noisy(), CyclicRotation(4)).run(x, lambda name, features: None)
    assert random.getstate() == states[0]
    assert numpy.array_equal(numpy.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])


# -- 6. edge cases: a clear error, or NaN with a warning ---------------------------------------------------


def test_normalized_variance_of_one_sample_is_nan_with_a_warning() -> None:
    metric = NormalizedVariance()
    metric.update(torch.randn(4, 1, 3))
    with pytest.warns(RuntimeWarning, match="two or more samples"):
        assert math.isnan(float(metric.compute()))


@pytest.mark.parametrize(
    "metric",
    [
        InvarianceDeviation(4, distance="discrete"),
        InvarianceDeviation(4, distance="kl"),
        PredictionConsistency(4),
        LinearMapFit(4),
        NormalizedVariance(),
    ],
    ids=["discrete", "kl", "consistency", "linear_fit", "variance"],
)
def test_an_empty_batch_adds_nothing(metric) -> None:
    batch = torch.randn(4, 5, 3)
    metric.update(torch.randn(4, 0, 3))
    metric.update(batch)
    reference = metric.clone()
    reference.reset()
    reference.update(batch)
    result, expected = metric.compute(), reference.compute()
    torch.testing.assert_close(result, expected)


def test_a_change_of_feature_width_between_updates_raises() -> None:
    metric = InvarianceDeviation(4)
    metric.update(torch.randn(4, 3, 8))
    with pytest.raises(ValueError, match="one metric measures one layer"):
        metric.update(torch.randn(4, 3, 9))


def test_complex_features_are_compared_as_real_vectors() -> None:
    features = torch.randn(3, 6, 5, dtype=torch.complex128, generator=torch.Generator().manual_seed(9))
    as_real = torch.view_as_real(features).flatten(2)
    for normalize in (False, True):
        assert float(invariance_deviation(features, normalize=normalize)) == pytest.approx(
            float(invariance_deviation(as_real, normalize=normalize)), rel=1e-12
        )
    rows = features[0]
    pair_mean = (
        sum(float((rows[i] - rows[j]).abs().square().sum().sqrt()) for i in range(6) for j in range(6) if i != j) / 30
    )
    raw = invariance_deviation(features)
    assert float(invariance_deviation(features, normalize=True)) == pytest.approx(float(raw) / pair_mean, rel=1e-9)


def _non_finite_features() -> torch.Tensor:
    """Orbit features ``(4, 6, 3)`` whose samples 1 (a NaN) and 4 (an inf) are not finite."""
    features = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(0))
    features[3, 4, 1] = float("inf")
    features[0, 1, 0] = float("nan")
    return features


def _summary_after_refusal(metric, features: torch.Tensor) -> dict[str, torch.Tensor]:
    """``features`` in two updates: ``compute()`` refuses them, and the summary it returns keeps the counts."""
    metric.update(features[:, :3])
    metric.update(features[:, 3:])
    with pytest.raises(ValueError, match="NaN or infinite values for 2 of 6 samples"):
        metric.compute()
    summary = metric.compute_summary()
    assert int(summary["num_non_finite"]) == 2 and int(summary["num_skipped"]) == 0
    assert int(summary["num_samples"]) == 6
    return summary


@pytest.mark.parametrize("definition", ["tmeasures", "channel_variance"])
def test_normalized_variance_refuses_non_finite_features_at_compute(definition) -> None:
    """Counted on the device while updating (no host sync), refused by compute(), NaN in the summary."""
    features = _non_finite_features()
    metric = NormalizedVariance(definition)
    summary = _summary_after_refusal(metric, features)
    assert int(summary["num_units"]) == 3
    for key in ("normalized_variance", "transformation_variance", "sample_variance", "per_unit_normalized_variance"):
        assert bool(torch.isnan(summary[key]).all()), key
    skipping = NormalizedVariance(definition, nan_strategy="skip")
    for part in (features[:, 3:], features[:, :3], features[:, 3:]):
        with pytest.warns(UserWarning, match="Skipping 1 of 3"):
            skipping.update(part)
    skipped = skipping.compute_summary()
    assert int(skipped["num_skipped"]) == int(skipped["num_non_finite"]) == 3 and int(skipped["num_samples"]) == 6
    finite = features[:, [3, 5, 0, 2, 3, 5]]
    expected = normalized_variance(finite.double(), definition)["normalized_variance"]
    torch.testing.assert_close(skipped["normalized_variance"], expected, rtol=1e-9, atol=0.0)
    metric.reset()
    metric.update(features[:, 2:4])  # finite again after a reset
    assert torch.isfinite(metric.compute())


def test_the_lie_derivative_refuses_non_finite_values_at_compute() -> None:
    """Counted on the device while updating, refused by compute(), NaN in the summary; "skip" leaves them out."""
    generator = torch.Generator().manual_seed(4)
    features, derivatives = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    derivatives[2, 1] = float("nan")
    features[4, 0] = float("inf")
    refusing = LieDerivative(normalize=True)
    refusing.update(features, derivatives)
    with pytest.raises(ValueError, match="NaN or infinite values for 2 of 6 samples"):
        refusing.compute()
    summary = refusing.compute_summary()
    assert int(summary["num_non_finite"]) == 2 and int(summary["num_samples"]) == 6
    assert all(math.isnan(float(summary[key])) for key in ("lie_derivative", "lie_derivative_raw", "max"))
    skipping, finite = LieDerivative(normalize=True, nan_strategy="skip"), LieDerivative(normalize=True)
    with pytest.warns(UserWarning, match="Skipping 2 of 6"):
        skipping.update(features, derivatives)
    kept = [0, 1, 3, 5]
    finite.update(features[kept], derivatives[kept])
    assert int(skipping.compute_summary()["num_skipped"]) == 2
    torch.testing.assert_close(skipping.compute(), finite.compute(), rtol=0.0, atol=0.0)
    relative = [float(derivatives[i].double().norm() / features[i].double().norm()) for i in kept]
    assert float(finite.compute()) == pytest.approx(sum(relative) / len(relative), rel=1e-6)


def test_the_fitted_maps_refuse_non_finite_features_at_compute() -> None:
    """Counted and left out of the sums on the device, refused by compute(); "skip" fits the finite samples alone."""
    features = _non_finite_features()
    refusing = LinearMapFit(4)
    refusing.update(features[:, :3])
    refusing.update(features[:, 3:])
    with pytest.raises(ValueError, match="NaN or infinite values for 2 of 6 samples"):
        refusing.compute()
    summary = refusing.compute_summary()
    assert (int(summary["fit_samples"]), int(summary["num_non_finite"]), int(summary["num_skipped"])) == (4, 2, 0)
    assert bool(torch.isnan(summary["maps"]).all())
    skipping, finite = LinearMapFit(4, nan_strategy="skip"), LinearMapFit(4)
    skipping.update(features)
    finite.update(features[:, [0, 2, 3, 5]])
    with pytest.warns(UserWarning, match="left out 2 of 6 fitting samples"):
        maps = skipping.compute()
    torch.testing.assert_close(maps, finite.compute(), rtol=1e-12, atol=1e-12)
    only_nan = LinearMapFit(4, nan_strategy="skip")
    only_nan.update(features[:, [1, 4]])
    with pytest.raises(ValueError, match="all 2 fitting samples held NaN or infinite values"):
        only_nan.compute()
    held_out = finite.held_out_metric()
    summary = _summary_after_refusal(held_out, features)
    assert all(math.isnan(float(summary[key])) for key in ("linear_geed", "invariance_geed", "pair_mean"))
    skipping_held_out, finite_held_out = finite.held_out_metric(nan_strategy="skip"), finite.held_out_metric()
    with pytest.warns(UserWarning, match="Skipping 2 of 6"):
        skipping_held_out.update(features)
    finite_held_out.update(features[:, [0, 2, 3, 5]])
    torch.testing.assert_close(skipping_held_out.compute(), finite_held_out.compute(), rtol=0.0, atol=0.0)


def test_prediction_consistency_accepts_the_nan_strategy_its_error_suggests() -> None:
    scores = torch.randn(4, 5, 3)
    scores[2, 1, 0] = float("nan")
    refusing = PredictionConsistency(4)
    refusing.update(scores)  # counted on the device: the error comes at compute
    with pytest.raises(ValueError, match=r"NaN or infinite values for 1 of 5 samples.*nan_strategy='skip'"):
        refusing.compute()
    metric = PredictionConsistency(4, nan_strategy="skip")
    with pytest.warns(UserWarning, match="Skipping 1 of 5"):
        metric.update(scores)
    assert float(metric.compute_summary()["num_samples"]) == 4


def test_probe_shape_errors_report_the_batch_shape() -> None:
    with pytest.raises(ValueError, match=r"\(7, 1, 8, 6\)"):
        Probe(_cnn(), CyclicRotation(4)).run(torch.randn(7, 1, 8, 6), lambda name, features: None)


@pytest.mark.parametrize("chunk_size", [True, 0, -3, 2.5])
def test_probe_rejects_a_chunk_size_that_is_not_a_positive_int(chunk_size) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        Probe(_cnn(), CyclicRotation(4), chunk_size=chunk_size)


def test_equivariance_has_no_reference_option() -> None:
    with pytest.raises(ValueError, match="EquivarianceDeviation has no `reference`"):
        EquivarianceDeviation(SpatialAction(CyclicRotation(4)), 4, reference="identity")


def test_equivariance_takes_the_group_size_from_its_action_and_checks_it() -> None:
    assert EquivarianceDeviation(SpatialAction(CyclicRotation(4))).num_elements == 4
    with pytest.raises(ValueError, match="has 4 elements"):
        EquivarianceDeviation(SpatialAction(CyclicRotation(4)), num_elements=3)


def test_the_functional_form_of_an_empty_batch_is_nan_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="no sample"):
        assert math.isnan(float(invariance_deviation(torch.randn(4, 0, 3))))


def test_compute_before_any_update_warns() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert math.isnan(float(InvarianceDeviation(4).compute()))
    assert any("no sample" in str(warning.message) for warning in caught)


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "kl", "discrete"])
def test_nan_strategy_error_refuses_at_compute_and_summarises_as_nan(distance) -> None:
    """`nan_strategy="error"` counts NaN/inf samples on the device (no host sync) and never gives a number for them."""
    features = _non_finite_features()
    metric = InvarianceDeviation(4, distance=distance, normalize=True)
    summary = _summary_after_refusal(metric, features)
    assert all(bool(torch.isnan(summary[key]).all()) for key in ("geed", "geed_normalized", "stderr", "max"))
    metric.reset()
    metric.update(features[:, 2:4])  # finite again after a reset
    assert torch.isfinite(metric.compute())


class _MatmulPrecisions(TorchFunctionMode):
    """Records the float32 matmul precision in force at every matrix product."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("__matmul__", "matmul", "mm", "bmm", "einsum"):
            self.seen.append(torch.get_float32_matmul_precision())
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_a_global_matmul_precision_cannot_move_a_score(distance) -> None:
    """`torch.set_float32_matmul_precision("high")` (TF32, as Lightning suggests on GPUs) or "medium" (bf16) must not
    reach the normaliser's Gram products or an action's matrices; the caller's setting is left as it was."""
    from lightning_invariance.groups import MatrixAction, Rotation3D

    group = Rotation3D(6, seed=0)
    features = group.orbit(torch.randn(40, 5, 3, generator=torch.Generator().manual_seed(0)))
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with _MatmulPrecisions() as precisions:
            invariance = InvarianceDeviation(group, distance=distance, normalize=True)
            invariance.update(features.flatten(2))
            invariance.compute()
            equivariance = EquivarianceDeviation(MatrixAction(group, group.matrices()), distance=distance)
            equivariance.update(features)
            equivariance.compute()
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)
    assert precisions.seen and set(precisions.seen) == {"highest"}, precisions.seen


#: PyTorch's per-backend settings of float32 matrix products (2.9 and later): what the measuring code must override.
_PER_BACKEND = hasattr(torch.backends.cuda.matmul, "fp32_precision")


def _matmul_settings() -> dict[str, str]:
    """The per-backend precisions in force (a child set to "none" shows its parent's)."""
    return {
        "generic": torch.backends.fp32_precision,
        "cuda.matmul": torch.backends.cuda.matmul.fp32_precision,
        "mkldnn.matmul": torch.backends.mkldnn.matmul.fp32_precision,
    }


class _PerBackendPrecisions(TorchFunctionMode):
    """Records the float32 matmul precisions in force at every matrix product: legacy, CUDA's and oneDNN's."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("__matmul__", "matmul", "mm", "bmm", "einsum"):
            settings = _matmul_settings()  # and the legacy setting, which must agree (PyTorch checks it for cuBLAS)
            self.seen.add((torch.get_float32_matmul_precision(), settings["cuda.matmul"], settings["mkldnn.matmul"]))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def default_matmul_precision():
    """Leaves PyTorch's float32 matmul settings, legacy and per backend, at their defaults after the test."""
    yield
    torch.set_float32_matmul_precision("highest")
    torch.backends.fp32_precision = "none"
    torch.backends.cuda.matmul.fp32_precision = "none"
    torch.backends.mkldnn.matmul.fp32_precision = "none"


@pytest.mark.skipif(not _PER_BACKEND, reason="PyTorch before 2.9 has no per-backend matmul precision")
@pytest.mark.parametrize(
    "setting",
    [
        ("cuda.matmul", "tf32"),
        ("mkldnn.matmul", "bf16"),
        ("mkldnn.matmul", "tf32"),
        ("generic", "tf32"),
        ("legacy high, then mkldnn.matmul", "bf16"),
    ],
    ids=lambda setting: "=".join(setting),
)
def test_a_per_backend_matmul_precision_cannot_move_a_score(setting, default_matmul_precision) -> None:
    """`torch.backends.cuda.matmul.fp32_precision = "tf32"` and its kin (PyTorch's newer API, which it recommends):
    measuring neither fails (the legacy getter refuses to read such a state) nor runs a Gram product in reduced
    precision (bf16 passes for float32 products on CPUs with AVX-512 BF16), and leaves every setting as it found it,
    a child left to inherit from its parent still inheriting."""
    features = torch.randn(4, 300, 2048, generator=torch.Generator().manual_seed(0))
    default = InvarianceDeviation(4, normalize=True)
    default.update(features)
    expected = default.compute_summary()
    backend, precision = setting
    if backend == "generic":
        torch.backends.fp32_precision = precision
    elif backend.startswith("legacy high"):  # both APIs: the legacy setting is then no longer readable
        torch.set_float32_matmul_precision("high")
        torch.backends.mkldnn.matmul.fp32_precision = precision
    else:
        getattr(torch.backends, backend.split(".")[0]).matmul.fp32_precision = precision
    before = _matmul_settings()
    with _PerBackendPrecisions() as precisions:
        metric = InvarianceDeviation(4, normalize=True)
        metric.update(features)
        summary = metric.compute_summary()
    assert precisions.seen == {("highest", "ieee", "ieee")}, precisions.seen
    for key, value in expected.items():
        assert torch.equal(summary[key], value), key
    assert _matmul_settings() == before
    if backend.startswith("legacy high"):  # the legacy setting came back too: readable again once they agree
        torch.backends.mkldnn.matmul.fp32_precision = "tf32"
        assert torch.get_float32_matmul_precision() == "high"
    if backend == "generic":  # the children were left inheriting: they follow the parent back
        torch.backends.fp32_precision = "none"
        assert _matmul_settings() == {"generic": "none", "cuda.matmul": "none", "mkldnn.matmul": "none"}
