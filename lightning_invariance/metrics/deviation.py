"""TorchMetrics classes for the invariance and equivariance G-EED."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_invariance.functional.deviation import (
    DEFAULT_NORMALIZER_WINDOW,
    NAN_STRATEGIES,
    SAME_REPRESENTATION,
    _deviation_update,
    _standard_error,
    check_window,
)
from lightning_invariance.functional.distances import DISTANCES, REFERENCES, check_choice
from lightning_invariance.groups.actions import RepresentationAction
from lightning_invariance.groups.base import Group
from lightning_invariance.metrics._base import SummaryMetric
from lightning_invariance.metrics._checks import (
    add_count,
    check_group_size,
    check_labels,
    check_optional_positive,
    check_positive,
    nan_except,
    non_finite_counts,
    refuses_non_finite,
    warn_nan,
)
from lightning_invariance.metrics._normalizer import WindowNormalizer
from lightning_invariance.metrics._records import make_record, read_records

__all__ = ["EquivarianceDeviation", "InvarianceDeviation"]


class _DeviationMetric(SummaryMetric, WindowNormalizer):
    """Shared states and maths: float64 sums reduced by ``"sum"`` (the worst case by ``"max"``) and the normaliser."""

    higher_is_better = False
    plot_lower_bound = 0.0
    _compute_key = "geed"

    element_sum: Tensor
    num_samples: Tensor
    sample_sq_sum: Tensor
    max_deviation: Tensor
    pair_sum: Tensor
    pair_count: Tensor
    num_non_finite: Tensor
    class_sum: Tensor
    class_count: Tensor
    num_invalid_labels: Tensor
    sample_deviations: list[Tensor]
    valid_entries: Tensor
    entries: Tensor

    def __init__(
        self,
        num_elements: int | Group,
        distance: str,
        reference: str,
        normalize: bool,
        apply_softmax: bool,
        nan_strategy: str,
        normalizer_window: int,
        action: RepresentationAction | None,
        num_classes: int | None = None,
        keep_sample_deviations: bool = False,
        border_mask: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        num_elements = len(num_elements) if isinstance(num_elements, Group) else num_elements
        check_group_size(num_elements)
        check_choice("distance", distance, DISTANCES)
        check_choice("reference", reference, REFERENCES)
        check_choice("nan_strategy", nan_strategy, NAN_STRATEGIES)
        check_window(normalizer_window)
        check_optional_positive("num_classes", num_classes)
        if border_mask and (action is None or action.trivial):
            raise ValueError(
                "`border_mask=True` needs a non-trivial action with a spatial valid region (equivariance)."
            )
        self.num_elements = num_elements
        self.distance, self.reference, self.normalize = distance, reference, bool(normalize)
        self.apply_softmax, self.nan_strategy = bool(apply_softmax), nan_strategy
        self.normalizer_window, self.action = normalizer_window, action
        self.num_classes, self.keep_sample_deviations = num_classes, bool(keep_sample_deviations)
        self.border_mask = bool(border_mask)
        self._compute_key = "geed_normalized" if self.normalize else "geed"

        f64 = torch.float64
        self.add_state("element_sum", torch.zeros(num_elements, dtype=f64), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("sample_sq_sum", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("max_deviation", torch.zeros((), dtype=f64), dist_reduce_fx="max")
        self.add_state("num_non_finite", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self._add_normalizer_states(distance, normalizer_window)
        if num_classes is not None:
            self.add_state("class_sum", torch.zeros(num_classes, dtype=f64), dist_reduce_fx="sum")
            self.add_state("class_count", torch.zeros(num_classes, dtype=f64), dist_reduce_fx="sum")
            self.add_state("num_invalid_labels", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        if self.keep_sample_deviations:
            self.add_state("sample_deviations", [], dist_reduce_fx="cat")
        if self.border_mask:
            self.add_state("valid_entries", torch.zeros(num_elements, dtype=f64), dist_reduce_fx="sum")
            self.add_state("entries", torch.zeros((), dtype=f64), dist_reduce_fx="sum")

    def update(self, orbit_features: Tensor, labels: Tensor | None = None) -> None:
        """Add a batch of orbit features ``(|G|, N, ...)`` (element 0 the identity).

        ``labels`` ``(N,)``: the samples' classes, needed (only) when the metric was built with ``num_classes``.
        """
        if self.num_classes is not None:
            check_labels(labels, orbit_features, self.num_classes)
        elif labels is not None:
            raise ValueError("`labels` were given to a metric built without `num_classes`; pass num_classes=C.")
        batch = _deviation_update(  # "error" counts NaN/inf on the device and refuses at compute: no host sync
            orbit_features,
            self.distance,
            self.reference,
            self.apply_softmax,
            "count" if self.nan_strategy == "error" else self.nan_strategy,
            action=self.action,
            num_elements=self.num_elements,
            border_mask=self.border_mask,
        )
        self._update_normalizer(batch.identity_rows)
        # in-place updates: a plain `self.state += x` would go through nn.Module.__setattr__ on every batch
        device = self.element_sum.device
        distances = batch.distances.to(device)
        self.element_sum.add_(distances.sum(dim=1))
        self.num_samples.add_(distances.shape[1])
        per_sample = distances.mean(dim=0)  # each sample's mean distance over the group
        self.sample_sq_sum.add_(per_sample.square().sum())
        if distances.numel():
            torch.maximum(self.max_deviation, distances.max(), out=self.max_deviation)
        add_count(self.num_non_finite, batch.num_non_finite)  # a count on the features' device, or an int
        if self.num_classes is not None:
            kept_labels = labels if batch.kept is None else labels[batch.kept.to(labels.device)]
            kept_labels = kept_labels.to(self.class_sum.device, torch.long)
            in_range = (kept_labels >= 0) & (kept_labels < self.num_classes)  # checked on CPU, counted elsewhere
            self.num_invalid_labels.add_((~in_range).sum())
            index = kept_labels.clamp(0, self.num_classes - 1)
            self.class_sum.index_add_(0, index, torch.where(in_range, per_sample, 0.0))
            self.class_count.index_add_(0, index, in_range.to(per_sample.dtype))
        if self.keep_sample_deviations and per_sample.numel():  # records: float64 through any merge (_records.py)
            self.sample_deviations.append(make_record(per_sample))
        if batch.valid_entries is not None:
            self.valid_entries.add_(batch.valid_entries.to(self.valid_entries.device) * distances.shape[1])
            self.entries.add_(batch.entries * distances.shape[1])

    def _summary(self, warn: bool) -> dict[str, Tensor]:
        """Every statistic (see :meth:`compute_summary`)."""
        n = self.num_samples
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=n.device)
        empty = float(n) == 0
        if self.num_classes is not None and float(self.num_invalid_labels) > 0:
            raise ValueError(
                f"{int(self.num_invalid_labels)} of the labels given to update() were outside [0, {self.num_classes}) "
                f"(num_classes={self.num_classes}): pass labels in that range (or a larger num_classes)."
            )
        refused = refuses_non_finite(self.nan_strategy, self.num_non_finite, n, raise_error=warn)
        pair_mean = self._normalizer_mean()
        if warn and empty:
            warn_nan(f"{type(self).__name__} has seen no sample (or skipped every one): its value is NaN.")
        elif warn and self.normalize and bool(torch.isnan(pair_mean)):
            warn_nan(
                f"The normalised {type(self).__name__} needs two or more samples (pairs of different inputs) but saw "
                f"{int(n)}: its value is NaN."
            )
        per_element = self.element_sum / n if not empty else self.element_sum * float("nan")
        geed = per_element.mean()
        if warn and self.normalize and not empty and float(pair_mean) == 0:
            value = float(geed / pair_mean)
            warn_nan(f"The normalised {type(self).__name__} is {value}: {SAME_REPRESENTATION}.")
        extra: dict[str, Tensor] = {}
        if self.num_classes is not None:
            per_class = self.class_sum / self.class_count  # 0/0 = NaN for a class never seen
            extra |= {
                "per_class": per_class,
                "per_class_normalized": per_class / pair_mean,
                "class_count": self.class_count.clone(),
            }
        if self.keep_sample_deviations:
            extra["sample_deviations"] = _concatenated(self.sample_deviations, n)
        if self.border_mask:
            extra["valid_fraction"] = self.valid_entries / self.entries
        summary = extra | {
            "geed": geed,
            "geed_normalized": geed / pair_mean,
            "stderr": _standard_error(self.element_sum, self.sample_sq_sum, n),
            "max": nan if empty else self.max_deviation.clone(),
            "per_element": per_element,
            "per_element_normalized": per_element / pair_mean,
            "pair_mean": pair_mean,
            "num_samples": n.clone(),
        }
        if refused:  # every statistic would mix in NaN/inf: none is a number (the counts stay)
            summary = nan_except(summary, ("num_samples", "class_count"))
        return summary | non_finite_counts(self.nan_strategy, self.num_non_finite)


def _elements_of(action: RepresentationAction, num_elements: int | Group | None) -> int:
    """``|G|`` from ``num_elements`` or the action's group, checked against the action."""
    action_group = getattr(action, "group", None)
    if num_elements is None:
        if not isinstance(action_group, Group):
            raise ValueError(f"Pass `num_elements` (|G|): {action!r} does not say how many elements it has.")
        return len(action_group)
    count = len(num_elements) if isinstance(num_elements, Group) else num_elements
    check_positive("num_elements", count)
    if isinstance(num_elements, Group):
        try:
            action.check_group(num_elements)
        except ValueError as error:
            raise ValueError(f"`action` does not fit the group: {error}") from error
    elif isinstance(action_group, Group) and len(action_group) != count:
        raise ValueError(
            f"Expected `num_elements` to match {action!r}, which has {len(action_group)} elements, but got {count}."
        )
    return count


