"""The measures beyond G-EED: variances, fitted linear maps, Lie derivatives, distributions, border masks."""

import math

import pytest
import torch

from lightning_invariance import LieProbe
from lightning_invariance.functional import (
    derivative_along,
    equivariance_deviation,
    lie_derivative,
    linear_equivariance_deviation,
    normalized_variance,
)
from lightning_invariance.functional.linear import pooled_orbit
from lightning_invariance.groups import (
    ContinuousRotation,
    CyclicRotation,
    Permutation,
    SpatialAction,
    TrivialAction,
)
from lightning_invariance.groups.continuous import affine_transform, rotation_matrix
from lightning_invariance.metrics import (
    EquivarianceDeviation,
    InvarianceDeviation,
    LieDerivative,
    LinearMapFit,
    NormalizedVariance,
)

from references import reference_ridge_maps, reference_variances


def _random_batches(seed: int, sizes=(5, 1, 7, 3, 9, 2), units: int = 4) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    offset = torch.randn(units, generator=generator, dtype=torch.float64) * 5  # Chan's formula must handle offsets
    return [torch.randn(3, n, units, generator=generator, dtype=torch.float64) + offset for n in sizes]


# ---------------------------------------------------------------- variance measures (Quiroga et al.)


@pytest.mark.parametrize("definition", ["tmeasures", "channel_variance"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_variances_one_pass_equal_loops_over_all_batches(seed, definition):
    batches = _random_batches(seed)
    metric = NormalizedVariance(definition=definition)
    for batch in batches:
        metric.update(batch)
    summary = metric.compute_summary()
    transformation, sample = reference_variances(batches, "std" if definition == "tmeasures" else "variance")
    assert summary["per_unit_transformation_variance"].tolist() == pytest.approx(transformation, rel=1e-10)
    assert summary["per_unit_sample_variance"].tolist() == pytest.approx(sample, rel=1e-10)
    ratios = [t / s for t, s in zip(transformation, sample, strict=True)]
    assert float(summary["normalized_variance"]) == pytest.approx(sum(ratios) / len(ratios), rel=1e-10)
    assert float(summary["transformation_variance"]) == pytest.approx(sum(transformation) / 4, rel=1e-10)
    # one pass over six batches equals the two-pass computation on everything at once
    two_pass = normalized_variance(torch.cat(batches, dim=1), definition)
    for key in ("normalized_variance", "transformation_variance", "sample_variance"):
        assert float(summary[key]) == pytest.approx(float(two_pass[key]), rel=1e-12)


def test_tmeasures_units_are_activations_and_channel_variance_units_are_channel_means():
    maps = torch.randn(4, 6, 3, 5, 5, dtype=torch.float64)
    assert torch.allclose(
        normalized_variance(maps, "channel_variance")["per_unit_normalized_variance"],
        normalized_variance(maps.mean(dim=(-2, -1)), "channel_variance")["per_unit_normalized_variance"],
    )
    assert torch.allclose(
        normalized_variance(maps)["per_unit_normalized_variance"],
        normalized_variance(maps.flatten(2))["per_unit_normalized_variance"],
    )
    assert normalized_variance(maps)["per_unit_normalized_variance"].shape == (75,)


def test_doc_example_reproduces_tmeasures():
    """tmeasures gives 0.5 on this example (stds with n - 1: 0.7071 / 1.4142); the channel-variance variant 0.25."""
    orbit = torch.tensor([[[0.0], [2.0]], [[1.0], [3.0]]])
    assert float(normalized_variance(orbit)["normalized_variance"]) == pytest.approx(0.5, rel=1e-12)
    assert float(normalized_variance(orbit, "channel_variance")["normalized_variance"]) == pytest.approx(0.25)


def test_constant_model_has_every_unit_dead():
    constant = torch.full((4, 10, 3), 0.7)
    summary = normalized_variance(constant, "channel_variance")
    assert math.isnan(float(summary["normalized_variance"]))
    assert float(summary["dead_units"]) == 3 == float(summary["num_units"])
    summary = normalized_variance(constant)  # tmeasures: 0 / 0 = 1
    assert float(summary["normalized_variance"]) == 1.0
    assert float(summary["dead_units"]) == 3


def test_invariant_model_has_zero_and_dead_units_are_counted_apart():
    features = torch.randn(1, 12, 3, dtype=torch.float64).expand(4, 12, 3).clone()
    features[:, :, 2] = 1.5  # a dead unit
    summary = normalized_variance(features, "channel_variance")
    assert float(summary["normalized_variance"]) == 0.0
    assert float(summary["dead_units"]) == 1
    summary = normalized_variance(features)  # tmeasures averages the dead unit's 1 in: (0 + 0 + 1) / 3
    assert float(summary["normalized_variance"]) == pytest.approx(1 / 3)
    assert float(summary["dead_units"]) == 1


def test_tmeasures_gives_inf_where_only_the_sample_spread_is_zero():
    features = torch.randn(4, 6, 2, dtype=torch.float64)
    features[:, :, 1] = torch.arange(4.0, dtype=torch.float64).unsqueeze(1)  # moves with g, same for every input
    per_unit = normalized_variance(features)["per_unit_normalized_variance"]
    assert math.isinf(float(per_unit[1])) and math.isfinite(float(per_unit[0]))


def test_transformation_as_large_as_input_change_gives_about_one():
    # the orbit of each sample is a random draw from the same distribution as the samples: NV ~ 1
    features = torch.randn(64, 4000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert float(normalized_variance(features)["normalized_variance"]) == pytest.approx(1.0, abs=0.05)


def test_variance_metric_rejects_a_change_of_shape():
    metric = NormalizedVariance()
    first = torch.randn(3, 4, 5)
    metric.update(first)
    with pytest.raises(ValueError, match="5 units as in earlier updates"):
        metric.update(torch.randn(3, 4, 6))
    summary = metric.compute_summary()  # the refused batch left nothing behind
    assert int(summary["num_samples"]) == 4
    torch.testing.assert_close(summary["normalized_variance"], normalized_variance(first)["normalized_variance"])
    metric.reset()
    metric.update(torch.randn(3, 4, 6))  # a reset forgets the shape


def test_linear_map_fit_rejects_a_change_of_width():
    group = Permutation(dim=1, num_elements=3)
    fit, alone = LinearMapFit(group), LinearMapFit(group)
    first = group.orbit(torch.randn(30, 5, generator=torch.Generator().manual_seed(0)))
    fit.update(first)
    alone.update(first)
    with pytest.raises(ValueError, match="5 pooled values per sample as in earlier updates, but got 7"):
        fit.update(group.orbit(torch.randn(30, 7)))
    torch.testing.assert_close(fit.compute(), alone.compute(), rtol=0.0, atol=0.0)
    fit.reset()
    fit.update(group.orbit(torch.randn(30, 7)))  # a reset forgets the width


# ---------------------------------------------------------------- fitted linear equivariance (Lenc & Vedaldi)


def test_fitted_maps_of_a_permutation_are_the_permutation_and_held_out_error_zero():
    group = Permutation(dim=1, num_elements=4, seed=3)
    fit = LinearMapFit(num_elements=4, ridge=0.0)
    fit.update(group.orbit(torch.randn(30, 6, dtype=torch.float64)))
    fit.update(group.orbit(torch.randn(20, 6, dtype=torch.float64)))
    maps = fit.compute()
    for k in range(4):
        permutation = group.act(torch.eye(6, dtype=torch.float64), k)  # row i of P: e_i permuted
        assert torch.allclose(maps[k, :6], permutation, atol=1e-8)
        assert torch.allclose(maps[k, 6], torch.zeros(6, dtype=torch.float64), atol=1e-8)  # no bias
    metric = fit.held_out_metric()
    metric.update(group.orbit(torch.randn(25, 6, dtype=torch.float64)))
    summary = metric.compute_summary()
    assert float(summary["linear_geed_normalized"]) < 1e-8
    assert float(summary["invariance_geed_normalized"]) > 0.5  # equivariant, not invariant


def test_fitted_maps_of_a_linear_model_are_known_in_closed_form():
    # f(x) = W x with W invertible and g a permutation P: f(g.x) = W P x = (W P W^-1) f(x), so M_g = W P W^-1
    generator = torch.Generator().manual_seed(4)
    weight = torch.randn(6, 6, generator=generator, dtype=torch.float64) + 3 * torch.eye(6, dtype=torch.float64)
    group = Permutation(dim=1, num_elements=3, seed=1)
    fit = LinearMapFit(num_elements=3, ridge=0.0)
    fit.update(group.orbit(torch.randn(40, 6, generator=generator, dtype=torch.float64)) @ weight.T)
    maps = fit.compute()
    for k in range(3):
        permutation = group.act(torch.eye(6, dtype=torch.float64), k).T  # x -> P x as a matrix on columns
        expected = weight @ permutation @ torch.linalg.inv(weight)  # f(g.x) = expected @ f(x)
        assert torch.allclose(maps[k, :6], expected.T, atol=1e-8)  # rows act on [f(x), 1] from the right


def test_linear_equivariance_equals_loops_with_ridge():
    generator = torch.Generator().manual_seed(5)
    fit = torch.randn(3, 15, 4, generator=generator, dtype=torch.float64)
    held_out = torch.randn(3, 8, 4, generator=generator, dtype=torch.float64)
    ridge = 0.1
    mean_square = sum(float(v) ** 2 for v in fit[0].flatten()) / (15 * 4)
    maps = reference_ridge_maps(fit, ridge * mean_square * 15)
    distances = []
    for g in range(3):
        for n in range(8):
            x = [float(v) for v in held_out[0, n]] + [1.0]
            predicted = [sum(x[i] * maps[g][i][d] for i in range(5)) for d in range(4)]
            distances.append(math.dist(predicted, [float(v) for v in held_out[g, n]]))
    pairs = [math.dist(held_out[0, i].tolist(), held_out[0, j].tolist()) for i in range(8) for j in range(8) if i != j]
    expected = (sum(distances) / len(distances)) / (sum(pairs) / len(pairs))
    value = linear_equivariance_deviation(fit, held_out, ridge=ridge, normalize=True)
    assert float(value) == pytest.approx(expected, rel=1e-9)
    fitting = LinearMapFit(3, ridge=ridge)
    for part in fit.split([4, 11], dim=1):
        fitting.update(part)
    metric = fitting.held_out_metric()
    for part in held_out.split([3, 5], dim=1):
        metric.update(part)
    assert float(metric.compute()) == pytest.approx(sum(distances) / len(distances), rel=1e-9)
    assert float(metric.compute_summary()["linear_geed_normalized"]) == pytest.approx(expected, rel=1e-9)


def test_rotated_feature_maps_are_linearly_equivariant_after_pooling():
    group = CyclicRotation(4)  # rot90 permutes the 2x2 pooling cells: a linear map
    generator = torch.Generator().manual_seed(0)
    fit = group.orbit(torch.randn(60, 3, 8, 8, generator=generator))
    held_out = group.orbit(torch.randn(30, 3, 8, 8, generator=generator))
    assert pooled_orbit(fit).shape == (4, 60, 12)
    assert float(linear_equivariance_deviation(fit, held_out, ridge=1e-8)) < 1e-4
    squared = fit.square() * torch.arange(8.0)  # not equivariant: a position-dependent nonlinearity
    held_squared = held_out.square() * torch.arange(8.0)
    assert float(linear_equivariance_deviation(squared, held_squared)) > 0.2  # measured 0.30


def test_wide_features_are_projected_to_max_features():
    assert pooled_orbit(torch.randn(2, 5, 1000), max_features=64).shape == (2, 5, 64)
    first, second = (
        pooled_orbit(torch.ones(2, 5, 1000), max_features=64),
        pooled_orbit(torch.ones(2, 5, 1000), max_features=64),
    )
    assert torch.equal(first, second)  # the projection is seeded


def test_linear_fit_needs_samples_and_held_out_maps_survive_reset_and_forward():
    fit = LinearMapFit(2)
    with pytest.raises(ValueError, match="no fitting samples"):
        fit.compute()
    fit.update(torch.randn(2, 10, 3))
    metric = fit.held_out_metric()
    metric(torch.randn(2, 4, 3))  # forward resets the batch state, never the maps
    metric.reset()
    metric.update(torch.randn(2, 4, 3))
    assert torch.equal(metric.maps, fit.compute())
    assert "maps" in metric.state_dict()


# ---------------------------------------------------------------- Lie derivative (Gruver et al.)


def _smooth_images(n: int, size: int = 16) -> torch.Tensor:
    grid = torch.arange(size, dtype=torch.float64)
    rows, cols = torch.meshgrid(grid, grid, indexing="ij")
    centres = torch.linspace(5, 10, n, dtype=torch.float64)
    return torch.stack([torch.exp(-((rows - c) ** 2 + (cols - 15 + c) ** 2) / 12) for c in centres]).unsqueeze(1)


@pytest.mark.parametrize("generator", ["rotation", "scaling", "translation_x", "translation_y"])
def test_input_derivative_matches_finite_differences_of_the_group_transform(generator):
    images = _smooth_images(3)
    eps = 1e-4
    matrices = {
        "rotation": lambda t: rotation_matrix(math.degrees(t)),
        "scaling": lambda t: torch.tensor([[math.exp(-t), 0, 0], [0, math.exp(-t), 0]], dtype=torch.float64),
        "translation_x": lambda t: torch.tensor([[1, 0, -2 * t / 16], [0, 1, 0]], dtype=torch.float64),
        "translation_y": lambda t: torch.tensor([[1, 0, 0], [0, 1, -2 * t / 16]], dtype=torch.float64),
    }
    matrix = matrices[generator]
    finite = (affine_transform(images, matrix(eps)) - affine_transform(images, matrix(-eps))) / (2 * eps)
    assert torch.allclose(derivative_along(images, generator), finite, atol=1e-4)


def test_lie_derivative_of_a_model_equals_its_jacobian_times_the_input_derivative():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(3 * 64, 4)
    ).double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    captured = {}
    LieProbe(model, "rotation", layers=["1", "output"]).run(x, lambda n, f, d: captured.setdefault(n, (f, d)))
    tangent = derivative_along(x, "rotation")
    for i in range(3):  # reference: the full Jacobian by reverse mode, one sample at a time
        jacobian = torch.autograd.functional.jacobian(model, x[i : i + 1]).reshape(4, 64)
        assert torch.allclose(captured["output"][1][i], jacobian @ tangent[i].reshape(64), atol=1e-10)
    features, derivatives = captured["output"]
    expected = sum(float(derivatives[i].norm() / features[i].norm()) for i in range(3)) / 3
    assert float(lie_derivative(features, derivatives, normalize=True)) == pytest.approx(expected, rel=1e-12)


def test_lie_derivative_is_zero_for_invariant_and_equivariant_models():
    x = _smooth_images(4).float()
    total = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 1, bias=False))
    torch.nn.init.ones_(total[1].weight)  # the image's sum: invariant to rotation (content away from the border)
    identity = torch.nn.Sequential(torch.nn.Identity())
    metric, equivariant = LieDerivative(normalize=True), LieDerivative(normalize=True)
    LieProbe(total, "rotation").update(x, {"output": metric})
    LieProbe(identity, "rotation", layers=["0"], equivariant_layers=["0"]).update(x, {"0": equivariant})
    assert float(metric.compute()) < 1e-4
    assert float(equivariant.compute()) == 0.0
    plain = LieDerivative(normalize=True)
    LieProbe(identity, "rotation", layers=["0"]).update(x, {"0": plain})  # as invariance: far from 0
    assert float(plain.compute()) > 0.1


