"""Running validation inputs' orbits through the model and feeding each (dataloader, layer)'s metrics.

The model runs as in validation: eval mode and no autograd (the probe), under the precision plugin's forward
context (autocast for ``*-mixed``), on inputs read as the validation loop reads them (``_batches``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_invariance._rng import cuda_indices, fork_rng
from lightning_invariance.batches import Batch, batch_size, slice_batch
from lightning_invariance.callbacks._batches import InputCache, dataset_size, validation_batches
from lightning_invariance.callbacks._scores import LINEAR_SCORES, LayerScores, ScoreOptions
from lightning_invariance.callbacks._shares import cache_size, my_share
from lightning_invariance.groups.actions import RepresentationAction
from lightning_invariance.groups.base import Group
from lightning_invariance.lie_probe import LieProbe
from lightning_invariance.metrics._checks import check_label_range
from lightning_invariance.probe import Probe

__all__ = ["MeasureSettings", "Measurer"]


@dataclass(frozen=True)
class MeasureSettings:
    """What to measure, as the callback was configured."""

    group: Group
    layers: Sequence[str]
    actions: Mapping[str, RepresentationAction | None]
    scores: tuple[str, ...]
    distance: str
    reference: str
    num_classes: int | None
    border_mask: bool
    non_finite: str
    max_samples: int | None
    chunk_size: int | None
    lie_generator: str | None
    get_input: Callable[[Any], Tensor]
    get_target: Callable[[Any], Tensor] | None


class Measurer:
    """The probes, the input cache and the metrics of one ``fit``/``validate`` run."""

    def __init__(self, settings: MeasureSettings, pl_module: pl.LightningModule, world_size: int, keep: bool) -> None:
        self.settings, self.keep_sample_deviations = settings, keep
        self.probe = Probe(pl_module, settings.group, settings.layers, chunk_size=settings.chunk_size)
        self.lie_probe = None
        if settings.lie_generator is not None:
            equivariant = [layer for layer, action in settings.actions.items() if action is not None]
            self.lie_probe = LieProbe(
                pl_module, settings.lie_generator, settings.layers, equivariant, settings.chunk_size
            )
        size = 0 if settings.max_samples is None else cache_size(settings.max_samples, world_size)
        self.cache = InputCache(size)  # per run: a later `validate(dataloaders=...)` must not measure fit's inputs
        self.scores: dict[tuple[int, str], LayerScores] = {}
        self.layer_order = list(settings.layers)

    def _layer_scores(self, layer: str, device: torch.device, keep: bool) -> LayerScores:
        s = self.settings
        options = ScoreOptions(
            len(s.group),
            s.scores,
            s.distance,
            s.reference,
            s.actions[layer],
            s.num_classes,
            keep,
            s.border_mask,
            s.non_finite,
        )
        scores = LayerScores.create(layer, options, device)
        scores.reset()
        return scores

    def prepare(self, indices: Sequence[int], device: torch.device) -> None:
        """Fresh metrics for a measurement of the dataloaders ``indices``."""
        for index in indices:
            for layer in self.settings.layers:
                if (index, layer) in self.scores:
                    self.scores[(index, layer)].reset()
                else:
                    self.scores[(index, layer)] = self._layer_scores(layer, device, self.keep_sample_deviations)

    def input_of(self, batch: Any, batch_idx: int, index: int) -> tuple[Tensor, Tensor | None]:
        """The inputs (checked against the group) and, for per-class scores, the labels of a batch."""
        try:
            inputs = self.settings.get_input(batch)
            self.settings.group.check_input(inputs)
            labels = None if self.settings.get_target is None else self.settings.get_target(batch)
            if labels is not None and labels.shape[:1] != (batch_size(inputs),):
                raise ValueError(
                    f"the labels have shape {tuple(labels.shape)}, not one per input ({batch_size(inputs)} inputs)"
                )
            if labels is not None and self.settings.num_classes is not None:  # once per batch, not per chunk
                check_label_range(labels, self.settings.num_classes)
        except (TypeError, KeyError, ValueError) as error:
            raise MisconfigurationException(
                f"InvarianceMonitor could not measure validation batch {batch_idx} of dataloader {index}: {error}"
            ) from error
        return inputs, labels

    def take(self, trainer: pl.Trainer, batch: Any, batch_idx: int, index: int) -> None:
        """A validation batch: measured now (``max_samples=None``), or cached until the cache is full."""
        if self.settings.max_samples is not None and index in self.cache.closed:
            return
        inputs, labels = self.input_of(batch, batch_idx, index)
        if self.settings.max_samples is None:
            self.measure(trainer, inputs, labels, index)
        else:
            self.cache.add(inputs, labels, index)

    def measure(
        self, trainer: pl.Trainer, inputs: Tensor, labels: Tensor | None, index: int, metrics: Mapping | None = None
    ) -> None:
        """Run the orbit of ``inputs`` and update dataloader ``index``'s metrics (or ``metrics``, per layer)."""
        if batch_size(inputs) == 0:  # this process's share of the cached inputs can be empty under DDP
            return
        layers = self.settings.layers
        metrics = metrics or {layer: self.scores[(index, layer)] for layer in layers}
        offsets = dict.fromkeys(layers, 0)

        def feed(name: str, features: Tensor) -> None:
            start, offsets[name] = offsets[name], offsets[name] + features.shape[1]
            chunk_labels = None if labels is None else labels[start : offsets[name]].to(features.device)
            try:
                metrics[name].update(features, chunk_labels)
            except (ValueError, RuntimeError) as error:
                action = self.settings.actions[name]
                measured = "invariance" if action is None else f"equivariance under {action!r}"
                raise MisconfigurationException(
                    f"InvarianceMonitor cannot measure the {measured} of layer {name!r}, whose orbit features have "
                    f"shape {tuple(features.shape)} (|G|, inputs, ...): {error}"
                ) from error

        try:
            with trainer.precision_plugin.forward_context():
                self.probe.run(inputs, feed)
                if self.lie_probe is not None:
                    self.lie_probe.run(inputs, lambda name, f, d: metrics[name].update_lie(f, d))
        except (ValueError, RuntimeError) as error:
            raise MisconfigurationException(
                f"InvarianceMonitor could not measure inputs of shape {_shape(inputs)} from dataloader {index}: {error}"
            ) from error

    def check_one_batch(self, trainer: pl.Trainer, indices: Sequence[int], device: torch.device) -> None:
        """Run one validation batch's orbit through throwaway metrics, so that a misfit fails before training.

        Also learns the order the layers run in (for tables and figures). Nothing is logged or kept.
        """
        order = self.layer_order
        with fork_rng(cuda_indices(device)):
            for index in indices:
                batch_idx, batch = next(validation_batches(trainer, index), (None, None))
                if batch_idx is None:
                    continue
                inputs, labels = self.input_of(batch, batch_idx, index)
                throwaway = {layer: self._layer_scores(layer, device, False) for layer in self.settings.layers}
                first = slice_batch(inputs, 0, 2)
                self.measure(trainer, first, None if labels is None else labels[:2], index, throwaway)
                order = self.probe.layer_order
        self.layer_order = list(order)

    def measure_loaders(self, trainer: pl.Trainer, indices: Sequence[int], device: torch.device) -> None:
        """Measure the validation data outside validation (the baseline), read as the validation loop reads it."""
        self.prepare(indices, device)
        with fork_rng(cuda_indices(device)):
            for index in indices:
                for batch_idx, batch in validation_batches(trainer, index):
                    self.take(trainer, batch, batch_idx, index)
                    if self.settings.max_samples is not None and self.cache.full(index):
                        break
        self.finish(trainer, indices)

    def finish(self, trainer: pl.Trainer, indices: Sequence[int]) -> None:
        """Measure the cached inputs of every dataloader (nothing to do with ``max_samples=None``)."""
        if self.settings.max_samples is not None:
            for index in indices:
                self._measure_cache(trainer, index)

    def _measure_cache(self, trainer: pl.Trainer, index: int) -> None:
        """Close dataloader ``index``'s input cache and measure this process's share of it.

        Under DDP the processes' caches are gathered and dealt back as consecutive shares of the first
        ``max_samples`` inputs in the order one process reads them (see ``_shares.py``). The fitted linear maps: the
        first half of those inputs fits them, the second half is held out.
        """
        max_samples = self.settings.max_samples
        assert max_samples is not None
        try:
            share = my_share(self.cache.close(index), max_samples, dataset_size(trainer, index))
        except ValueError as error:
            rank_zero_warn(f"InvarianceMonitor: dataloader {index} has nothing to measure ({error}).")
            return
        if not any(score in LINEAR_SCORES for score in self.settings.scores):
            self.measure(trainer, share.inputs, share.labels, index)
            return
        fit_count = min(max(share.total // 2 - share.start, 0), batch_size(share.inputs))  # in this process's share
        labels = (None, None) if share.labels is None else (share.labels[:fit_count], share.labels[fit_count:])
        self.measure(trainer, slice_batch(share.inputs, 0, fit_count), labels[0], index)
        for layer in self.settings.layers:
            self.scores[(index, layer)].fit_linear_maps()
        self.measure(trainer, slice_batch(share.inputs, fit_count, batch_size(share.inputs)), labels[1], index)

    def compute(self, indices: Sequence[int]) -> dict[tuple[int, str], dict[str, Tensor]]:
        """Every (dataloader, layer)'s scores, synchronised across processes."""
        return {key: scores.compute() for key, scores in self.scores.items() if key[0] in indices}


def _shape(inputs: Batch) -> object:
    return tuple(inputs.shape) if isinstance(inputs, Tensor) else {k: tuple(v.shape) for k, v in inputs.items()}
