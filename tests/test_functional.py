import math

import pytest
import torch

from lightning_invariance.functional import (
    equivariance_deviation,
    invariance_deviation,
    prediction_consistency,
    prediction_flip_rate,
)
from lightning_invariance.groups import CyclicRotation, SpatialAction, TrivialAction

from references import reference_geed, reference_pair_sums

torch.manual_seed(42)
SHAPES = [(4, 6, 5), (8, 9, 3, 4), (2, 5, 2, 3, 3), (1, 4, 7)]
ORBITS = [torch.randn(*shape, dtype=torch.float64) for shape in SHAPES]
LOGITS = [torch.randn(g, n, c, dtype=torch.float64) * 2 for g, n, c in [(4, 7, 5), (8, 5, 3), (3, 10, 10)]]


@pytest.mark.parametrize("orbit", ORBITS, ids=[str(s) for s in SHAPES])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("reference", ["centroid", "identity"])
@pytest.mark.parametrize("normalize", [False, True])
def test_invariance_matches_loops(orbit, distance, reference, normalize):
    expected = reference_geed([orbit], distance, reference, normalize)
    got = invariance_deviation(orbit, distance=distance, reference=reference, normalize=normalize)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("logits", LOGITS, ids=[str(tuple(t.shape)) for t in LOGITS])
@pytest.mark.parametrize("distance", ["kl", "discrete"])
@pytest.mark.parametrize("reference", ["centroid", "identity"])
@pytest.mark.parametrize("normalize", [False, True])
def test_class_distances_match_loops(logits, distance, reference, normalize):
    expected = reference_geed([logits], distance, reference, normalize)
    got = invariance_deviation(logits, distance=distance, reference=reference, normalize=normalize)
    assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_kl_on_probabilities_without_softmax():
    probs = torch.softmax(LOGITS[0], dim=-1)
    got = invariance_deviation(probs, distance="kl", apply_softmax=False)
    assert got.item() == pytest.approx(reference_geed([probs], "kl", "centroid", apply_softmax=False), rel=1e-9)
    assert got.item() == pytest.approx(invariance_deviation(LOGITS[0], distance="kl").item(), rel=1e-9)


def test_discrete_on_integer_labels_equals_argmax_of_scores():
    labels = LOGITS[1].argmax(-1)
    for reference in ("centroid", "identity"):
        a = invariance_deviation(labels, distance="discrete", reference=reference)
        b = invariance_deviation(LOGITS[1], distance="discrete", reference=reference)
        assert a.item() == b.item()


def test_flip_rate_and_consistency():
    labels = torch.tensor([[0, 1, 2], [0, 2, 2], [1, 2, 2]])
    # flips: element 1 flips sample 1, element 2 flips samples 0 and 1 -> 3 of 9
    assert prediction_flip_rate(labels).item() == pytest.approx(3 / 9)
    assert prediction_consistency(labels).item() == pytest.approx(6 / 9)
    # majority labels: sample 0 -> 0, sample 1 -> 2, sample 2 -> 2: one disagreement per sample 0 and 1
    assert prediction_flip_rate(labels, reference="centroid").item() == pytest.approx(2 / 9)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_equivariance_matches_loops(distance):
    group = CyclicRotation(4)
    orbit = torch.randn(4, 5, 3, 6, 6, dtype=torch.float64)
    action = SpatialAction(group)
    expected = reference_geed([orbit], distance, "identity", action=lambda f, k: torch.rot90(f, k, dims=(-2, -1)))
    got = equivariance_deviation(orbit, action, distance=distance)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_equivariance_of_exact_orbit_is_zero_and_trivial_action_is_invariance():
    group = CyclicRotation(4)
    maps = torch.randn(6, 2, 5, 5, dtype=torch.float64)
    assert equivariance_deviation(group.orbit(maps), SpatialAction(group)).item() == 0.0
    orbit = torch.randn(4, 6, 3, dtype=torch.float64)
    trivial = equivariance_deviation(orbit, TrivialAction())
    assert trivial.item() == invariance_deviation(orbit, reference="identity").item()