def test_the_lie_probes_vector_fields_are_built_once_per_shape():
    """Built on the CPU: copying them to an accelerator in every chunk would make the host wait each time."""
    from lightning_invariance.functional import lie

    identity = torch.nn.Sequential(torch.nn.Identity())
    lie._vector_field.cache_clear()
    probe = LieProbe(identity, "translation_x", layers=["0"], equivariant_layers=["0"], chunk_size=2)
    probe.run(_smooth_images(8).float(), lambda *_: None)  # 4 chunks: the input's field and the layer's, each once
    assert lie._vector_field.cache_info().misses == 2 and lie._vector_field.cache_info().hits == 6


def test_lie_probe_leaves_the_model_and_rng_as_they_were():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Dropout(0.5)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 1, 6, 6)
    rng = torch.get_rng_state()
    LieProbe(model, "scaling", layers=["1"]).run(x, lambda *_: None)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert not model._forward_hooks and not model[1]._forward_hooks


def test_lie_metric_counts_zero_representations_apart():
    metric = LieDerivative(normalize=True)
    metric.update(torch.zeros(2, 3), torch.ones(2, 3))
    metric.update(torch.ones(1, 4), torch.ones(1, 4))
    summary = metric.compute_summary()
    assert float(summary["lie_derivative"]) == 1.0 and float(summary["num_zero"]) == 2
    assert float(summary["lie_derivative_raw"]) == pytest.approx((2 * math.sqrt(3) + 2) / 3)


