import math
import pickle

import pytest
import torch
from torchmetrics import MetricCollection

from lightning_invariance.groups import CyclicRotation, SpatialAction
from lightning_invariance.metrics import EquivarianceDeviation, InvarianceDeviation, PredictionConsistency

from references import reference_geed, reference_per_element, reference_stderr

torch.manual_seed(7)
NUM_ELEMENTS = 4
BATCHES = [torch.randn(NUM_ELEMENTS, n, 3, 2, dtype=torch.float64) for n in (5, 1, 8, 3)]
LOGIT_BATCHES = [torch.randn(NUM_ELEMENTS, n, 6, dtype=torch.float64) for n in (7, 4, 9)]


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("reference", ["centroid", "identity"])
@pytest.mark.parametrize("normalize", [False, True])
def test_accumulates_like_reference(distance, reference, normalize):
    metric = InvarianceDeviation(NUM_ELEMENTS, distance=distance, reference=reference, normalize=normalize)
    for k, batch in enumerate(BATCHES, start=1):
        metric.update(batch)
        expected = reference_geed(BATCHES[:k], distance, reference, normalize)
        assert metric.compute().item() == pytest.approx(expected, rel=1e-9)
    summary = metric.compute_summary()
    assert summary["geed"].item() == pytest.approx(reference_geed(BATCHES, distance, reference), rel=1e-9)
    assert summary["geed_normalized"].item() == pytest.approx(
        reference_geed(BATCHES, distance, reference, normalize=True), rel=1e-9
    )
    per_element = reference_per_element(BATCHES, distance, reference)
    assert summary["per_element"].tolist() == pytest.approx(per_element, rel=1e-9)
    assert summary["stderr"].item() == pytest.approx(reference_stderr(BATCHES, distance, reference), rel=1e-6)
    assert summary["num_samples"].item() == sum(b.shape[1] for b in BATCHES)


@pytest.mark.parametrize("distance", ["kl", "discrete"])
def test_class_distances_accumulate(distance):
    metric = InvarianceDeviation(NUM_ELEMENTS, distance=distance, normalize=True)
    for batch in LOGIT_BATCHES:
        metric.update(batch)
    assert metric.compute().item() == pytest.approx(reference_geed(LOGIT_BATCHES, distance, normalize=True), rel=1e-9)


def test_max_is_largest_single_distance():
    metric = InvarianceDeviation(NUM_ELEMENTS, reference="identity")
    for batch in BATCHES:
        metric.update(batch)
    largest = max((b - b[:1]).flatten(2).norm(dim=-1).max().item() for b in BATCHES)
    assert metric.compute_summary()["max"].item() == pytest.approx(largest, rel=1e-12)


def test_split_into_more_updates_gives_same_raw_value():
    whole = torch.cat(BATCHES, dim=1)
    a, b = InvarianceDeviation(NUM_ELEMENTS), InvarianceDeviation(NUM_ELEMENTS)
    a.update(whole)
    for batch in BATCHES:
        b.update(batch)
    assert a.compute().item() == pytest.approx(b.compute().item(), rel=1e-12)


def test_equivariance_metric_against_reference():
    group = CyclicRotation(4)
    batches = [torch.randn(4, n, 2, 5, 5, dtype=torch.float64) for n in (3, 6)]
    metric = EquivarianceDeviation(SpatialAction(group), len(group), normalize=True)
    for batch in batches:
        metric.update(batch)
    expected = reference_geed(batches, "euclidean", "identity", True, action=lambda f, k: torch.rot90(f, k, (-2, -1)))
    assert metric.compute().item() == pytest.approx(expected, rel=1e-9)


def test_prediction_consistency_metric():
    metric = PredictionConsistency(NUM_ELEMENTS)
    for batch in LOGIT_BATCHES:
        metric.update(batch)
    flip = reference_geed(LOGIT_BATCHES, "discrete", "identity")
    assert metric.compute().item() == pytest.approx(1 - flip, rel=1e-12)
    assert metric.higher_is_better is True


def test_reset_forward_clone_pickle_and_collection():
    metric = InvarianceDeviation(NUM_ELEMENTS, normalize=True)
    metric.update(BATCHES[0])
    metric.reset()
    batch_value = metric(BATCHES[2])  # forward: the batch's value, and accumulates
    assert batch_value.item() == pytest.approx(reference_geed([BATCHES[2]], normalize=True), rel=1e-9)
    metric.update(BATCHES[3])
    expected = reference_geed(BATCHES[2:], normalize=True)
    assert metric.compute().item() == pytest.approx(expected, rel=1e-9)
    assert pickle.loads(pickle.dumps(metric)).compute().item() == pytest.approx(expected, rel=1e-12)
    assert metric.clone().compute().item() == pytest.approx(expected, rel=1e-12)

    collection = MetricCollection(
        {
            "geed": InvarianceDeviation(NUM_ELEMENTS),
            "geed_normalized": InvarianceDeviation(NUM_ELEMENTS, normalize=True),
            "cosine": InvarianceDeviation(NUM_ELEMENTS, distance="cosine"),
        }
    )
    for batch in BATCHES:
        collection.update(batch)
    values = collection.compute()
    assert values["geed"].item() == pytest.approx(reference_geed(BATCHES), rel=1e-9)
    assert values["geed_normalized"].item() == pytest.approx(reference_geed(BATCHES, normalize=True), rel=1e-9)
    assert values["cosine"].item() == pytest.approx(reference_geed(BATCHES, "cosine"), rel=1e-9)


