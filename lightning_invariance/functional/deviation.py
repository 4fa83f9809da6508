"""G-EED: the empirical equivariance deviation of orbit features (Kvinge et al., NeurIPS 2022)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Hashable
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_invariance._checks import check_orbit_features
from lightning_invariance._sync import sample_blocks
from lightning_invariance.functional.distances import (
    DISTANCES,
    REFERENCES,
    check_choice,
    exact_arithmetic,
    orbit_reference,
    per_sample_distance,
    to_distance_space,
)
from lightning_invariance.functional.normalizer import DEFAULT_NORMALIZER_WINDOW, window_pair_sums
from lightning_invariance.groups.actions import RepresentationAction

__all__ = [
    "DEFAULT_NORMALIZER_WINDOW",
    "NAN_STRATEGIES",
    "SAME_REPRESENTATION",
    "equivariance_deviation",
    "finite_samples",
    "invariance_deviation",
    "screen_non_finite",
]

NAN_STRATEGIES = ("error", "skip")
#: Why a normalised score is NaN or inf where the mean distance between different inputs is 0.
SAME_REPRESENTATION = (
    "every pair of different inputs has the same representation (their mean distance, the normaliser, is 0: a dead "
    "or constant layer), so no score relative to the differences between inputs (or, for a dead layer, to the "
    "representation's size) measures invariance: the normalised G-EED is NaN (0/0) where the transformations move "
    "nothing and inf where they do"
)


class DeviationBatch(NamedTuple):
    """What one batch adds to a deviation metric."""

    #: ``(|G|, N)`` float64 distances of the samples kept.
    distances: Tensor
    #: ``(N, ...)`` the kept samples' untransformed representations in distance space, for the normaliser's pairs.
    identity_rows: Tensor
    #: Which samples were kept (``None``: all of them).
    kept: Tensor | None
    #: Samples with NaN/inf features: those skipped, or (``nan_strategy="count"``) a count on the device of those kept.
    num_non_finite: Tensor | int = 0
    #: With a border mask: ``(|G|,)`` valid entries per sample of each element, and the entries per sample.
    valid_entries: Tensor | None = None
    entries: int = 0


def finite_samples(orbit_features: Tensor) -> Tensor:
    """``(N,)``: which samples have finite features for every element of ``(|G|, N, ...)`` (computed on the device)."""
    if not (orbit_features.is_floating_point() or orbit_features.is_complex()):
        return torch.ones(orbit_features.shape[1], dtype=torch.bool, device=orbit_features.device)
    if orbit_features.is_complex() or orbit_features.ndim == 2 or 0 in orbit_features.shape:
        finite = torch.isfinite(orbit_features)
        return (finite.flatten(2).all(dim=2) if finite.ndim > 2 else finite).all(dim=0)
    flat = orbit_features.flatten(2)  # NaN and inf reach the largest or smallest value: two fast reductions
    return (torch.isfinite(flat.amax(dim=2)) & torch.isfinite(flat.amin(dim=2))).all(dim=0)


def drop_non_finite(orbit_features: Tensor, nan_strategy: str) -> tuple[Tensor, int, Tensor | None]:
    """The samples whose whole orbit is finite, how many were left out, and which were kept (``None``: all).

    ``nan_strategy="error"`` raises instead of leaving samples out; ``"skip"`` warns.
    """
    keep = finite_samples(orbit_features)
    num_bad = int((~keep).sum())
    if num_bad == 0:
        return orbit_features, 0, None
    if nan_strategy == "error":
        raise ValueError(
            f"`orbit_features` holds NaN or infinite values for {num_bad} of {keep.numel()} samples. Fix the model or "
            "inputs, or pass nan_strategy='skip' to leave those samples out with a warning."
        )
    warnings.warn(f"Skipping {num_bad} of {keep.numel()} samples whose features are NaN or infinite.", stacklevel=3)
    return orbit_features[:, keep], num_bad, keep


def screen_non_finite(orbit_features: Tensor, nan_strategy: str) -> tuple[Tensor, Tensor | int]:
    """The samples a metric measures, and how many held NaN/inf.

    ``"skip"``: the finite samples and how many were left out, with a warning (one host sync). ``"error"``: every
    sample and a count on the device (no host sync); the metric refuses at ``compute()`` when it is not 0.
    """
    if nan_strategy == "skip":
        kept, num_skipped, _ = drop_non_finite(orbit_features, "skip")
        return kept, num_skipped
    return orbit_features, (~finite_samples(orbit_features)).sum()


def _deviation_update(
    orbit_features: Tensor,
    distance: str,
    reference: str,
    apply_softmax: bool = True,
    nan_strategy: str = "error",
    action: RepresentationAction | None = None,
    num_elements: int | None = None,
    border_mask: bool = False,
) -> DeviationBatch:
    """Per-element, per-sample distances ``m(f(g.x), r_g(x))`` of one batch, and the rows the normaliser pairs.

    ``distances`` is ``(|G|, N)`` float64 with samples holding non-finite features left out
    (``nan_strategy='skip'``); ``identity_rows`` are the untransformed inputs' representations ``f(x_i)`` in distance
    space. With ``border_mask`` (equivariance under an action with valid masks, such as a ``SpatialAction`` of an
    interpolated rotation), entries outside element ``g``'s valid region are zeroed in both ``f(g.x)`` and
    ``rho(g) f(x)``, and the normaliser compares the region valid for every element. Everything runs with autocast
    off, in float32 or wider, whatever the features' dtype.

    ``nan_strategy="count"`` (what the metrics do for ``"error"``) keeps every sample and counts on the device those
    with NaN/inf features, with no host sync; the caller refuses the values later. ``"error"`` and ``"skip"`` read
    the check on the host (one sync per batch).
    """
    check_orbit_features(orbit_features, num_elements)
    check_choice("distance", distance, DISTANCES)
    check_choice("reference", reference, REFERENCES)
    check_choice("nan_strategy", nan_strategy, (*NAN_STRATEGIES, "count"))
    if action is not None and not action.trivial and reference != "identity":
        raise ValueError(
            f"reference={reference!r} is defined for invariance only; with a non-trivial action {action!r} the "
            "reference is the untransformed representation moved by the action: use reference='identity'."
        )
    with exact_arithmetic(orbit_features.device.type):
        masks = _border_masks(orbit_features, action, distance) if border_mask else None
        if orbit_features.shape[1] == 0:  # an empty batch adds nothing
            empty = orbit_features.new_zeros((orbit_features.shape[0], 0), dtype=torch.float64)
            return DeviationBatch(empty, empty[0], None)
        orbit, num_skipped, kept, non_finite = orbit_features, 0, None, 0
        class_scores = distance in ("kl", "discrete")  # small, and argmax or a probability check hides NaN
        if class_scores and nan_strategy == "count":
            non_finite = (~finite_samples(orbit)).sum()
        elif class_scores:
            orbit, num_skipped, kept = drop_non_finite(orbit, nan_strategy)
        distances, space = _distances(orbit, distance, reference, apply_softmax, action, masks)
        # a NaN or inf feature makes its sample's distances non-finite: only then look at every feature value
        if not class_scores and nan_strategy == "count":  # distances are >= 0: a sum is finite iff each term is
            sample_sums = distances.sum(dim=0)
            non_finite = torch.isnan(sample_sums - sample_sums).sum()  # x - x: NaN iff x is NaN or inf
        elif not class_scores and not bool(torch.isfinite(distances).all()):
            orbit, num_skipped, kept = drop_non_finite(orbit, nan_strategy)
            if num_skipped:
                distances, space = _distances(orbit, distance, reference, apply_softmax, action, masks)
        identity_rows = space[0] if masks is None else space[0] * masks.prod(dim=0)
    batch = DeviationBatch(distances, identity_rows, kept, non_finite if nan_strategy == "count" else num_skipped)
    if masks is None:
        return batch
    return batch._replace(valid_entries=masks.sum(dim=1).to(torch.float64), entries=masks.shape[1])


def _border_masks(orbit: Tensor, action: RepresentationAction | None, distance: str) -> Tensor:
    """``(|G|, D)`` 0/1 masks of the entries of the flattened features that element ``g`` leaves valid."""
    if action is None or action.trivial:
        raise ValueError(
            "border_mask=True compares the valid region of rho(g) f(x), so it needs a spatial action (e.g. "
            "SpatialAction(ContinuousRotation(...))) on feature maps; for invariance there is no region to align."
        )
    if distance not in ("euclidean", "cosine"):
        raise ValueError(
            f"border_mask=True needs distance 'euclidean' or 'cosine' (on feature maps), not {distance!r}."
        )
    dtype = orbit.dtype if orbit.is_floating_point() else torch.get_default_dtype()
    build = _valid_masks if isinstance(action, Hashable) else _valid_masks.__wrapped__  # a user's action may not hash
    return build(action, orbit.shape[0], tuple(orbit.shape[2:]), orbit.device, dtype)


@functools.lru_cache(maxsize=16)
def _valid_masks(
    action: RepresentationAction, num_elements: int, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> Tensor:
    """The masks of :func:`_border_masks`, built once per action, shape and device.

    Every chunk of a layer has the same shape: building them (an interpolation per element, on the CPU) and copying
    them to the device (a copy the host waits for) once per measurement rather than once per update.
    """
    masks = []
    for k in range(num_elements):
        mask = action.valid_mask(k, shape)
        full = torch.ones(shape) if mask is None else mask
        masks.append(full.expand(shape).reshape(-1))
    return torch.stack(masks).to(device, dtype)


def _distances(
    orbit: Tensor,
    distance: str,
    reference: str,
    apply_softmax: bool,
    action: RepresentationAction | None,
    masks: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(|G|, N)`` distances to the reference (or to the action's image of ``f(x)``), and the distance space.

    Large orbits go in blocks of samples (:func:`~lightning_invariance._sync.sample_blocks`): each block's
    reference and distances are computed together, so no temporary is larger than a block.
    """
    space = to_distance_space(orbit, distance, apply_softmax)
    equivariant = action is not None and not action.trivial
    num_elements = space.shape[0]
    rows = []
    for block in sample_blocks(space):
        part = space[:, block]
        if equivariant:
            moved = _moved(orbit[0, block], action, num_elements)
            target = to_distance_space(moved, distance, apply_softmax)
        else:
            target = orbit_reference(part, distance, reference)
        if masks is not None:  # (|G|, D) over the flattened features
            part, target = part * masks.unsqueeze(1), target * masks.unsqueeze(1)
        rows.append(per_sample_distance(part, target, distance))
    return rows[0] if len(rows) == 1 else torch.cat(rows, dim=1), space