def test_tagtorch_definitions():
    """DESIGN.md section 1, as TAGTorch computes it on 2-D features: centroid reference, last-axis distances."""
    orbit = torch.randn(6, 20, 16, dtype=torch.float64)
    centroid = orbit.mean(dim=0, keepdim=True).expand_as(orbit)
    cosine = (1 - torch.nn.functional.cosine_similarity(orbit, centroid, dim=-1)).mean()
    euclid = (orbit - centroid).norm(dim=-1).mean()
    probs = torch.softmax(orbit, dim=-1)
    centroid_p = probs.mean(0, keepdim=True).expand_as(probs)
    kl = torch.nn.functional.kl_div(centroid_p.log(), probs, reduction="none").sum(-1).mean()
    assert invariance_deviation(orbit, distance="cosine").item() == pytest.approx(cosine.item(), abs=1e-6)
    assert invariance_deviation(orbit, distance="euclidean").item() == pytest.approx(euclid.item(), abs=1e-6)
    assert invariance_deviation(orbit, distance="kl").item() == pytest.approx(kl.item(), abs=1e-6)


def test_normalizer_window_pairs_samples_fewer_than_window_apart():
    orbit = torch.randn(3, 50, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    windowed = invariance_deviation(orbit, normalize=True, normalizer_window=10)
    pair_total, pair_count = reference_pair_sums([orbit], "euclidean", window=10)
    assert pair_count == 2 * sum(min(i, 9) for i in range(50))
    assert windowed.item() == pytest.approx(reference_geed([orbit]) / (pair_total / pair_count), rel=1e-9)
    every_pair = invariance_deviation(orbit, normalize=True, normalizer_window=50)
    assert every_pair.item() == pytest.approx(reference_geed([orbit], normalize=True, window=50), rel=1e-9)
    assert windowed.item() == pytest.approx(every_pair.item(), rel=0.05)  # 9 partners a sample estimate the mean


def test_cosine_of_zero_vectors():
    zeros = torch.zeros(3, 2, 4)
    assert invariance_deviation(zeros, distance="cosine").item() == 0.0
    orbit = torch.zeros(2, 1, 3)
    orbit[1, 0, 0] = 1.0
    assert invariance_deviation(orbit, distance="cosine", reference="identity").item() == 0.5


@pytest.mark.parametrize(
    ("kwargs", "orbit", "message"),
    [
        ({"distance": "manhattan"}, torch.randn(2, 3, 4), "Expected argument `distance` to be one of"),
        ({"reference": "mean"}, torch.randn(2, 3, 4), "Expected argument `reference` to be one of"),
        ({"nan_strategy": "ignore"}, torch.randn(2, 3, 4), "Expected argument `nan_strategy`"),
        ({}, torch.randn(3), r"shape \(\|G\|, N, ...\)"),
        ({"distance": "kl"}, torch.randn(2, 3, 4, 4), "distance='kl' compares class distributions"),
        ({"distance": "kl", "apply_softmax": False}, torch.randn(2, 3, 4), "expects probabilities"),
        ({"distance": "discrete"}, torch.randn(2, 3), "distance='discrete' compares predicted labels"),
    ],
)
def test_bad_input_messages(kwargs, orbit, message):
    with pytest.raises(ValueError, match=message):
        invariance_deviation(orbit, **kwargs)


def test_non_finite_features_error_or_skip():
    orbit = torch.randn(3, 6, 4, dtype=torch.float64)
    orbit[2, 1, 0] = float("nan")
    orbit[0, 4, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite values for 2 of 6 samples"):
        invariance_deviation(orbit)
    with pytest.warns(UserWarning, match="Skipping 2 of 6 samples"):
        skipped = invariance_deviation(orbit, nan_strategy="skip")
    kept = orbit[:, [0, 2, 3, 5]]
    assert skipped.item() == pytest.approx(reference_geed([kept]), rel=1e-9)


@pytest.mark.parametrize("bad_part", ["fit", "held out"])
def test_fitted_linear_deviation_refuses_or_skips_non_finite_features(bad_part):
    """It returned NaN without a word when the fitting or held-out features held NaN."""
    from lightning_invariance.functional import linear_equivariance_deviation

    generator = torch.Generator().manual_seed(7)
    parts = {"fit": torch.randn(3, 12, 4, generator=generator), "held out": torch.randn(3, 8, 4, generator=generator)}
    clean = dict(parts)
    parts[bad_part] = parts[bad_part].clone()
    parts[bad_part][1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite values for 1 of"):
        linear_equivariance_deviation(parts["fit"], parts["held out"])
    with pytest.warns(UserWarning, match="Skipping 1 of"):
        skipped = linear_equivariance_deviation(parts["fit"], parts["held out"], nan_strategy="skip")
    kept = [i for i in range(parts[bad_part].shape[1]) if i != 2]
    clean[bad_part] = clean[bad_part][:, kept]
    expected = linear_equivariance_deviation(clean["fit"], clean["held out"])
    torch.testing.assert_close(skipped, expected, rtol=1e-12, atol=0.0)


def test_the_discrete_centroid_is_the_most_frequent_label_ties_to_the_smallest():
    """Counted explicitly rather than by ``torch.mode``, which does not say what it returns among ties."""
    from lightning_invariance.functional.distances import most_frequent

    labels = torch.randint(0, 3, (6, 400), generator=torch.Generator().manual_seed(3))
    expected = []
    for column in labels.T.tolist():
        most = max(column.count(label) for label in column)
        expected.append(min(label for label in column if column.count(label) == most))
    assert most_frequent(labels).tolist() == [expected]
    assert sum(sorted(c.count(v) for v in set(c))[-2:] == [3, 3] for c in labels.T.tolist()) > 10  # ties were tried


def test_single_sample_cannot_be_normalized():
    orbit = torch.randn(4, 1, 3)
    with pytest.warns(UserWarning, match="at least one batch of two or more samples"):
        value = invariance_deviation(orbit, normalize=True)
    assert math.isnan(value.item())
    assert not math.isnan(invariance_deviation(orbit).item())


def test_equivariance_rejects_action_that_changes_shape():
    group = CyclicRotation(4)
    with pytest.raises(ValueError, match="square"):
        equivariance_deviation(torch.randn(4, 2, 3, 5, 6), SpatialAction(group))


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "kl", "discrete"])
def test_window_pairs_by_gram_matrix_equal_elementwise_pairs(distance):
    from lightning_invariance.functional.distances import per_sample_distance, to_distance_space
    from lightning_invariance.functional.normalizer import window_pair_sums

    features = torch.randn(1, 9, 6, dtype=torch.float64)
    features[0, 3] = 0.0  # a zero vector (cosine's special case)
    space = to_distance_space(features, distance, apply_softmax=True)[0]
    total, count = window_pair_sums(space, distance, window=4)
    pairs = [(i, j) for i in range(9) for j in range(9) if i != j and abs(i - j) < 4]
    assert count == len(pairs) == 2 * (1 + 2 + 3 * 6)
    expected = sum(float(per_sample_distance(space[i], space[j], distance)) for i, j in pairs)
    assert total.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "kl", "discrete"])
