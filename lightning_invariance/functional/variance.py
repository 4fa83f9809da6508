"""Variance-based invariance (Quiroga et al. 2023, "Invariance Measures for Neural Networks").

Per unit (a neuron, or a feature-map channel averaged over its spatial positions):

- *transformation variance* ``TV``: the variance of the unit over an input's orbit, averaged over inputs;
- *sample variance* ``SV``: the variance of the unit over inputs, averaged over group elements;
- *normalised variance* ``NV = TV / SV``: 0 when transformations do not move the unit, 1 when they move it as much
  as changing the input does.

Variances are population variances (divided by the count, not count - 1). Everything is kept as mergeable float64
``(count, mean, M2)`` statistics, so one pass over the data gives all three, merged across batches and processes
with Chan et al.'s parallel formula.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["chan_merge", "normalized_variance", "unit_activations"]

#: A unit whose two variances are both below this fraction of its squared mean is *dead* (0/0).
DEAD_UNIT_TOLERANCE = 1e-20


def unit_activations(orbit_features: Tensor) -> Tensor:
    """``(|G|, N, U)`` float64 unit activations of orbit features.

    ``(|G|, N)`` is one unit, ``(|G|, N, D)`` has D units, and ``(|G|, N, C, ...)`` has C channels averaged over
    their remaining (spatial) axes.
    """
    if not isinstance(orbit_features, Tensor):
        raise TypeError(f"Expected `orbit_features` to be a torch.Tensor, but got {type(orbit_features).__name__}.")
    if orbit_features.ndim < 2 or orbit_features.shape[0] < 1 or orbit_features.shape[1] < 1:
        raise ValueError(
            "Expected `orbit_features` of shape (|G|, N, ...) with at least one element and one sample, but got "
            f"shape {tuple(orbit_features.shape)}."
        )
    features = orbit_features.to(torch.float64)
    if features.ndim == 2:
        return features.unsqueeze(-1)
    if features.ndim == 3:
        return features
    return features.flatten(3).mean(dim=-1)


def column_statistics(units: Tensor) -> Tensor:
    """``(3, |G|, U)`` count, mean and M2 of each (element, unit) column over the batch's samples."""
    count = torch.full_like(units[:, 0], units.shape[1])
    mean = units.mean(dim=1)
    m2 = (units - mean.unsqueeze(1)).square().sum(dim=1)
    return torch.stack([count, mean, m2])


def chan_merge(first: Tensor, second: Tensor) -> Tensor:
    """Merge two ``(3, ...)`` stacks of (count, mean, M2) statistics with Chan et al.'s parallel formula."""
    count_a, mean_a, m2_a = first
    count_b, mean_b, m2_b = second
    count = count_a + count_b
    safe = torch.where(count > 0, count, torch.ones_like(count))
    delta = mean_b - mean_a
    mean = mean_a + delta * count_b / safe
    m2 = m2_a + m2_b + delta.square() * count_a * count_b / safe
    return torch.stack([count, mean, m2])


def chan_reduce(stacked: Tensor) -> Tensor:
    """Merge a stack ``(P, 3, ...)`` of statistics gathered from P processes into one ``(3, ...)``."""
    merged = stacked[0]
    for part in stacked[1:]:
        merged = chan_merge(merged, part)
    return merged


def _variance_update(orbit_features: Tensor) -> tuple[Tensor, int, Tensor]:
    """One batch's ``(sum over samples of the orbit variance (U,), N, column statistics (3, |G|, U))``."""
    units = unit_activations(orbit_features)
    orbit_variance = units.var(dim=0, unbiased=False)  # (N, U): one row per sample, complete in this batch
    return orbit_variance.sum(dim=0), units.shape[1], column_statistics(units)


def _variance_compute(orbit_variance_sum: Tensor, num_samples: Tensor | float, columns: Tensor) -> dict[str, Tensor]:
    """Per-unit and unit-averaged variances from the accumulated statistics (see :func:`normalized_variance`)."""
    count, mean, m2 = columns
    transformation = orbit_variance_sum / num_samples
    sample = (m2 / count).mean(dim=0)
    tolerance = DEAD_UNIT_TOLERANCE * mean.square().mean(dim=0)
    dead = (sample <= tolerance) & (transformation <= tolerance)
    alive = ~dead
    per_unit = torch.where(alive, transformation / torch.where(alive, sample, torch.ones_like(sample)), torch.nan)
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=columns.device)
    return {
        "normalized_variance": per_unit[alive].mean() if alive.any() else nan,
        "transformation_variance": transformation.mean(),
        "sample_variance": sample.mean(),
        "num_dead_units": dead.sum().to(torch.float64),
        "num_units": torch.tensor(float(dead.numel()), dtype=torch.float64, device=columns.device),
        "per_unit_normalized_variance": per_unit,
        "per_unit_transformation_variance": transformation,
        "per_unit_sample_variance": sample,
    }


def normalized_variance(orbit_features: Tensor) -> dict[str, Tensor]:
    r"""Transformation, sample and normalised variance of orbit features (Quiroga et al. 2023).

    With ``a[g, n, u]`` the activation of unit ``u`` for input ``n`` transformed by element ``g``:

    .. math::
        TV_u = \frac{1}{N} \sum_n \mathrm{Var}_g\, a[g, n, u], \qquad
        SV_u = \frac{1}{|G|} \sum_g \mathrm{Var}_n\, a[g, n, u], \qquad NV_u = TV_u / SV_u

    ``normalized_variance`` is the mean of ``NV_u`` over the units that are alive; a *dead* unit (both variances 0,
    within ``1e-20`` times its squared mean: 0/0) is left out of the mean and counted in ``num_dead_units``, so a
    constant model gives NaN with every unit dead. A unit with ``SV_u = 0 < TV_u`` (it only encodes the
    transformation) has ``NV_u = inf``. ``transformation_variance`` and ``sample_variance`` are means over all units.

    Args:
        orbit_features: ``(|G|, N)``, ``(|G|, N, D)`` or ``(|G|, N, C, ...)`` (channels averaged over the rest).

    Returns:
        a dict of float64 tensors: the three unit-averaged scores, ``num_dead_units``, ``num_units`` and the
        ``per_unit_*`` values.

    Example:
        >>> import torch
        >>> orbit = torch.tensor([[[0.0], [2.0]], [[1.0], [3.0]]])  # 2 elements, 2 samples, 1 unit
        >>> scores = normalized_variance(orbit)
        >>> scores["transformation_variance"], scores["sample_variance"], scores["normalized_variance"]
        (tensor(0.2500, dtype=torch.float64), tensor(1., dtype=torch.float64), tensor(0.2500, dtype=torch.float64))
    """
    orbit_variance_sum, num_samples, columns = _variance_update(orbit_features)
    return _variance_compute(orbit_variance_sum, num_samples, columns)