# ---------------------------------------------------------------- distributions and border masks


def test_per_class_scores_and_kept_sample_deviations_equal_loops():
    generator = torch.Generator().manual_seed(9)
    batches = [torch.randn(3, n, 4, generator=generator, dtype=torch.float64) for n in (5, 7)]
    labels = [torch.randint(0, 3, (n,), generator=generator) for n in (5, 7)]
    metric = InvarianceDeviation(3, reference="identity", num_classes=4, keep_sample_deviations=True)
    for batch, label in zip(batches, labels, strict=True):
        metric.update(batch, label)
    summary = metric.compute_summary()
    per_sample = [
        sum(math.dist(b[g, i].tolist(), b[0, i].tolist()) for g in range(3)) / 3
        for b in batches
        for i in range(b.shape[1])
    ]
    assert summary["sample_deviations"].tolist() == pytest.approx(per_sample, rel=1e-12)
    flat_labels = torch.cat(labels).tolist()
    for c in range(3):
        values = [d for d, y in zip(per_sample, flat_labels, strict=True) if y == c]
        assert float(summary["per_class"][c]) == pytest.approx(sum(values) / len(values), rel=1e-12)
    assert math.isnan(float(summary["per_class"][3]))  # never seen
    assert float(summary["max"]) >= max(per_sample)
    with pytest.raises(ValueError, match=r"labels"):
        metric.update(batches[0])
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        metric.update(batches[0], torch.full((5,), 4))


