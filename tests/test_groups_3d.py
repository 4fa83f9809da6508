"""3-D groups (SO(3), O(3), the cube, translations, E(3)), their actions on outputs, and models of known symmetry."""

import itertools
import math
import random

import pytest
import torch
from torch import nn

from lightning_invariance import EquivarianceDeviation, InvarianceDeviation
from lightning_invariance.groups import (
    CubeRotations,
    Euclidean3D,
    MatrixAction,
    Permutation,
    RigidMotions,
    Rotation3D,
    SpatialAction,
    Translation3D,
    VectorAction,
)
from lightning_invariance.testing import assert_equivariant, assert_invariant, equivariance_errors

EYE = torch.eye(3, dtype=torch.float64)


def _in(matrix, matrices) -> bool:
    return any(torch.allclose(matrix, other, atol=1e-12) for other in matrices)


# ------------------------------------------------------------------ group laws
@pytest.mark.parametrize("reflections", [False, True])
def test_cube_group_laws(reflections):
    group = CubeRotations(reflections=reflections)
    matrices = group.matrices()
    assert len(group) == (48 if reflections else 24) and len(set(group.names)) == len(group)
    assert torch.equal(matrices[0], EYE) and group.names[0] == "identity"
    for a, b in itertools.product(matrices, repeat=2):
        assert _in(a @ b, matrices)  # closed under composition
    for a in matrices:
        assert _in(a.T, matrices)  # and inverse
        assert torch.allclose(a @ a.T, EYE)
    determinants = {round(float(torch.linalg.det(a))) for a in matrices}
    assert determinants == ({-1, 1} if reflections else {1})


@pytest.mark.parametrize("reflections", [False, True])
def test_sampled_rotations_are_orthogonal_seeded_and_leave_the_global_rng(reflections):
    state = torch.get_rng_state()
    group = Rotation3D(num_elements=9, reflections=reflections, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    matrices = group.matrices()
    assert torch.equal(matrices[0], EYE)
    for k, matrix in enumerate(matrices):
        assert torch.allclose(matrix @ matrix.T, EYE, atol=1e-12)
        improper = reflections and k % 2 == 0 and k > 0
        assert torch.linalg.det(matrix).item() == pytest.approx(-1.0 if improper else 1.0, abs=1e-12)
    assert torch.equal(Rotation3D(9, reflections, seed=3).matrices(), matrices)
    assert not torch.equal(Rotation3D(9, reflections, seed=4).matrices(), matrices)


def test_sampled_rotations_are_uniform():
    # Haar measure: E[R] = 0 and E[R_ij^2] = 1/3; 4000 samples give standard errors of about 0.01
    matrices = Rotation3D(num_elements=4001, seed=0).matrices()[1:]
    assert matrices.mean(0).abs().max() < 0.04
    assert (matrices.square().mean(0) - 1 / 3).abs().max() < 0.03


def test_every_element_acts_as_its_matrix_and_translation():
    points = torch.randn(4, 6, 3, dtype=torch.float64)
    for group in (Rotation3D(5, True), CubeRotations(), Translation3D(5, scale=2.0), Euclidean3D(5, reflections=True)):
        rotations, shifts = group.matrices(), group.translations()
        assert torch.equal(shifts[0], torch.zeros(3, dtype=torch.float64))
        for k in range(len(group)):
            expected = torch.empty_like(points)
            for n, p, i in itertools.product(range(4), range(6), range(3)):  # a plain loop, as a reference
                expected[n, p, i] = sum(rotations[k, i, j] * points[n, p, j] for j in range(3)) + shifts[k, i]
            assert torch.allclose(group.act(points, k), expected, atol=1e-12), (group, k)


def test_euclidean_motions_keep_pairwise_distances():
    points = torch.randn(3, 7, 3, dtype=torch.float64)
    group = Euclidean3D(num_elements=6, scale=5.0, reflections=True)
    for k in range(len(group)):
        assert torch.allclose(torch.cdist(group.act(points, k), group.act(points, k)), torch.cdist(points, points))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Rotation3D(0), "num_elements"),
        (lambda: Translation3D(3, scale=-1.0), "scale"),
        (lambda: Rotation3D(3).act(torch.randn(2, 5, 2), 1), r"\(N, \.\.\., 3\)"),
        (lambda: VectorAction(Permutation()), "matrix per element"),
        (lambda: VectorAction(Rotation3D(3)).act(torch.randn(2, 4), 1), "3-D vectors"),
        (lambda: MatrixAction(CubeRotations(), torch.zeros(3, 4, 4)), "one square matrix per element"),
    ],
)
def test_clear_errors(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


# ------------------------------------------------------------------ models of known symmetry
class PairwiseEnergy(nn.Module):
    """A sum over pairs of a function of the distance: E(3)- and permutation-invariant; forces are -dE/dpos."""

    def forward(self, points):
        difference = points[:, :, None] - points[:, None, :]
        distances = (difference.square().sum(-1) + 1e-12).sqrt()
        pairs = torch.exp(-distances) * (1 - torch.eye(points.shape[1], dtype=points.dtype))
        return pairs.sum((1, 2))[:, None] / 2

    def forces(self, points):
        with torch.enable_grad():
            points = points.detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(self(points).sum(), points)
        return -gradient


class DeepSet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.phi, self.rho = nn.Sequential(nn.Linear(3, 16), nn.Tanh()), nn.Linear(16, 4)

    def forward(self, points):
        return self.rho(self.phi(points).sum(1))


class FlatMLP(nn.Module):
    def __init__(self, num_points: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * num_points, 32), nn.Tanh(), nn.Linear(32, 4))

    def forward(self, points):
        return self.net(points)