@pytest.mark.parametrize("window", [2, 31, 33, 64, 100])
def test_window_pairs_of_a_stream_cut_anywhere_equal_elementwise_pairs(distance, window):
    """Pieces of any length, appended and joined, against plain pairs (blocks of 32 rows, windows around that)."""
    from lightning_invariance.functional.normalizer import PAIRING_ROWS, extend_segment, join_segments

    generator = torch.Generator().manual_seed(window)
    batches = [torch.randn(2, n, 5, dtype=torch.float64, generator=generator) for n in (1, 40, 7, 90, 33, 2)]
    batches.append(torch.randn(2, PAIRING_ROWS + 70, 5, dtype=torch.float64, generator=generator))
    reference_total, reference_count = reference_pair_sums(batches, distance, window=window)
    rows = [_distance_space(orbit[0], distance) for orbit in batches]
    for cut in (1, 4):  # a first stream of 1 row (shorter than any window but 2) or of 138, then a second one
        left, total, count = None, 0.0, 0
        for piece in rows[:cut]:  # appended one after another
            left, added, added_count = extend_segment(left, piece, distance, window)
            total, count = total + float(added), count + added_count
        right = None
        for piece in rows[cut:]:
            right, added, added_count = extend_segment(right, piece, distance, window)
            total, count = total + float(added), count + added_count
        _, added, added_count = join_segments(left, right, distance, window)
        assert count + added_count == reference_count
        assert total + float(added) == pytest.approx(reference_total, rel=1e-10)