def _moved(features: Tensor, action: RepresentationAction, num_elements: int) -> Tensor:
    """``rho(g_k) f(x)`` for every element ``k``, stacked as ``(|G|, n, ...)``."""
    images = []
    for k in range(num_elements):
        image = action.act(features, k)
        if image.shape != features.shape:
            raise ValueError(
                f"{action!r} changed the representation's shape from {tuple(features.shape[1:])} to "
                f"{tuple(image.shape[1:])}; an action must map a representation to one of the same shape."
            )
        images.append(image)
    return torch.stack(images)


def check_window(normalizer_window: object) -> None:
    """Accept an int of at least 2 as the normaliser's window."""
    if not isinstance(normalizer_window, int) or isinstance(normalizer_window, bool) or normalizer_window < 2:
        raise ValueError(
            f"Expected argument `normalizer_window` to be an int >= 2 (samples paired with the ones before them), "
            f"but got {normalizer_window!r}."
        )


def _deviation_compute(
    element_sum: Tensor, num_samples: Tensor, pair_sum: Tensor, pair_count: Tensor, normalize: bool
) -> Tensor:
    """G-EED from the sums: mean distance over samples and elements, optionally over the mean pair distance."""
    if float(num_samples) == 0:
        warnings.warn("The G-EED of no sample (an empty batch, or every sample skipped) is NaN.", stacklevel=3)
        return torch.tensor(float("nan"), dtype=torch.float64, device=element_sum.device)
    geed = element_sum.sum() / (num_samples * element_sum.numel())
    if not normalize:
        return geed
    if float(pair_count) == 0:
        warnings.warn(
            "The normalised G-EED needs at least one batch of two or more samples (pairs of different inputs); "
            "returning NaN.",
            stacklevel=3,
        )
        return torch.tensor(float("nan"), dtype=torch.float64, device=element_sum.device)
    pair_mean = pair_sum / pair_count
    if float(pair_mean) == 0:
        value = float(geed / pair_mean)
        warnings.warn(f"The normalised G-EED is {value}: {SAME_REPRESENTATION}.", RuntimeWarning, stacklevel=3)
    return geed / pair_mean