def _normalised(model, group, points, action=None) -> float:
    orbit = torch.stack([model(group.act(points, k)).detach() for k in range(len(group))])
    if action is None:
        metric = InvarianceDeviation(group, normalize=True)
    else:
        metric = EquivarianceDeviation(action, normalize=True)
    metric.update(orbit)
    return metric.compute().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exactly_invariant_models_measure_zero(dtype):
    torch.manual_seed(0)
    points = torch.randn(64, 8, 3, dtype=dtype)
    bound = 1e-5 if dtype == torch.float32 else 1e-10
    energy, deepset = PairwiseEnergy(), DeepSet().to(dtype)
    for group in (Euclidean3D(8, scale=3.0, reflections=True), CubeRotations(True), Permutation(dim=1, num_elements=8)):
        assert _normalised(energy, group, points) < bound, group
    assert _normalised(deepset, Permutation(dim=1, num_elements=8), points) < bound
    forces = energy.forces
    assert _normalised(forces, Rotation3D(8, reflections=True), points, VectorAction(Rotation3D(8, True))) < bound
    assert _normalised(forces, Translation3D(8, scale=3.0), points) < bound  # forces do not move with a shift


def test_models_that_are_not_invariant_measure_clearly_above_zero():
    torch.manual_seed(0)
    points = torch.randn(64, 8, 3)
    mlp = FlatMLP()
    assert _normalised(mlp, Rotation3D(8), points) > 0.1
    assert _normalised(mlp, Permutation(dim=1, num_elements=8), points) > 0.1
    assert _normalised(DeepSet(), Translation3D(8, scale=2.0), points) > 0.1  # uncentred coordinates


def test_vector_equivariance_equals_a_loop_reference():
    torch.manual_seed(0)
    points = torch.randn(12, 5, 3, dtype=torch.float64)
    group = Rotation3D(6, seed=1)
    energy = PairwiseEnergy()
    rotations = group.matrices()
    orbit = torch.stack([energy.forces(group.act(points, k)) for k in range(len(group))])
    orbit[:, :3] += 0.01 * torch.randn(6, 3, 5, 3, dtype=torch.float64)  # some deviation to measure
    metric = EquivarianceDeviation(VectorAction(group))
    metric.update(orbit)
    total = 0.0
    for k, n in itertools.product(range(len(group)), range(12)):
        squared = 0.0
        for p, i in itertools.product(range(5), range(3)):
            moved = sum(rotations[k, i, j].item() * orbit[0, n, p, j].item() for j in range(3))
            squared += (orbit[k, n, p, i].item() - moved) ** 2
        total += math.sqrt(squared)
    assert metric.compute().item() == pytest.approx(total / (len(group) * 12), rel=1e-10)


def test_matrix_action_checks_irreps_like_outputs():
    group = CubeRotations(reflections=True)
    # scalar + vector (l=0 + l=1) output: the energy and the total force
    energy = PairwiseEnergy()

    def scalar_and_vector(points):
        return torch.cat([energy(points), energy.forces(points)[:, 0]], dim=1)

    action = MatrixAction(group, lambda r: torch.block_diag(torch.ones(1, 1, dtype=r.dtype), r))
    points = torch.randn(16, 6, 3, dtype=torch.float64)
    assert_equivariant(scalar_and_vector, group, action, points)
    assert _normalised(scalar_and_vector, group, points, action) < 1e-10


# ------------------------------------------------------------------ assertion helpers
def test_assert_invariant_passes_and_fails_with_the_worst_element_and_input():
    torch.manual_seed(0)
    points = torch.randn(16, 8, 3)
    errors = assert_invariant(PairwiseEnergy(), Euclidean3D(6, scale=2.0), points)
    assert errors.absolute.shape == (6, 16) and errors.relative.dtype == torch.float64
    mlp = FlatMLP()
    with pytest.raises(AssertionError, match=r"not invariant .*Worst: element 'rot\d' \(index \d\) on output row \d+"):
        assert_invariant(mlp, Rotation3D(4), points)
    found = equivariance_errors(mlp, Rotation3D(4), points)
    k, n = found.worst()
    assert found.relative[k, n] == found.relative.max() and k > 0
    assert bool((found.relative[0] == 0).all())  # the identity never deviates


