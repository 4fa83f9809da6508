"""From each layer's computed metrics to the values InvarianceMonitor logs, and the names it logs them under.

A logged name is ``<prefix>/<layer>/<score>``, ending in ``/<dataloader>`` when several dataloaders are measured
(its name from ``dataloaders={name: index}``, or ``dataloader_idx_<i>``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import Tensor

from lightning_invariance.callbacks._scores import logged_keys

__all__ = ["Measurement", "Naming", "normalizing_index", "read_scores"]

#: The summary entry holding the per-class values of a score that has them.
PER_CLASS_KEYS = {"geed": "per_class", "geed_normalized": "per_class_normalized"}
#: The summary entry holding the per-element values of a score that has them.
PER_ELEMENT_KEYS = {"geed": "per_element", "geed_normalized": "per_element_normalized"}


@dataclass(frozen=True)
class Naming:
    """How the callback names what it logs."""

    prefix: str
    dataloader_names: Mapping[int, str]

    def label(self, index: int, indices: Sequence[int]) -> str:
        """How dataloader ``index`` ends the names: its name, its index when there are several, or nothing."""
        if index in self.dataloader_names:
            return self.dataloader_names[index]
        return f"dataloader_idx_{index}" if len(indices) > 1 else ""

    def name(self, layer: str, score: str, label: str = "") -> str:
        return f"{self.prefix}/{layer}/{score}" + (f"/{label}" if label else "")


@dataclass
class Measurement:
    """One measurement's logged values, each name's ``[dataloader, layer, score]``, and what went wrong."""

    values: dict[str, float] = field(default_factory=dict)
    keys: dict[str, list[str]] = field(default_factory=dict)
    #: per-sample deviations per histogram series (normalised when the layer's normaliser is known)
    deviations: dict[str, list[float]] = field(default_factory=dict)
    #: layer -> (dataloader index, inputs with NaN/inf features)
    non_finite: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: names whose value is NaN, not because of non-finite features: for lack of data, or equal representations
    nan_names: list[str] = field(default_factory=list)
    #: layer -> dataloader index where every measured input had the same representation (normaliser 0)
    same_representation: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, value: float, label: str, layer: str, score: str) -> None:
        self.values[name], self.keys[name] = value, [label, layer, score]


def normalizing_index(
    normalize_by: str | int | None, dataloader_names: Mapping[int, str], indices: Sequence[int]
) -> int | None:
    """The dataloader index of ``normalize_by`` (a name or an index), checked against the measured ones."""
    if normalize_by is None:
        return None
    by_name = {name: index for index, name in dataloader_names.items()}
    index = by_name.get(normalize_by, normalize_by) if isinstance(normalize_by, str) else normalize_by
    if index not in indices:
        raise MisconfigurationException(
            f"InvarianceMonitor(normalize_by={normalize_by!r}) must name a measured dataloader: one of "
            f"{[dataloader_names.get(i, i) for i in indices]}."
        )
    return index  # type: ignore[return-value]


def read_scores(
    computed: Mapping[tuple[int, str], dict[str, Tensor]],
    indices: Sequence[int],
    layers: Sequence[str],
    scores: Sequence[str],
    naming: Naming,
    reference: int | None = None,
    element_names: Sequence[str] | None = None,
) -> Measurement:
    """The logged values of every (dataloader, layer); ``reference``: the dataloader whose scale normalises all.

    ``element_names`` also logs per-element values, ``<score>/<element>``.
    """
    out = Measurement()
    for index in indices:
        label = naming.label(index, indices)
        for layer in layers:
            result = dict(computed[(index, layer)])
            non_finite = int(result.pop("non_finite"))
            if non_finite:
                out.non_finite[layer] = (index, non_finite)
            scale = result["pair_mean"] if reference is None else computed[(reference, layer)]["pair_mean"]
            result["geed_normalized"] = result["geed"] / scale
            result["per_element_normalized"] = result["per_element"] / scale
            if "per_class" in result:
                result["per_class_normalized"] = result["per_class"] / scale
            before = len(out.values)
            for score in scores:
                for key in logged_keys(score):
                    if key in result:
                        out.add(naming.name(layer, key, label), float(result[key]), label, layer, key)
                for kind, names in (
                    (PER_CLASS_KEYS, None),
                    (PER_ELEMENT_KEYS, element_names),
                ):
                    if score not in kind or kind[score] not in result or (kind is PER_ELEMENT_KEYS and not names):
                        continue
                    parts = names or [f"class_{c}" for c in range(result[kind[score]].numel())]
                    for part, value in zip(parts, result[kind[score]].tolist(), strict=True):
                        out.add(naming.name(layer, f"{score}/{part}", label), value, label, layer, f"{score}/{part}")
            if float(scale) == 0:  # its NaN scores (0/0) have this reason, not a lack of data: pairs were formed
                out.same_representation.setdefault(layer, index)
            if not non_finite:
                out.nan_names += [name for name in list(out.values)[before:] if out.values[name] != out.values[name]]
            if "sample_deviations" in result:
                normalized = bool(torch.isfinite(scale)) and float(scale) > 0
                series = "sample_deviations_normalized" if normalized else "sample_deviations"
                sample = result["sample_deviations"] / (scale if normalized else 1.0)
                out.deviations[naming.name(layer, series, label).split("/", 1)[1]] = sample.tolist()
    return out