def test_border_mask_compares_only_the_valid_region():
    group = ContinuousRotation(angles=[30.0, 60.0])
    x = torch.randn(6, 2, 12, 12, dtype=torch.float64)
    orbit = group.orbit(x) + 1.0  # f(x) = x + 1: equivariant except where rotation fills the corners with 0
    action = SpatialAction(group)
    assert float(equivariance_deviation(orbit, action, normalize=True)) > 0.05
    assert float(equivariance_deviation(orbit, action, normalize=True, border_mask=True)) < 1e-6
    metric = EquivarianceDeviation(action, 3, border_mask=True)
    metric.update(orbit)
    fraction = metric.compute_summary()["valid_fraction"]
    masks = [group.valid_mask(k, (12, 12)) for k in range(3)]
    assert fraction.tolist() == pytest.approx([float(m.mean()) for m in masks])
    assert float(fraction[0]) == 1.0 and float(fraction[1]) < 1.0
    # the masked distance, written out: zero the invalid entries of both sides
    moved = torch.stack([group.act(orbit[0], k) for k in range(3)])
    expected = (
        sum(
            math.dist((orbit[k, i] * masks[k]).flatten().tolist(), (moved[k, i] * masks[k]).flatten().tolist())
            for k in range(3)
            for i in range(6)
        )
        / 18
    )
    assert float(equivariance_deviation(orbit, action, border_mask=True)) == pytest.approx(expected, abs=1e-12)