def test_tolerances_follow_the_dtype_and_can_be_overridden():
    torch.manual_seed(0)
    points = torch.randn(8, 5, 3, dtype=torch.float64)
    energy = PairwiseEnergy()
    assert_invariant(energy, Rotation3D(4), points)  # float64: 1e-10 relative

    def noisy(x):
        return energy(x) * (1 + 1e-7 * x[:, :1, 0])  # breaks invariance at 1e-7

    with pytest.raises(AssertionError, match="rtol=1e-10"):
        assert_invariant(noisy, Rotation3D(4), points)
    assert_invariant(noisy, Rotation3D(4), points, rtol=1e-5)
    assert_invariant(noisy, Rotation3D(4), points.float())  # float32 tolerances (1e-4) admit it


def test_forces_equivariance_and_output_selection():
    torch.manual_seed(0)
    points = torch.randn(8, 6, 3, dtype=torch.float64)
    energy = PairwiseEnergy()
    group = Rotation3D(8, reflections=True)

    def energy_and_forces(x):
        return {"energy": energy(x), "forces": energy.forces(x)}

    assert_invariant(energy_and_forces, group, points, output=lambda out: out["energy"])
    assert_equivariant(energy_and_forces, group, VectorAction(group), points, output=lambda out: out["forces"])
    with pytest.raises(AssertionError, match="equivariant under VectorAction"):
        assert_equivariant(lambda x: energy.forces(x) + 0.1, group, VectorAction(group), points)
    with pytest.raises(TypeError, match="pass `output="):
        assert_invariant(energy_and_forces, group, points)
    positions = SpatialAction(Euclidean3D(4, seed=2))
    assert_equivariant(lambda x: x * 1.0, Euclidean3D(4, seed=2), positions, points)  # positions move with E(3)


def test_helpers_leave_the_global_rngs_alone():
    torch.manual_seed(0)
    random.seed(0)
    before = torch.get_rng_state(), random.getstate()
    assert_invariant(PairwiseEnergy(), Rotation3D(4), torch.ones(2, 3, 3, dtype=torch.float64))
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]


# ------------------------------------------------------------------ against e3nn's own check
@pytest.mark.parametrize("broken", [False, True])
def test_max_error_equals_e3nn_equivariance_error(broken):
    """e3nn's ``equivariance_error`` draws one rotation from the global RNG: we draw the same one, as a group."""
    o3 = pytest.importorskip("e3nn.o3")
    from e3nn.util.test import equivariance_error

    irreps_out = o3.Irreps("1x0e + 1x1o + 1x2e")

    def harmonics(pos):  # (N, P, 3) -> (N, 9): exactly equivariant, unless broken
        out = o3.spherical_harmonics(irreps_out, pos, normalize=False).sum(-2)
        return out + 0.05 * pos[..., :1].sum(-2) if broken else out

    points = torch.randn(6, 5, 3, dtype=torch.float64)
    torch.manual_seed(7)
    theirs = equivariance_error(
        harmonics, [points], ["cartesian_points"], [irreps_out], do_parity=False, do_translation=False
    )[(0, False)].item()
    torch.manual_seed(7)
    group = RigidMotions(torch.stack([EYE, o3.rand_matrix(dtype=torch.float64)]))
    ours = equivariance_errors(harmonics, group, points, MatrixAction(group, irreps_out.D_from_matrix))
    # e3nn rounds its reported error to float32 (0.58487272 vs our float64 0.58487271); equal to that rounding
    assert ours.absolute.max().item() == pytest.approx(theirs, rel=1e-6, abs=1e-13)
    assert (theirs > 1e-3) == broken


@pytest.mark.parametrize(
    "group", [Rotation3D(6, reflections=True), Translation3D(6, scale=2.0), Euclidean3D(6, reflections=True)]
)
def test_sampled_groups_compose_and_invert_as_rigid_motions(group):
    """Acting twice is the motion (R_b R_a, t_a R_b^T + t_b); acting with (R^T, -t R) undoes an element."""
    points = torch.randn(3, 5, 3, dtype=torch.float64)
    rotations, shifts = group.matrices(), group.translations()
    for a, b in itertools.product(range(len(group)), repeat=2):
        twice = group.act(group.act(points, a), b)
        composed = points @ (rotations[b] @ rotations[a]).T + shifts[a] @ rotations[b].T + shifts[b]
        assert torch.allclose(twice, composed, atol=1e-12)
    for k in range(len(group)):
        inverse = RigidMotions(
            torch.stack([EYE, rotations[k].T]), torch.stack([torch.zeros(3), -shifts[k] @ rotations[k]])
        )
        assert torch.allclose(inverse.act(group.act(points, k), 1), points, atol=1e-12)