def _concatenated(records: list[Tensor] | Tensor, like: Tensor) -> Tensor:
    """The per-sample deviations kept as records, in order, as one float64 tensor."""
    values = [record[0] for record in read_records(records)]
    return torch.cat(values).to(like.device) if values else like.new_zeros(0)


class InvarianceDeviation(_DeviationMetric):
    r"""Invariance G-EED (Kvinge et al. 2022): how far transforming the input moves a representation.

    .. math::
        \mathrm{G\text{-}EED} = \frac{1}{|D|\,|G|} \sum_{x \in D} \sum_{g \in G} m\big(f(g.x),\, r(x)\big)

    with ``r(x)`` the orbit centroid or ``f(x)``; optionally divided by the mean ``m(f(x_i), f(x_j))`` over pairs of
    different inputs (``normalize=True``: 0 invariant, 1 as far as swapping the input). The pairs are fixed by the
    order of the samples (each with the ``normalizer_window - 1`` before it), across ``update`` calls, ``forward``,
    ``merge_state`` and processes, so the value does not depend on how the data was split into batches.

    The distances are computed in float32 or wider with autocast off (float16/bfloat16 features are widened), each
    vector scaled by a power of two first so that squares cannot overflow; sums are float64.

    As input to ``update``:
        - ``orbit_features`` (:class:`~torch.Tensor`): ``(|G|, N, ...)``, ``f(g_k . x_i)`` with the identity first;
          class scores ``(|G|, N, C)`` or labels ``(|G|, N)`` for ``kl``/``discrete``.

    As output of ``compute``:
        - the G-EED (float64 scalar), normalised with ``normalize=True``; NaN with a warning before any sample.

    :meth:`compute_summary` returns every statistic, synchronised like ``compute``: ``geed`` (raw),
    ``geed_normalized``, ``stderr`` (standard error of the raw G-EED over samples), ``max`` (the largest single
    distance), ``per_element`` and ``per_element_normalized`` (``(|G|,)``), ``pair_mean`` (the normaliser),
    ``num_samples``, ``num_skipped`` (samples left out) and ``num_non_finite`` (samples whose features held NaN/inf);
    with ``num_classes``: ``per_class``, ``per_class_normalized`` (NaN for a class never seen) and ``class_count``;
    with ``keep_sample_deviations``: ``sample_deviations``; with ``border_mask``: ``valid_fraction`` per element. It
    does not warn: every value is NaN (counts 0) before any sample.

    Args:
        num_elements: ``|G|``, the number of group elements (axis 0 of the orbit features), or the group itself.
        distance: ``"euclidean"``, ``"cosine"``, ``"kl"`` or ``"discrete"``.
        reference: ``"centroid"`` or ``"identity"``.
        normalize: make :meth:`compute` return the normalised G-EED.
        apply_softmax: for ``kl``: the features are logits (``False``: probabilities).
        nan_strategy: ``"error"``: :meth:`compute` raises when any sample's features held NaN/inf, and
            :meth:`compute_summary` gives every statistic as NaN (the samples are counted on the device, so
            ``update`` never waits for it); ``"skip"``: leave those samples out with a warning (one host-device
            synchronisation per ``update``).
        normalizer_window: the normaliser pairs each sample with the ``normalizer_window - 1`` samples before it,
            across batches (see :mod:`~lightning_invariance.functional.normalizer`).
        num_classes: also keep the G-EED per class; ``update`` then needs ``labels`` in ``[0, num_classes)`` (on the
            CPU others fail in ``update``; on accelerators, where checking would make ``update`` wait for the device,
            they are counted there and ``compute``/``compute_summary`` fail).
        keep_sample_deviations: also keep every sample's mean distance over the group (memory grows with the
            data), for histograms: a mean near 0 can hide a few large failures.
        kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = InvarianceDeviation(num_elements=2, reference="identity")
        >>> metric.update(torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]]]))
        >>> metric.compute()
        tensor(0.2500, dtype=torch.float64)
        >>> metric.compute_summary()["per_element"]
        tensor([0.0000, 0.5000], dtype=torch.float64)
    """

    def __init__(
        self,
        num_elements: int | Group,
        distance: str = "euclidean",
        reference: str = "centroid",
        normalize: bool = False,
        apply_softmax: bool = True,
        nan_strategy: str = "error",
        normalizer_window: int = DEFAULT_NORMALIZER_WINDOW,
        num_classes: int | None = None,
        keep_sample_deviations: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_elements,
            distance,
            reference,
            normalize,
            apply_softmax,
            nan_strategy,
            normalizer_window,
            None,
            num_classes,
            keep_sample_deviations,
            **kwargs,
        )