def _standard_error(element_sum: Tensor, sample_sq_sum: Tensor, num_samples: Tensor) -> Tensor:
    """Standard error of the mean of the per-sample deviations ``d_i = mean_g m(...)``."""
    n = float(num_samples)
    if n < 2:
        return torch.tensor(float("nan"), dtype=torch.float64, device=element_sum.device)
    mean = element_sum.sum() / (element_sum.numel() * n)
    variance = ((sample_sq_sum - n * mean**2) / (n - 1)).clamp_min(0.0)
    return (variance / n).sqrt()


def invariance_deviation(
    orbit_features: Tensor,
    distance: str = "euclidean",
    reference: str = "centroid",
    normalize: bool = False,
    apply_softmax: bool = True,
    nan_strategy: str = "error",
    normalizer_window: int = DEFAULT_NORMALIZER_WINDOW,
) -> Tensor:
    r"""Invariance G-EED of orbit features: how far transforming the input moves the representation.

    .. math::
        \mathrm{G\text{-}EED} = \frac{1}{|D|\,|G|} \sum_{x \in D} \sum_{g \in G} m\big(f(g.x),\, r(x)\big),
        \qquad r(x) = \tfrac{1}{|G|} \textstyle\sum_h f(h.x) \ \text{(centroid)} \ \text{or}\ f(x) \ \text{(identity)}

    With ``normalize=True`` it is divided by the mean ``m(f(x_i), f(x_j))`` over pairs of different samples, so 0
    means invariant and 1 means a transformation moves a representation as far as swapping the input.

    Args:
        orbit_features: ``(|G|, N, ...)``: ``f(g_k . x_i)`` for every element (identity first) and sample.
        distance: ``"euclidean"``, ``"cosine"`` (``1 - cos``), ``"kl"`` (``KL(p_g || r)`` on class distributions)
            or ``"discrete"`` (1 where the predicted label differs).
        reference: ``"centroid"`` (the orbit mean; the most frequent label for ``discrete``) or ``"identity"``.
        normalize: divide by the mean distance between different inputs.
        apply_softmax: for ``kl``, treat the features as logits; ``False`` when they already are probabilities.
        nan_strategy: ``"error"`` on NaN/inf features, or ``"skip"`` such samples with a warning.
        normalizer_window: the normaliser pairs each sample with the ``normalizer_window - 1`` samples before it
            (every pair of a batch of at most that many samples); see
            :mod:`~lightning_invariance.functional.normalizer`.

    Example:
        >>> import torch
        >>> orbit = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]]])  # |G| = 2, N = 2
        >>> invariance_deviation(orbit, reference="identity")
        tensor(0.2500, dtype=torch.float64)
        >>> invariance_deviation(orbit, distance="cosine")
        tensor(0., dtype=torch.float64)
    """
    batch = _deviation_update(orbit_features, distance, reference, apply_softmax, nan_strategy)
    return _batch_deviation(batch, distance, normalize, normalizer_window)


