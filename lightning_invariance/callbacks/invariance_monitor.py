"""InvarianceMonitor: invariance and equivariance curves of the model and its layers while it trains.

Every N validation epochs it measures the G-EED under a group of transformations and logs it to every Lightning
logger.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_invariance._rng import cuda_indices, fork_rng
from lightning_invariance.callbacks._helpers import (
    check_measure_options,
    check_options,
    check_positive,
    has_matplotlib,
)
from lightning_invariance.callbacks._scores import LINEAR_SCORES, SCORES, LayerScores, ScoreOptions, metric_name
from lightning_invariance.callbacks._shares import cache_size, my_share
from lightning_invariance.callbacks._tensorboard import figure_of_per_element_scores, scalars_layout
from lightning_invariance.functional.distances import DISTANCES, REFERENCES
from lightning_invariance.groups.actions import RepresentationAction
from lightning_invariance.groups.base import Group
from lightning_invariance.inputs import make_input_getter, make_target_getter
from lightning_invariance.lie_probe import LieProbe
from lightning_invariance.probe import OUTPUT, Probe, resolve_layers

__all__ = ["InvarianceMonitor"]

#: The summary entry holding the per-class values of a score that has them.
PER_CLASS_KEYS = {"geed": "per_class", "geed_normalized": "per_class_normalized"}


class InvarianceMonitor(Callback):
    r"""Log the G-EED of the model output and named layers under ``group`` during ``fit`` and ``validate``.

    Every ``every_n_epochs``-th validation run of ``fit`` (and every ``validate``), never during the sanity check,
    the callback runs the whole orbit of a fixed set of validation inputs through the model (one chunked forward
    pass, eval mode, no autograd), captures the layers with forward hooks, and logs the scores with
    ``pl_module.log``, so every logger gets them and ``EarlyStopping``/``ModelCheckpoint`` can monitor them.
    Measuring never changes training: the model's modes, hooks, gradients, BatchNorm statistics, the global RNG
    states and the dataloaders' order are left as they were (the inputs are copied from the batches Lightning
    already loaded).

    With ``max_samples`` set, the first ``max_samples`` validation inputs of each dataloader are copied the first
    time they are needed and re-used by every later measurement, so every epoch measures the same inputs even if the
    loader shuffles. Under DDP they are the first ``max_samples`` in all, in the order one process would read them:
    the processes' copies are gathered and shared out again, so the logged values equal a one-process run's. With
    ``max_samples=None`` every validation batch is measured as it comes, by the process that loaded it (raw scores
    still equal one process's; the normaliser then pairs each process's samples among themselves, a small
    difference).

    Args:
        group: the transformations (e.g. ``CyclicRotation(4)``).
        layers: module paths as in ``pl_module.named_modules()``; ``"output"`` is the model output.
        scores: any of ``"geed"``, ``"geed_normalized"``, ``"stderr"``, ``"max"``, ``"consistency"``
            (prediction consistency of the output, for classifiers); the variance measures of Quiroga et al.
            ``"normalized_variance"``, ``"transformation_variance"``, ``"sample_variance"`` and ``"dead_units"``;
            the fitted linear maps of Lenc & Vedaldi ``"linear_equivariance"`` (held-out G-EED against ``M_g f(x)``,
            normalised) and ``"linear_invariance"`` (the invariance G-EED of the same pooled features); and
            ``"lie_derivative"`` (Gruver et al., needs ``lie_generator``). The fitted maps need ``max_samples``: the
            first half of the cached inputs fits them, the second half is held out.
        distance: ``"euclidean"``, ``"cosine"``, ``"kl"`` or ``"discrete"``.
        reference: ``"centroid"`` or ``"identity"`` (invariance only; equivariance compares with the action).
        action: an action on the layers' representations to measure equivariance instead of invariance (for
            example ``RegularAction(group)`` for e2cnn regular fields). Use one callback per action, with its own
            ``prefix``.
        every_n_epochs: measure on every n-th validation run of ``fit``.
        max_samples: inputs measured per dataloader, in all processes together; ``None`` for all.
        chunk_size: most inputs (transformed copies included) in one forward pass; ``None``: 128 on CPU, 2048 on
            accelerators.
        input_key: how to take the input out of a batch: ``None`` (a tensor batch, the first element of a tuple or
            list, or the ``"input"``/``"x"``/``"image"`` entry of a dict), an index, a dict key, or a callable.
        dataloaders: indices of the validation dataloaders to measure (all by default); each is logged with a
            ``/dataloader_idx_<i>`` suffix when there are several.
        measure_before_training: also measure once when training starts (the untrained baseline, logged at the
            current step straight to the loggers).
        log_per_element: also log one scalar per group element, e.g. ``invariance/output/geed/rot90``.
        log_figures: a per-element bar chart in TensorBoard every ``figure_every_n`` measurements; ``None`` does
            so when the logger is a ``TensorBoardLogger`` and matplotlib is installed.
        figure_every_n: see ``log_figures``.
        prefix: first part of every logged name.
        print_summary: print a table of first versus last scores when ``fit`` ends.
        lie_generator: the continuous transformation of the ``"lie_derivative"`` score: ``"rotation"``,
            ``"scaling"``, ``"translation_x"`` or ``"translation_y"``. With an ``action`` the layers' feature maps are
            expected to move with the input (equivariant Lie derivative), otherwise to stay put.
        num_classes: also log ``geed``/``geed_normalized`` per class (``.../class_<c>``), reading labels from the
            batches with ``target_key``.
        target_key: how to take the labels out of a batch: ``None`` (element 1 of a tuple or list, or the
            ``"target"``/``"y"``/``"label"``/``"labels"`` entry of a dict), an index, a dict key, or a callable.
        border_mask: with an action, compare only the region each element leaves valid (interpolated rotations and
            scalings leave empty corners).
        log_histograms: log a TensorBoard histogram of the per-sample deviations of every layer
            (``<prefix>/<layer>/sample_deviations``), which shows the few large failures a mean can hide; ``None``
            does so when the logger is a ``TensorBoardLogger``.

    Raises:
        MisconfigurationException: for an argument out of range; in ``setup``, for a layer name the model does not
            have or figures requested without a ``TensorBoardLogger`` or matplotlib; on the first measured batch,
            for a batch without an input tensor or a group that cannot act on the inputs' shape.

    Logged metrics:
        ``<prefix>/<layer>/<score>`` for each layer and score (``/dataloader_idx_<i>`` appended when several
        dataloaders are measured), and ``<prefix>/<layer>/<score>/<element>`` with ``log_per_element=True``.

    Example::

        from lightning.pytorch import Trainer
        from lightning_invariance import InvarianceMonitor
        from lightning_invariance.groups import CyclicRotation

        monitor = InvarianceMonitor(CyclicRotation(4), layers=["features.3", "output"])
        trainer = Trainer(callbacks=[monitor])
    """

    def __init__(
        self,
        group: Group,
        layers: Sequence[str] = (OUTPUT,),
        scores: Sequence[str] = ("geed", "geed_normalized"),
        distance: str = "euclidean",
        reference: str = "centroid",
        action: RepresentationAction | None = None,
        every_n_epochs: int = 1,
        max_samples: int | None = 512,
        chunk_size: int | None = None,
        input_key: str | int | Callable[[Any], Tensor] | None = None,
        dataloaders: int | Sequence[int] | None = None,
        measure_before_training: bool = False,
        log_per_element: bool = False,
        log_figures: bool | None = None,
        figure_every_n: int = 5,
        prefix: str = "invariance",
        print_summary: bool = True,
        lie_generator: str | None = None,
        num_classes: int | None = None,
        target_key: str | int | Callable[[Any], Tensor] | None = None,
        border_mask: bool = False,
        log_histograms: bool | None = None,
    ) -> None:
        if not isinstance(group, Group):
            raise MisconfigurationException(
                f"`group` must be a lightning_invariance Group, got {type(group).__name__}."
            )
        self.group = group
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        self.scores = tuple([scores] if isinstance(scores, str) else scores)
        check_options("scores", self.scores, SCORES)
        check_options("distance", (distance,), DISTANCES)
        check_options("reference", (reference,), REFERENCES)
        if not self.layers or not self.scores:
            raise MisconfigurationException("`layers` and `scores` must each name at least one item.")
        if "consistency" in self.scores and OUTPUT not in self.layers:
            raise MisconfigurationException('The "consistency" score is of the model output: add "output" to `layers`.')
        if action is not None:
            if not isinstance(action, RepresentationAction):
                raise MisconfigurationException(
                    f"`action` must be a RepresentationAction, got {type(action).__name__}."
                )
            action.check_group(group)
        check_positive("every_n_epochs", every_n_epochs)
        if chunk_size is not None:
            check_positive("chunk_size", chunk_size)
        check_positive("figure_every_n", figure_every_n)
        if max_samples is not None:
            check_positive("max_samples", max_samples)
        if isinstance(dataloaders, int):
            dataloaders = [dataloaders]
        if dataloaders is not None and (not dataloaders or any(not isinstance(i, int) or i < 0 for i in dataloaders)):
            raise MisconfigurationException(f"`dataloaders` must be None or non-negative indices, got {dataloaders!r}.")
        if not isinstance(prefix, str) or not prefix:
            raise MisconfigurationException(f"`prefix` must be a non-empty string, got {prefix!r}.")
        check_measure_options(self.scores, max_samples, lie_generator, num_classes, border_mask, action)
        self.distance, self.reference, self.action = distance, reference, action
        self.every_n_epochs, self.max_samples, self.chunk_size = every_n_epochs, max_samples, chunk_size
        self.dataloaders = None if dataloaders is None else sorted(set(dataloaders))
        self.measure_before_training, self.log_per_element = measure_before_training, log_per_element
        self.log_figures, self.figure_every_n = log_figures, figure_every_n
        self.prefix, self.print_summary = prefix, print_summary
        self._get_input = make_input_getter(input_key)
        self.lie_generator, self.num_classes, self.border_mask = lie_generator, num_classes, border_mask
        self.log_histograms = log_histograms
        self._get_target = make_target_getter(target_key) if num_classes is not None else None
        self._lie_probe: LieProbe | None = None
        self._histograms_enabled = False

        self.history: list[dict[str, Any]] = []
        self._fit_validation_runs = 0
        self._baseline_done = False
        self._measuring_now = False
        self._probe: Probe | None = None
        self._scores: dict[tuple[int, str], LayerScores] = {}
        self._cache: dict[int, list[tuple[Tensor, Tensor | None]]] = {}
        self._cache_complete: set[int] = set()
        self._layout_written = False
        self._figures_enabled = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix, group=repr(self.group), layers=tuple(self.layers))

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        try:
            resolve_layers(pl_module, self.layers)
        except ValueError as error:
            raise MisconfigurationException(f"InvarianceMonitor: {error}") from error
        self._probe = Probe(pl_module, self.group, self.layers, chunk_size=self.chunk_size)
        if self.lie_generator is not None:
            equivariant = [layer for layer in self.layers if self.action is not None and layer != OUTPUT]
            self._lie_probe = LieProbe(pl_module, self.lie_generator, self.layers, equivariant, self.chunk_size)
        # inputs are cached per run: a later `validate(dataloaders=...)` must not measure fit's inputs
        self._cache, self._cache_complete, self._scores = {}, set(), {}
        self._cache_size = 0 if self.max_samples is None else cache_size(self.max_samples, trainer.world_size)
        tensorboard = any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers)
        matplotlib_found = has_matplotlib()
        if self.log_figures and not (tensorboard and matplotlib_found):
            missing = "a TensorBoardLogger" if not tensorboard else "matplotlib (pip install matplotlib)"
            raise MisconfigurationException(f"InvarianceMonitor(log_figures=True) needs {missing}.")
        self._figures_enabled = tensorboard and matplotlib_found if self.log_figures is None else self.log_figures
        if self.log_histograms and not tensorboard:
            raise MisconfigurationException("InvarianceMonitor(log_histograms=True) needs a TensorBoardLogger.")
        self._histograms_enabled = tensorboard if self.log_histograms is None else self.log_histograms

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.measure_before_training or self._baseline_done:
            return
        self._measure_baseline(trainer, pl_module)
        self._baseline_done = True

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._measuring_now = self._should_measure(trainer)
        if self._measuring_now:
            self._prepare(trainer, pl_module)

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._measuring_now or not self._selected(dataloader_idx, trainer):
            return
        if self.max_samples is not None and dataloader_idx in self._cache_complete:
            return
        inputs = self._input_of(batch, batch_idx, dataloader_idx)
        if self.max_samples is None:
            self._measure(*inputs, dataloader_idx)
        else:
            self._add_to_cache(inputs, dataloader_idx)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit":
            self._fit_validation_runs += 1
        if not self._measuring_now:
            return
        self._measuring_now = False
        if self.max_samples is not None:
            for index in self._selected_indices(trainer):
                self._measure_cache(trainer, index)
        values, per_element = self._compute(trainer)
        for name, value in values.items():
            pl_module.log(name, value, on_step=False, on_epoch=True, sync_dist=True, add_dataloader_idx=False)
        stage = "validate" if trainer.state.fn == "validate" else "fit"
        self._record(trainer, stage, values)
        self._write_tensorboard_extras(trainer, per_element)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.print_summary and self.history:
            rank_zero_info(self.summary_table())

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [dict(record, values=dict(record["values"])) for record in self.history],
            "fit_validation_runs": self._fit_validation_runs,
            "baseline_done": self._baseline_done,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._fit_validation_runs = int(state_dict.get("fit_validation_runs", 0))
        self._baseline_done = bool(state_dict.get("baseline_done", False))

    def summary_table(self) -> str:
        """First versus last logged value of every score during ``fit``, as a printable table."""
        records = [record for record in self.history if record["stage"] in ("baseline", "fit")]
        if not records:
            return "InvarianceMonitor: nothing measured during fit."
        main = {metric_name(self.prefix, layer, score, 0, 1) for layer in self.layers for score in self.scores}
        names = [
            name
            for name in dict.fromkeys(name for record in records for name in record["values"])
            if name.split("/dataloader_idx_")[0] in main  # per-element scalars stay out of the table
        ]

        def when(record: dict[str, Any]) -> str:
            return "before training" if record["stage"] == "baseline" else f"epoch {record['epoch']}"

        rows = []
        for name in names:
            seen = [(when(record), record["values"][name]) for record in records if name in record["values"]]
            (first_when, first), (last_when, last) = seen[0], seen[-1]
            rows.append((name, f"{first:.4g} ({first_when})", f"{last:.4g} ({last_when})"))
        widths = [max(len(row[i]) for row in [("score", "first", "last"), *rows]) for i in range(3)]
        lines = [f"InvarianceMonitor ({self.group!r}): first vs last measurement"]
        for row in [("score", "first", "last"), *rows]:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        return "\n".join(lines)

    def _should_measure(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if trainer.state.fn == "validate":
            return True
        return trainer.state.fn == "fit" and (self._fit_validation_runs + 1) % self.every_n_epochs == 0

    def _selected(self, dataloader_idx: int, trainer: pl.Trainer) -> bool:
        return dataloader_idx in self._selected_indices(trainer)

    def _selected_indices(self, trainer: pl.Trainer) -> list[int]:
        available = range(len(trainer.num_val_batches))
        if self.dataloaders is None:
            return list(available)
        missing = [i for i in self.dataloaders if i not in available]
        if missing:
            raise MisconfigurationException(
                f"InvarianceMonitor(dataloaders={self.dataloaders}) names dataloader(s) {missing}, but there are "
                f"{len(available)} validation dataloader(s) (indices 0..{len(available) - 1})."
            )
        return list(self.dataloaders)

    def _prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        indices = self._selected_indices(trainer)
        for index in indices:
            for layer in self.layers:
                key = (index, layer)
                if key not in self._scores:
                    options = ScoreOptions(
                        len(self.group),
                        self.scores,
                        self.distance,
                        self.reference,
                        self.action,
                        self.num_classes,
                        self._histograms_enabled,
                        self.border_mask,
                    )
                    self._scores[key] = LayerScores.create(layer, options, pl_module.device)
                self._scores[key].reset()

    def _input_of(self, batch: Any, batch_idx: int, dataloader_idx: int) -> tuple[Tensor, Tensor | None]:
        try:
            inputs = self._get_input(batch)
            self.group.check_input(inputs)
            labels = None if self._get_target is None else self._get_target(batch)
            if labels is not None and labels.shape[:1] != inputs.shape[:1]:
                raise ValueError(
                    f"the labels have shape {tuple(labels.shape)}, not one per input ({inputs.shape[0]} inputs)"
                )
        except (TypeError, KeyError, ValueError) as error:
            raise MisconfigurationException(
                f"InvarianceMonitor could not measure validation batch {batch_idx} of dataloader {dataloader_idx}: "
                f"{error}"
            ) from error
        return inputs, labels

    def _add_to_cache(self, batch: tuple[Tensor, Tensor | None], dataloader_idx: int) -> None:
        cached = self._cache.setdefault(dataloader_idx, [])
        room = self._cache_size - sum(len(x) for x, _ in cached)
        if room <= 0:
            return
        inputs, labels = batch
        with torch.inference_mode(False):  # normal tensors, usable outside validation's inference mode
            cached.append((inputs[:room].detach().clone(), None if labels is None else labels[:room].clone()))

    def _measure(self, inputs: Tensor, labels: Tensor | None, dataloader_idx: int) -> None:
        assert self._probe is not None
        if inputs.shape[0] == 0:  # this process's share of the cached inputs can be empty under DDP
            return
        metrics = {layer: self._scores[(dataloader_idx, layer)] for layer in self.layers}
        offsets = dict.fromkeys(self.layers, 0)

        def feed(name: str, features: Tensor) -> None:
            start, offsets[name] = offsets[name], offsets[name] + features.shape[1]
            chunk_labels = None if labels is None else labels[start : offsets[name]].to(features.device)
            metrics[name].update(features, chunk_labels)

        try:
            self._probe.run(inputs, feed)
            if self._lie_probe is not None:
                self._lie_probe.run(inputs, lambda name, f, derivatives: metrics[name].update_lie(f, derivatives))
        except ValueError as error:
            raise MisconfigurationException(
                f"InvarianceMonitor could not measure inputs of shape {tuple(inputs.shape)} from dataloader "
                f"{dataloader_idx}: {error}"
            ) from error

    def _compute(self, trainer: pl.Trainer) -> tuple[dict[str, float], dict[tuple[int, str], dict[str, list[float]]]]:
        indices = self._selected_indices(trainer)
        values: dict[str, float] = {}
        # per (dataloader, layer): per-element values of each score, and "sample_deviations" for the histograms
        per_element: dict[tuple[int, str], dict[str, list[float]]] = {}
        for index in indices:
            for layer in self.layers:
                computed = self._scores[(index, layer)].compute()
                per_element[(index, layer)] = {
                    "geed": computed["per_element"].tolist(),
                    "geed_normalized": computed["per_element_normalized"].tolist(),
                }
                if "sample_deviations" in computed:
                    per_element[(index, layer)]["sample_deviations"] = computed["sample_deviations"].tolist()
                for score in self.scores:
                    if score not in computed:
                        continue
                    name = metric_name(self.prefix, layer, score, index, len(indices))
                    values[name] = float(computed[score])
                    per_class = PER_CLASS_KEYS.get(score)
                    if per_class in computed:
                        for c, value in enumerate(computed[per_class].tolist()):
                            values[metric_name(self.prefix, layer, f"{score}/class_{c}", index, len(indices))] = value
                    if self.log_per_element and score in per_element[(index, layer)]:
                        for element, value in zip(self.group.names, per_element[(index, layer)][score], strict=True):
                            values[metric_name(self.prefix, layer, f"{score}/{element}", index, len(indices))] = value
        return values, per_element

    def _record(self, trainer: pl.Trainer, stage: str, values: dict[str, float]) -> None:
        self.history.append(
            {"stage": stage, "epoch": trainer.current_epoch, "step": trainer.global_step, "values": dict(values)}
        )

    def _measure_baseline(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Measure the untrained model on the validation data before the first training step."""
        loop = trainer.fit_loop.epoch_loop.val_loop
        loop.setup_data()  # a no-op when the sanity check already set the validation data up
        combined = getattr(loop, "_combined_loader", None)
        if combined is None or not trainer.num_val_batches:
            rank_zero_warn("InvarianceMonitor(measure_before_training=True): there is no validation data to measure.")
            return
        loaders = combined.flattened  # the dataloaders as the validation loop iterates them (samplers included)
        self._prepare(trainer, pl_module)
        with fork_rng(cuda_indices(pl_module.device)):
            self._fill_baseline(trainer, loaders)
        values, per_element = self._compute(trainer)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)
        self._record(trainer, "baseline", values)
        self._write_tensorboard_extras(trainer, per_element)

    def _fill_baseline(self, trainer: pl.Trainer, loaders: Sequence[Any]) -> None:
        """Read (and measure) the validation inputs the way the validation loop would, bounded by its limits."""
        for index in self._selected_indices(trainer):
            limit = trainer.num_val_batches[index]
            for batch_idx, batch in enumerate(loaders[index]):
                if batch_idx >= limit:
                    break
                inputs = self._input_of(batch, batch_idx, index)
                if self.max_samples is None:
                    self._measure(*inputs, index)
                    continue
                self._add_to_cache(inputs, index)
                if sum(len(x) for x, _ in self._cache[index]) >= self._cache_size:
                    break
            if self.max_samples is not None:
                self._measure_cache(trainer, index)

    def _measure_cache(self, trainer: pl.Trainer, index: int) -> None:
        """Close dataloader ``index``'s input cache (it is not filled again) and measure this process's share of it.

        Under DDP the processes' caches are gathered and dealt back as consecutive shares of the first
        ``max_samples`` inputs in the order one process reads them (see ``callbacks/_shares.py``), so every score
        equals the one-process value. The fitted linear maps: the first half of those inputs fits them, the second
        half is held out.
        """
        self._cache_complete.add(index)
        try:
            share = my_share(self._cache.get(index, []), self.max_samples, _dataset_size(trainer, index))
        except ValueError as error:
            rank_zero_warn(f"InvarianceMonitor: dataloader {index} has nothing to measure ({error}).")
            return
        if not any(score in LINEAR_SCORES for score in self.scores):
            self._measure(share.inputs, share.labels, index)
            return
        fit_count = min(max(share.total // 2 - share.start, 0), share.inputs.shape[0])  # in this process's share
        self._measure(share.inputs[:fit_count], None if share.labels is None else share.labels[:fit_count], index)
        for layer in self.layers:
            self._scores[(index, layer)].fit_linear_maps()
        self._measure(share.inputs[fit_count:], None if share.labels is None else share.labels[fit_count:], index)

    def _write_tensorboard_extras(
        self, trainer: pl.Trainer, per_element: dict[tuple[int, str], dict[str, list[float]]]
    ) -> None:
        if not trainer.is_global_zero:
            return
        writers = [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not writers:
            return
        if not self._layout_written:
            indices = sorted({index for index, _ in per_element})
            names = {
                score: [
                    metric_name(self.prefix, layer, score, i, len(indices))
                    for i in indices
                    for layer in self.layers
                    if score != "consistency" or layer == OUTPUT
                ]
                for score in self.scores
            }
            for writer in writers:
                writer.add_custom_scalars(scalars_layout(self.prefix, names))
            self._layout_written = True
        if self._histograms_enabled:
            num_dataloaders = len({index for index, _ in per_element})
            for (index, layer), details in per_element.items():
                if "sample_deviations" not in details:
                    continue
                tag = metric_name(self.prefix, layer, "sample_deviations", index, num_dataloaders)
                deviations = torch.tensor(details["sample_deviations"], dtype=torch.float32)
                for writer in writers:
                    writer.add_histogram(tag, deviations, global_step=trainer.global_step)
        if not self._figures_enabled or (len(self.history) - 1) % self.figure_every_n:
            return
        score = "geed_normalized" if "geed_normalized" in self.scores else "geed"
        indices = sorted({index for index, _ in per_element})
        for index in indices:
            per_layer = {layer: per_element[(index, layer)][score] for layer in self.layers}
            title = f"{score} per element, epoch {trainer.current_epoch}"
            if len(indices) > 1:
                title += f", dataloader {index}"
            figure = figure_of_per_element_scores(title, self.group.names, per_layer, score)
            tag = metric_name(self.prefix, "figures", score, index, len(indices))
            for writer in writers:
                writer.add_figure(tag, figure, global_step=trainer.global_step, close=False)


def _dataset_size(trainer: pl.Trainer, index: int) -> int | None:
    """The size of validation dataloader ``index``'s dataset (to drop a distributed sampler's padding), if known."""
    loaders = trainer.val_dataloaders if trainer.state.fn == "fit" or trainer.validating else None
    if loaders is None:
        return None
    loader = loaders[index] if isinstance(loaders, (list, tuple)) else loaders if index == 0 else None
    try:
        return len(loader.dataset)  # type: ignore[union-attr, arg-type]
    except (AttributeError, TypeError):
        return None