class _CountingRotation(ContinuousRotation):
    """Counts the border masks it builds."""

    built = 0

    def valid_mask(self, k, shape):
        type(self).built += 1
        return super().valid_mask(k, shape)


def test_border_masks_are_built_once_per_layer_shape_not_per_update():
    """Each is an interpolation on the CPU and a copy the host waits for on an accelerator: once, then reused."""
    _CountingRotation.built = 0
    group = _CountingRotation(angles=[30.0, 60.0])
    orbits = [group.orbit(torch.randn(4, 2, 10, 10, generator=torch.Generator().manual_seed(i))) for i in range(5)]
    chunked = EquivarianceDeviation(SpatialAction(group), border_mask=True)
    for orbit in orbits:
        chunked.update(orbit)
    assert _CountingRotation.built == 3  # one mask per element
    EquivarianceDeviation(SpatialAction(group), border_mask=True).update(group.orbit(torch.randn(4, 2, 6, 6)))
    assert _CountingRotation.built == 6  # another layer's shape: its own masks
    fresh = SpatialAction(ContinuousRotation(angles=[30.0, 60.0]))  # built anew, for one update of everything
    whole = EquivarianceDeviation(fresh, border_mask=True)
    whole.update(torch.cat(orbits, dim=1))
    for key in ("geed", "valid_fraction"):
        torch.testing.assert_close(chunked.compute_summary()[key], whole.compute_summary()[key], rtol=1e-12, atol=0)


