"""Variance-based invariance (Quiroga et al. 2023, "Invariance Measures for Neural Networks").

Two definitions, with ``a[g, n, u]`` the activation of unit ``u`` for input ``n`` transformed by element ``g``:

- ``"tmeasures"`` (the default; the authors' reference implementation, ``tmeasures``' ``NormalizedVarianceInvariance``
  with its default ``NoTransformation``): every activation is a unit (a feature map's every ``(c, h, w)``), and the
  measures are standard deviations with ``n - 1`` in the denominator (0 for a single value):
  ``TV_u = mean_n std_g a[g, n, u]``, ``SV_u = mean_g std_n a[g, n, u]``, ``NV_u = TV_u / SV_u``, with tmeasures'
  rules for a zero denominator (``0 / 0 = 1``, ``x / 0 = inf``); the layer's value is the mean over units.
- ``"channel_variance"`` (this package's variant): a feature-map channel averaged over space is a unit, the
  measures are population variances, and *dead* units (both variances 0: 0/0) are left out of the mean and counted.
  Blind to activations that only move within a channel.

Everything is kept as mergeable float64 ``(count, mean, M2)`` statistics, so one pass over the data gives all three,
merged across batches and processes with Chan et al.'s parallel formula.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_invariance._checks import check_orbit_features
from lightning_invariance._sync import sample_blocks
from lightning_invariance.functional.distances import exact_arithmetic

__all__ = ["DEFINITIONS", "chan_merge", "normalized_variance", "unit_activations"]

#: The definitions of the variance measures (see the module docstring).
DEFINITIONS = ("tmeasures", "channel_variance")

#: A unit whose two variances are both below this fraction of its squared mean is *dead* (0/0).
DEAD_UNIT_TOLERANCE = 1e-20


def unit_activations(orbit_features: Tensor, definition: str = "tmeasures") -> Tensor:
    """``(|G|, N, U)`` float64 unit activations of orbit features.

    ``(|G|, N)`` is one unit and ``(|G|, N, D)`` has D units. ``(|G|, N, C, ...)`` has one unit per activation
    (``"tmeasures"``) or C channels averaged over their remaining (spatial) axes (``"channel_variance"``). Complex
    features count their real and imaginary parts as units of their own.
    """
    check_orbit_features(orbit_features, min_samples=1)
    if definition not in DEFINITIONS:
        raise ValueError(f"Expected argument `definition` to be one of {DEFINITIONS} but got {definition!r}.")
    if orbit_features.is_complex():
        orbit_features = torch.view_as_real(orbit_features).movedim(-1, 2).flatten(2, 3)
    features = orbit_features.to(torch.float64)
    if features.ndim == 2:
        return features.unsqueeze(-1)
    if features.ndim == 3 or definition == "tmeasures":
        return features.flatten(2)
    return features.flatten(3).mean(dim=-1)


def column_statistics(units: Tensor) -> Tensor:
    """``(3, |G|, U)`` count, mean and M2 of each (element, unit) column over the batch's samples."""
    count = torch.full_like(units[:, 0], units.shape[1])
    mean = units.mean(dim=1)
    m2 = (units - mean.unsqueeze(1)).square_().sum(dim=1)
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


def _variance_update(orbit_features: Tensor, definition: str) -> tuple[Tensor, int, Tensor]:
    """One batch's ``(sum over samples of the orbit spread (U,), N, column statistics (3, |G|, U))``.

    The orbit spread is each sample's variance over the group (``"channel_variance"``) or standard deviation with
    ``|G| - 1`` in the denominator (``"tmeasures"``); a sample's orbit is complete in its batch. Large batches go in
    blocks of samples (:func:`~lightning_invariance._sync.sample_blocks`), merged as updates merge, so that the
    float64 temporaries stay within a block.
    """
    check_orbit_features(orbit_features, min_samples=1)
    blocks = [  # a float64 copy of the block and float64 squares of it at a time
        _block_update(orbit_features[:, block], definition) for block in sample_blocks(orbit_features, share=4)
    ]
    spread_sum, num_samples, columns = blocks[0]
    for block_spread, block_samples, block_columns in blocks[1:]:
        spread_sum, num_samples = spread_sum + block_spread, num_samples + block_samples
        columns = chan_merge(columns, block_columns)
    return spread_sum, num_samples, columns


def _block_update(orbit_features: Tensor, definition: str) -> tuple[Tensor, int, Tensor]:
    """:func:`_variance_update` of one block of samples."""
    with exact_arithmetic(orbit_features.device.type):
        units = unit_activations(orbit_features, definition)
        num_elements = units.shape[0]
        squares = (units - units.mean(dim=0)).square_().sum(dim=0)  # (N, U); Tensor.var/std over dim 0 is 16x slower
        if definition == "channel_variance":
            spread = squares / num_elements
        else:  # tmeasures: standard deviation with n - 1, and 0 for a single value
            spread = (squares / (num_elements - 1)).sqrt() if num_elements > 1 else torch.zeros_like(squares)
        return spread.sum(dim=0), units.shape[1], column_statistics(units)


