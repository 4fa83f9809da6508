import random

import numpy as np
import pytest
import torch

from lightning_invariance.groups import (
    AugmentationFamily,
    ContinuousRotation,
    CyclicRotation,
    CyclicTranslation,
    Dihedral,
    Flip,
    Permutation,
    RegularAction,
    Scaling,
    SpatialAction,
)

torch.manual_seed(0)
IMAGE = torch.randn(3, 2, 7, 7)


def test_rot90_four_times_is_identity_and_orbit_layout():
    group = CyclicRotation(4)
    x = IMAGE
    for _ in range(4):
        x = group.act(x, 1)
    assert torch.equal(x, IMAGE)
    orbit = group.orbit(IMAGE)
    assert orbit.shape == (4, *IMAGE.shape)
    assert torch.equal(orbit[0], IMAGE)
    assert torch.equal(orbit[3], torch.rot90(IMAGE, 3, dims=(-2, -1)))


def test_cyclic_rotation_interpolated_elements():
    group = CyclicRotation(8)
    assert group.names[:3] == ["identity", "rot45", "rot90"]
    assert torch.equal(group.act(IMAGE, 2), torch.rot90(IMAGE, 1, dims=(-2, -1)))  # exact where it can be
    rotated = group.act(IMAGE, 1)
    assert rotated.shape == IMAGE.shape and not torch.allclose(rotated, IMAGE)
    # two 45-degree steps approximate a 90-degree one away from the corners
    twice = group.act(rotated, 1)
    centre = (slice(None), slice(None), slice(2, 5), slice(2, 5))
    assert torch.allclose(twice[centre], torch.rot90(IMAGE, 1, dims=(-2, -1))[centre], atol=1.5)


def test_dihedral_has_eight_distinct_elements_on_asymmetric_image():
    image = torch.arange(25.0).reshape(1, 5, 5) ** 1.5
    group = Dihedral(4)
    images = {tuple(group.act(image, k).flatten().tolist()) for k in range(len(group))}
    assert len(group) == 8 and len(images) == 8
    assert torch.equal(group.act(image, 4), torch.flip(image, dims=(-1,)))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
def test_dihedral_orbit_is_each_element_applied_in_order(n):
    """The orbit (the batch flipped once for all flipped elements) is ``act(x, k)`` for every ``k``, bit for bit."""
    group = Dihedral(n)
    for x in (IMAGE, torch.arange(2 * 3 * 6 * 6).reshape(2, 3, 6, 6), IMAGE[:, :, :, :7].transpose(-1, -2)):
        orbit = group.orbit(x)
        assert orbit.shape == (len(group), *x.shape)
        assert all(torch.equal(orbit[k], group.act(x, k)) for k in range(len(group)))
    with pytest.raises(ValueError, match="only when it is square"):
        group.orbit(torch.randn(2, 5, 6))


def test_flip_is_an_involution():
    for axis in ("horizontal", "vertical"):
        group = Flip(axis)
        assert torch.equal(group.act(group.act(IMAGE, 1), 1), IMAGE)
        assert not torch.equal(group.act(IMAGE, 1), IMAGE)


def test_translation_rolls_and_returns():
    group = CyclicTranslation([(0, 1), (2, -3)])
    assert group.names == ["identity", "shift+0+1", "shift+2-3"]
    assert torch.equal(group.act(IMAGE, 2), torch.roll(IMAGE, (2, -3), dims=(-2, -1)))
    seq = CyclicTranslation([(1,), (2,)], dims=(-1,))
    assert torch.equal(seq.act(torch.arange(4.0).reshape(1, 4), 1), torch.tensor([[3.0, 0.0, 1.0, 2.0]]))
    with pytest.raises(ValueError, match="added automatically"):
        CyclicTranslation([(0, 0)])


def test_continuous_families_are_seeded_and_do_not_touch_global_rng():
    state = torch.get_rng_state()
    a, b = ContinuousRotation(num_elements=5, seed=3), ContinuousRotation(num_elements=5, seed=3)
    assert a.angles == b.angles and len(a) == 5 and a.angles[0] == 0.0
    assert a.angles != ContinuousRotation(num_elements=5, seed=4).angles
    assert torch.equal(a.act(IMAGE, 2), b.act(IMAGE, 2))
    s = Scaling(num_elements=4, seed=1)
    assert all(0.8 <= f <= 1.25 for f in s.factors)
    assert torch.equal(s.act(IMAGE, 1), Scaling(num_elements=4, seed=1).act(IMAGE, 1))
    assert torch.equal(torch.get_rng_state(), state)


def test_continuous_rotation_by_90_matches_rot90():
    group = ContinuousRotation(angles=[90.0 + 1e-7])  # forces interpolation
    assert torch.allclose(group.act(IMAGE, 1), torch.rot90(IMAGE, 1, dims=(-2, -1)), atol=1e-4)


def test_permutation_group_is_repeatable():
    group = Permutation(dim=1, num_elements=5, seed=2)
    points = torch.randn(4, 10, 3)
    permuted = group.act(points, 3)
    assert torch.equal(permuted, group.act(points, 3))
    assert torch.equal(permuted.sort(dim=1).values, points.sort(dim=1).values)
    assert len({tuple(group.permutations(10)[k].tolist()) for k in range(5)}) == 5


def test_augmentation_family_repeats_and_restores_every_rng():
    def noisy(x):
        return x + torch.randn_like(x) + random.random() + float(np.random.rand())

    family = AugmentationFamily(noisy, num_elements=4, seed=11)
    torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    first = family.act(IMAGE, 2)
    assert torch.equal(first, family.act(IMAGE, 2))
    assert not torch.equal(first, family.act(IMAGE, 3))
    assert torch.equal(family.act(IMAGE, 0), IMAGE)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    assert np.array_equal(np.random.get_state()[1], np_state[1])


def test_regular_action_cycles_group_channels():
    group = CyclicRotation(4)
    action = RegularAction(group)
    features = torch.arange(8.0).reshape(1, 8)  # two fields of four channels, no spatial axes
    assert action.act(features, 1).tolist() == [[3.0, 0.0, 1.0, 2.0, 7.0, 4.0, 5.0, 6.0]]
    with pytest.raises(ValueError, match="not divisible by 4"):
        action.act(torch.randn(2, 6, 3, 3), 1)
    with pytest.raises(TypeError, match="CyclicRotation"):
        RegularAction(Dihedral(4))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("group", "x", "message"),
    [
        (CyclicRotation(4), torch.randn(2, 1, 5, 6), "only when it is square"),
        (Dihedral(4), torch.randn(2, 5, 6), "only when it is square"),
        (CyclicRotation(4), torch.randn(2, 5), r"\(N, H, W\) or \(N, C, H, W\)"),
        (Permutation(dim=3), torch.randn(2, 5), "permutes axis 3"),
    ],
)
def test_shape_errors_say_what_fits(group, x, message):
    with pytest.raises(ValueError, match=message):
        group.act(x, 1)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="positive int"):
        CyclicRotation(0)
    with pytest.raises(ValueError, match="`axis` of Flip"):
        Flip("diagonal")
    with pytest.raises(ValueError, match="added automatically"):
        ContinuousRotation(angles=[0.0, 10.0])
    with pytest.raises(IndexError, match=r"0\.\.3"):
        CyclicRotation(4).act(IMAGE, 4)
    with pytest.raises(ValueError, match="has 8 elements"):
        SpatialAction(Dihedral(4)).check_group(CyclicRotation(4))