def test_compute_before_update_warns_and_is_nan():
    metric = InvarianceDeviation(NUM_ELEMENTS)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(metric.compute().item())


def test_batch_of_one_pairs_with_later_samples():
    metric = InvarianceDeviation(NUM_ELEMENTS, normalize=True)
    metric.update(BATCHES[1])  # one sample: no pairs
    with pytest.warns(RuntimeWarning, match="two or more samples"):
        assert math.isnan(metric.compute().item())
    metric.update(BATCHES[0])  # the single sample pairs with the ones after it
    expected = reference_geed([BATCHES[1], BATCHES[0]], normalize=True)
    assert metric.compute().item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: InvarianceDeviation(0), "positive int"),
        (lambda: InvarianceDeviation(4, distance="l1"), "`distance` to be one of"),
        (lambda: InvarianceDeviation(4, reference="median"), "`reference` to be one of"),
        (lambda: InvarianceDeviation(4, max_normalizer_pairs=0), "max_normalizer_pairs"),
    ],
)
def test_bad_arguments(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_wrong_number_of_elements():
    with pytest.raises(ValueError, match="to have 4 group elements"):
        InvarianceDeviation(4).update(torch.randn(3, 2, 5))
    with pytest.raises(TypeError, match="RepresentationAction"):
        EquivarianceDeviation("rot90", 4)  # type: ignore[arg-type]


def _orbit_metrics() -> dict[str, object]:
    from lightning_invariance.metrics import LinearEquivariance, LinearMapFit, NormalizedVariance

    return {
        "InvarianceDeviation": InvarianceDeviation(4),
        "EquivarianceDeviation": EquivarianceDeviation(SpatialAction(CyclicRotation(4)), 4),
        "PredictionConsistency": PredictionConsistency(4),
        "NormalizedVariance": NormalizedVariance(),
        "LinearMapFit": LinearMapFit(4),
        "LinearEquivariance": LinearEquivariance(torch.zeros(4, 5, 4)),
    }


@pytest.mark.parametrize("name", list(_orbit_metrics()))
def test_every_metric_checks_orbit_features_alike(name):
    """One check: a non-tensor is a TypeError, a tensor of the wrong shape a ValueError naming the shape."""
    metric = _orbit_metrics()[name]
    with pytest.raises(TypeError, match=r"`orbit_features` to be a torch\.Tensor, but got list"):
        metric.update([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"of shape \(\|G\|, N, \.\.\.\).*got shape \(7,\)"):
        metric.update(torch.randn(7))
    if name != "NormalizedVariance":  # the only one that takes any number of elements
        with pytest.raises(ValueError, match=r"to have 4 group elements on axis 0.*got shape \(3, 2, 5\)"):
            metric.update(torch.randn(3, 2, 5))


@pytest.mark.parametrize(
    "factory",
    [
        lambda: InvarianceDeviation(1),
        lambda: InvarianceDeviation(CyclicRotation(1)),
        lambda: PredictionConsistency(1),
        lambda: EquivarianceDeviation(SpatialAction(CyclicRotation(1))),
        lambda: EquivarianceDeviation(SpatialAction(CyclicRotation(1)), num_elements=1),
        lambda: __import__("lightning_invariance.metrics", fromlist=["LinearMapFit"]).LinearMapFit(1),
    ],
)
def test_a_group_of_the_identity_alone_warns_that_every_deviation_is_zero(factory):
    """|G| = 1 compares each sample with itself: 0, "perfectly invariant", by definition. A user who counts the
    transformations without the identity (an augmentation family with ``num_elements=1``) would read that as a
    finding, so it is said at construction."""
    with pytest.warns(UserWarning, match=r"only the identity \(\|G\| = 1\)"):
        factory()


def test_a_group_with_a_transformation_does_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*only the identity.*")
        InvarianceDeviation(2)
        EquivarianceDeviation(SpatialAction(CyclicRotation(4)))


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        (torch.zeros(4, 10, 5), "nan"),  # a dead layer: nothing moves, nothing differs: 0/0
        (torch.arange(4.0).view(4, 1, 1).expand(4, 10, 5), "inf"),  # moves with g, the same for every input
    ],
    ids=["dead", "same_for_every_input"],
)
def test_a_layer_without_differences_between_inputs_says_why_its_normalised_score_is_not_a_number(features, expected):
    """The mean distance between different inputs is 0: the normalised G-EED is 0/0 or x/0. It came back as NaN or
    inf without a word (the NaN warning covered only too few samples)."""
    from lightning_invariance.functional import invariance_deviation

    with pytest.warns(RuntimeWarning, match="every pair of different inputs has the same representation"):
        value = invariance_deviation(features, normalize=True)
    assert str(value.item()) == expected
    metric = InvarianceDeviation(4, normalize=True)
    metric.update(features)
    with pytest.warns(RuntimeWarning, match="every pair of different inputs has the same representation"):
        assert str(metric.compute().item()) == expected