def test_border_mask_needs_a_spatial_action_and_a_vector_distance():
    with pytest.raises(ValueError, match="border_mask"):
        EquivarianceDeviation(TrivialAction(), 4, border_mask=True)
    orbit = torch.randn(4, 2, 3, 8, 8)
    with pytest.raises(ValueError, match="spatial action"):
        equivariance_deviation(orbit, TrivialAction(), border_mask=True)
    with pytest.raises(ValueError, match="'euclidean' or 'cosine'"):
        equivariance_deviation(orbit, SpatialAction(CyclicRotation(4)), distance="kl", border_mask=True)


def test_valid_masks_of_cyclic_rotations():
    c8 = CyclicRotation(8)
    assert c8.valid_mask(2, (9, 9)) is None  # rot90: exact
    corner = c8.valid_mask(1, (9, 9))
    assert corner[0, 0] == 0 and corner[4, 4] == 1
    assert CyclicRotation(4).valid_mask(1, (5, 5)) is None


@pytest.mark.parametrize(
    ("features", "definition", "expected", "message"),
    [
        (torch.zeros(4, 10, 5), "tmeasures", 1.0, "every one of its 5 units is dead.*'tmeasures' counts 0/0 as 1"),
        (torch.zeros(4, 10, 2, 3, 3), "channel_variance", math.nan, "every one of its 2 units is dead.*leaves such"),
        (torch.arange(4.0).view(4, 1, 1).expand(4, 10, 5).contiguous(), "tmeasures", math.inf, "is inf: some unit"),
    ],
    ids=["dead_tmeasures", "dead_channels", "same_for_every_input"],
)
def test_normalized_variance_says_when_its_value_measures_no_invariance(features, definition, expected, message):
    """A dead layer gave 1.0 (tmeasures' 0/0 = 1) or NaN, and a layer constant across inputs inf, without a word."""
    metric = NormalizedVariance(definition=definition)
    metric.update(features)
    with pytest.warns(RuntimeWarning, match=message):
        value = metric.compute().item()
    assert value == expected or (math.isnan(expected) and math.isnan(value))
    assert metric.compute_summary()["dead_units"].item() == (0 if math.isinf(expected) else features[0, 0].shape[0])