def equivariance_deviation(
    orbit_features: Tensor,
    action: RepresentationAction,
    distance: str = "euclidean",
    normalize: bool = False,
    apply_softmax: bool = True,
    nan_strategy: str = "error",
    normalizer_window: int = DEFAULT_NORMALIZER_WINDOW,
    border_mask: bool = False,
) -> Tensor:
    r"""Equivariance G-EED: the mean distance between ``f(g.x)`` and ``rho(g) . f(x)``.

    .. math::
        \frac{1}{|D|\,|G|} \sum_{x \in D} \sum_{g \in G} m\big(f(g.x),\, \rho(g) f(x)\big)

    ``orbit_features`` keeps its feature axes (``(|G|, N, C, H, W)`` for feature maps) because the action ``rho``
    needs them; distances are then taken on the flattened features. A trivial action gives the invariance G-EED
    with the identity reference. With ``border_mask=True`` only the region each element leaves valid is compared
    (interpolated rotations and scalings leave empty corners): entries outside it are zeroed in both representations,
    and the normaliser compares the region valid for every element. Other arguments as in
    :func:`invariance_deviation`.

    Example:
        >>> import torch
        >>> from lightning_invariance.groups import CyclicRotation, SpatialAction
        >>> group = CyclicRotation(4)
        >>> maps = torch.randn(3, 2, 5, 5)
        >>> orbit = group.orbit(maps)  # the identity model is exactly equivariant
        >>> equivariance_deviation(orbit, SpatialAction(group))
        tensor(0., dtype=torch.float64)
    """
    if not isinstance(action, RepresentationAction):
        raise TypeError(f"Expected `action` to be a RepresentationAction, but got {type(action).__name__}.")
    batch = _deviation_update(
        orbit_features, distance, "identity", apply_softmax, nan_strategy, action=action, border_mask=border_mask
    )
    return _batch_deviation(batch, distance, normalize, normalizer_window)


def _batch_deviation(batch: DeviationBatch, distance: str, normalize: bool, normalizer_window: int) -> Tensor:
    """The G-EED of one batch (the functional forms)."""
    check_window(normalizer_window)
    distances = batch.distances
    pair_sum, pair_count = window_pair_sums(batch.identity_rows, distance, normalizer_window)
    num_samples = torch.tensor(float(distances.shape[1]), dtype=torch.float64, device=distances.device)
    pair_count = torch.tensor(float(pair_count), dtype=torch.float64, device=distances.device)
    return _deviation_compute(distances.sum(dim=1), num_samples, pair_sum, pair_count, normalize)