def _variance_compute(
    orbit_spread_sum: Tensor, num_samples: Tensor | float, columns: Tensor, definition: str
) -> dict[str, Tensor]:
    """Per-unit and unit-averaged scores from the accumulated statistics (see the module docstring)."""
    count, mean, m2 = columns
    transformation = orbit_spread_sum / num_samples
    if definition == "channel_variance":
        sample = (m2 / count).mean(dim=0)
        tolerance = DEAD_UNIT_TOLERANCE * mean.square().mean(dim=0)
        dead = (sample <= tolerance) & (transformation <= tolerance)
        alive = ~dead
        per_unit = torch.where(alive, transformation / torch.where(alive, sample, torch.ones_like(sample)), torch.nan)
        score = per_unit[alive].mean() if alive.any() else per_unit.new_tensor(float("nan"))
    else:  # tmeasures: std with n - 1 (0 for one sample), 0/0 = 1 and x/0 = inf, mean over every unit
        sample = torch.where(count > 1, m2 / (count - 1).clamp_min(1), torch.zeros_like(m2)).sqrt().mean(dim=0)
        dead = (sample <= 0) & (transformation <= 0)
        safe = torch.where(sample > 0, sample, torch.ones_like(sample))
        per_unit = torch.where(sample > 0, transformation / safe, torch.where(dead, 1.0, math.inf))
        score = per_unit.mean()
    return {
        "normalized_variance": score,
        "transformation_variance": transformation.mean(),
        "sample_variance": sample.mean(),
        "dead_units": dead.sum().to(torch.float64),
        "num_units": torch.tensor(float(dead.numel()), dtype=torch.float64, device=columns.device),
        "per_unit_normalized_variance": per_unit,
        "per_unit_transformation_variance": transformation,
        "per_unit_sample_variance": sample,
    }


def normalized_variance(orbit_features: Tensor, definition: str = "tmeasures") -> dict[str, Tensor]:
    r"""Transformation, sample and normalised variance of orbit features (Quiroga et al. 2023).

    With ``a[g, n, u]`` the activation of unit ``u`` for input ``n`` transformed by element ``g`` and ``s`` a
    spread (``"tmeasures"``: standard deviation with ``n - 1``; ``"channel_variance"``: population variance):

    .. math::
        TV_u = \frac{1}{N} \sum_n s_g\, a[g, n, u], \qquad
        SV_u = \frac{1}{|G|} \sum_g s_n\, a[g, n, u], \qquad NV_u = TV_u / SV_u

    ``normalized_variance`` is the mean of ``NV_u`` over units. Under ``"tmeasures"`` every activation is a unit and a
    zero ``SV_u`` gives ``NV_u = 1`` when ``TV_u = 0`` and ``inf`` otherwise, as in tmeasures. Under
    ``"channel_variance"`` a feature-map channel averaged over space is a unit, and a *dead* unit (both variances 0,
    within ``1e-20`` times its squared mean) is left out of the mean (NaN if every unit is dead); a unit with
    ``SV_u = 0 < TV_u`` has ``NV_u = inf``. ``dead_units`` counts the 0/0 units of either definition.
    ``transformation_variance`` and ``sample_variance`` are means over all units.

    Args:
        orbit_features: ``(|G|, N)``, ``(|G|, N, D)`` or ``(|G|, N, C, ...)``.
        definition: ``"tmeasures"`` or ``"channel_variance"``.

    Returns:
        a dict of float64 tensors: the three unit-averaged scores, ``dead_units``, ``num_units`` and the
        ``per_unit_*`` values.

    Example:
        >>> import torch
        >>> orbit = torch.tensor([[[0.0], [2.0]], [[1.0], [3.0]]])  # 2 elements, 2 samples, 1 unit
        >>> round(float(normalized_variance(orbit)["normalized_variance"]), 4)  # tmeasures: 0.7071 / 1.4142
        0.5
        >>> scores = normalized_variance(orbit, definition="channel_variance")
        >>> scores["transformation_variance"], scores["sample_variance"], scores["normalized_variance"]
        (tensor(0.2500, dtype=torch.float64), tensor(1., dtype=torch.float64), tensor(0.2500, dtype=torch.float64))
    """
    orbit_spread_sum, num_samples, columns = _variance_update(orbit_features, definition)
    return _variance_compute(orbit_spread_sum, num_samples, columns, definition)