class EquivarianceDeviation(_DeviationMetric):
    r"""Equivariance G-EED: the mean distance between ``f(g.x)`` and ``rho(g) . f(x)`` for an action ``rho``.

    .. math::
        \frac{1}{|D|\,|G|} \sum_{x \in D} \sum_{g \in G} m\big(f(g.x),\, \rho(g) f(x)\big)

    As input to ``update``:
        - ``orbit_features`` (:class:`~torch.Tensor`): ``(|G|, N, ...)`` with the feature axes the action needs,
          e.g. ``(|G|, N, C, H, W)`` for feature maps.

    As output of ``compute``:
        - the G-EED (float64 scalar); :meth:`compute_summary` as in :class:`InvarianceDeviation`.

    There is no ``reference`` argument: the reference is always ``rho(g) f(x)``.

    Args:
        action: how element ``k`` acts on the representation (:class:`~lightning_invariance.groups.SpatialAction`,
            :class:`~lightning_invariance.groups.RegularAction`, ...).
        num_elements: ``|G|``, or the group; ``None`` takes it from the action's group (``SpatialAction``,
            ``RegularAction``). An action of another size raises ``ValueError``.
        border_mask: compare only the region each element leaves valid (interpolated rotations and scalings leave
            empty corners): entries outside it are zeroed in both ``f(g.x)`` and ``rho(g) f(x)``; the fraction
            compared is kept per element (``valid_fraction`` in :meth:`compute_summary`).
        distance, normalize, apply_softmax, nan_strategy, normalizer_window, num_classes,
            keep_sample_deviations, kwargs: as in :class:`InvarianceDeviation`.

    Example:
        >>> import torch
        >>> from lightning_invariance.groups import CyclicRotation, SpatialAction
        >>> group = CyclicRotation(4)
        >>> metric = EquivarianceDeviation(SpatialAction(group))
        >>> metric.update(group.orbit(torch.randn(3, 2, 5, 5)))  # the identity map is equivariant
        >>> metric.compute()
        tensor(0., dtype=torch.float64)
    """

    def __init__(
        self,
        action: RepresentationAction,
        num_elements: int | Group | None = None,
        distance: str = "euclidean",
        normalize: bool = False,
        apply_softmax: bool = True,
        nan_strategy: str = "error",
        normalizer_window: int = DEFAULT_NORMALIZER_WINDOW,
        num_classes: int | None = None,
        keep_sample_deviations: bool = False,
        border_mask: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(action, RepresentationAction):
            raise TypeError(f"Expected argument `action` to be a RepresentationAction, got {type(action).__name__}.")
        if "reference" in kwargs:
            raise ValueError(
                "EquivarianceDeviation has no `reference`: it compares f(g.x) with the action's image rho(g) f(x). "
                "For invariance with reference='identity' or 'centroid' use InvarianceDeviation."
            )
        num_elements = _elements_of(action, num_elements)
        super().__init__(
            num_elements,
            distance,
            "identity",
            normalize,
            apply_softmax,
            nan_strategy,
            normalizer_window,
            action,
            num_classes,
            keep_sample_deviations,
            border_mask,
            **kwargs,
        )