def test_a_window_longer_than_the_stream_pairs_only_the_rows_there_are(monkeypatch):
    """normalizer_window=10**6 on 40 samples: every pair, from matrices as wide as the stream, not the window."""
    from lightning_invariance.functional import normalizer

    widths = []
    pair_matrix = normalizer.PreparedRows.pair_matrix
    monkeypatch.setattr(
        normalizer.PreparedRows, "pair_matrix", lambda a, b: widths.append(len(b.parts["rows"][0])) or pair_matrix(a, b)
    )
    orbit = torch.randn(2, 40, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    value = invariance_deviation(orbit, normalize=True, normalizer_window=10**6)
    assert value.item() == pytest.approx(reference_geed([orbit], normalize=True, window=10**6), rel=1e-9)
    assert widths and max(widths) <= 40 + normalizer.PAIRING_BLOCK


def test_a_window_longer_than_a_pairing_piece_keeps_pieces_of_pairing_rows(monkeypatch):
    """A window of 1500 on 700 + 1900 rows: every pair fewer than 1500 apart, from pieces of at most PAIRING_ROWS."""
    from lightning_invariance.functional import normalizer

    sizes = []
    pair_matrix = normalizer.PreparedRows.pair_matrix
    monkeypatch.setattr(
        normalizer.PreparedRows,
        "pair_matrix",
        lambda a, b: sizes.append(a.parts["rows"].shape[:2].numel()) or pair_matrix(a, b),
    )
    rows = torch.randn(2600, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    segment, first_total, first_count = normalizer.extend_segment(None, rows[:700], "euclidean", 1500)
    _, total, count = normalizer.extend_segment(segment, rows[700:], "euclidean", 1500)  # reaches back into the first
    total, count = total + first_total, count + first_count
    index = torch.arange(len(rows))
    apart = (index[:, None] - index[None, :]).abs()
    pairs = (apart > 0) & (apart < 1500)
    assert count == int(pairs.sum())
    assert total.item() == pytest.approx(float(torch.cdist(rows, rows)[pairs].sum()), rel=1e-10)
    assert max(sizes) <= normalizer.PAIRING_ROWS + normalizer.PAIRING_BLOCK  # rows of one piece's matrix


def _distance_space(features: torch.Tensor, distance: str) -> torch.Tensor:
    from lightning_invariance.functional.distances import to_distance_space

    return to_distance_space(features.unsqueeze(0), distance, apply_softmax=True)[0]


def test_kl_pairs_with_zero_probabilities():
    probs = torch.tensor([[[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    value = invariance_deviation(probs.expand(2, 3, 3), distance="kl", apply_softmax=False, normalize=True)
    assert value.item() == 0.0  # identical orbit; the normaliser is infinite (zero probabilities), not NaN


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_found_for_cosine(bad):
    orbit = torch.randn(3, 4, 5, dtype=torch.float64)
    orbit[1, 2, 3] = bad
    with pytest.raises(ValueError, match="1 of 4 samples"):
        invariance_deviation(orbit, distance="cosine")
    with pytest.warns(UserWarning, match="Skipping 1 of 4"):
        skipped = invariance_deviation(orbit, distance="cosine", nan_strategy="skip")
    assert skipped.item() == pytest.approx(reference_geed([orbit[:, [0, 1, 3]]], "cosine"), rel=1e-9)


def test_skipping_every_sample_leaves_nothing_to_average():
    orbit = torch.full((2, 3, 4), float("nan"))
    with pytest.warns(UserWarning, match="Skipping 3 of 3"):
        value = invariance_deviation(orbit, nan_strategy="skip")
    assert math.isnan(value.item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_power_of_two_scales_are_exact_and_finite(dtype: torch.dtype) -> None:
    """Each largest value scaled into [0.5, 1) by a power of two (the scale ``frexp`` gives); finite for 0, tiny,
    huge, inf and NaN values, which stay 0, below 1, below 4, inf and NaN."""
    from lightning_invariance.functional.distances import power_of_two_scale

    info = torch.finfo(dtype)
    exponents = torch.arange(math.log2(info.tiny), math.log2(info.max) - 2, dtype=torch.float64)  # to 2^(max-2)
    mantissas = torch.rand(exponents.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1
    normal = (mantissas * 2.0**exponents).to(dtype)
    scale = power_of_two_scale(normal)
    assert scale.dtype == dtype
    assert torch.equal(scale.double(), 2.0 ** -torch.frexp(normal.double()).exponent.double())
    assert ((normal * scale >= 0.5) & (normal * scale < 1)).all()
    edges = torch.tensor([0.0, -0.0, info.tiny / 4, info.max, float("inf"), float("nan")], dtype=dtype)
    scale = power_of_two_scale(edges)
    assert torch.isfinite(scale).all() and (scale > 0).all()
    assert torch.equal(torch.frexp(scale.double()).mantissa, torch.full_like(scale.double(), 0.5))  # powers of two
    scaled = edges * scale
    assert scaled[0] == 0 and scaled[1] == 0 and 0 < scaled[2] < 0.5 and 1 <= scaled[3] < 4
    assert scaled[4] == float("inf") and scaled[5].isnan()


@pytest.mark.parametrize("path", ["cpu", "accelerators"])
def test_the_fast_reductions_equal_the_plain_ones(path: str, request: pytest.FixtureRequest) -> None:
    """``largest_magnitude`` is the inf-norm and ``finite_samples`` the all-finite check, NaN and inf included."""
    if path == "accelerators":
        request.getfixturevalue("accelerator_path")
    import math

    from lightning_invariance.functional.deviation import finite_samples
    from lightning_invariance.functional.distances import largest_magnitude

    x = torch.randn(3, 7, 4, 5, generator=torch.Generator().manual_seed(0))
    x[0, 1, 2, 3], x[1, 3, 0, 0], x[2, 5, 3, 4], x[2, 6, 1, 1] = float("nan"), float("inf"), -float("inf"), -1e38
    rows = x.flatten(2)
    torch.testing.assert_close(
        largest_magnitude(rows),
        torch.linalg.vector_norm(rows, ord=math.inf, dim=-1, keepdim=True),
        equal_nan=True,
        rtol=0,
        atol=0,
    )
    plain = torch.isfinite(x).flatten(2).all(dim=2).all(dim=0)
    assert torch.equal(finite_samples(x), plain) and plain.tolist() == [True, False, True, False, True, False, True]
    assert largest_magnitude(x[:, :0].flatten(2)).shape == (3, 0, 1)  # no rows
    assert torch.equal(largest_magnitude(x.flatten(2)[..., :0]), torch.zeros(3, 7, 1))  # empty rows
