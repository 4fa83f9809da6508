"""InvarianceMonitor: invariance and equivariance curves of the model and its layers while it trains.

Every N validation runs it measures the G-EED under a group of transformations and logs it to every Lightning
logger. The jobs around the hooks live beside this file: argument checks (``_checks``), running the orbits and
feeding the metrics (``_measuring``), reading and caching the validation inputs (``_batches``, ``_shares``), the
metrics per layer (``_scores``), the logged values and names (``_results``), the history and its tables
(``_history``), and TensorBoard's layout, figures and histograms (``_tensorboard``, ``figures``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_invariance.callbacks._budget import Budget
from lightning_invariance.callbacks._checks import (
    check_dataloaders,
    check_group,
    check_layer_actions,
    check_max_overhead,
    check_measure_options,
    check_monitoring_callbacks,
    check_options,
    check_positive,
)
from lightning_invariance.callbacks._history import SpawnHandoff, summary_table, tidy_rows, write_csv
from lightning_invariance.callbacks._measuring import Measurer, MeasureSettings
from lightning_invariance.callbacks._results import Measurement, Naming, normalizing_index, read_scores
from lightning_invariance.callbacks._scores import (
    NON_FINITE,
    SCORES,
    logged_keys,
)
from lightning_invariance.callbacks._tensorboard import (
    tensorboard_writers,
    write_figures,
    write_histograms,
    write_layout,
)
from lightning_invariance.callbacks.figures import has_matplotlib
from lightning_invariance.functional.deviation import SAME_REPRESENTATION
from lightning_invariance.functional.distances import DISTANCES, REFERENCES
from lightning_invariance.groups.actions import RepresentationAction
from lightning_invariance.groups.base import Group
from lightning_invariance.inputs import make_input_getter, make_target_getter
from lightning_invariance.probe import OUTPUT, resolve_layers

__all__ = ["InvarianceMonitor"]


class InvarianceMonitor(Callback):
    r"""Log the G-EED of the model output and named layers under ``group`` during ``fit`` and ``validate``.

    Every ``every_n_epochs``-th validation run of ``fit`` (and every ``validate``), never during the sanity check,
    the callback runs the whole orbit of a fixed set of validation inputs through the model (chunked forward passes,
    eval mode, no autograd, in the precision validation runs in), captures the layers with forward hooks, and logs
    the scores to every logger at the current training step (``pl_module.log`` also gets them, so
    ``EarlyStopping``/``ModelCheckpoint`` can monitor them). Measuring never changes training: the model's modes,
    hooks, gradients, BatchNorm statistics, the global RNG states and the dataloaders' order are left as they were.

    Before training starts, one validation batch goes through the model's orbit (nothing is logged) so that a group
    or action that does not fit the inputs or a layer fails at once, naming the layer.

    With ``max_samples`` set, the first ``max_samples`` validation inputs of each dataloader are copied the first
    time they are needed and re-used by every later measurement, so every epoch measures the same inputs even if the
    loader shuffles. Under DDP they are the first ``max_samples`` in all, in the order one process would read them,
    so the logged values equal a one-process run's. With ``max_samples=None`` every validation batch is measured as
    it comes, by the process that loaded it.

    Args:
        group: the transformations, an instance (e.g. ``CyclicRotation(4)``); wrap a random augmentation as
            ``AugmentationFamily``.
        layers: module paths as in ``pl_module.named_modules()``; ``"output"`` is the model output.
        scores: any of ``"geed"``, ``"geed_normalized"``, ``"stderr"``, ``"max"``, ``"consistency"`` (prediction
            consistency of the output, logged with ``consistency_chance``, how often two different inputs get the
            same label, and the chance-corrected ``consistency_kappa``); the variance measures of Quiroga et al.
            ``"normalized_variance"``, ``"transformation_variance"``, ``"sample_variance"`` and ``"dead_units"``;
            the fitted linear maps of Lenc & Vedaldi ``"linear_equivariance"`` and ``"linear_invariance"`` (need
            ``max_samples``: the first half of the cached inputs fits the maps, the second half is held out); and
            ``"lie_derivative"`` (Gruver et al., needs ``lie_generator``).
        distance: ``"euclidean"``, ``"cosine"``, ``"kl"`` or ``"discrete"``.
        reference: ``"centroid"`` (the default) or ``"identity"``, for the layers measured for invariance.
        action: an action on the layers' representations to measure equivariance instead of invariance (e.g.
            ``RegularAction(group)`` for e2cnn regular fields): one for every layer, or a ``{layer: action}`` map
            (layers left out measure invariance), so one callback measures inner equivariance and output invariance.
        every_n_epochs: measure on every n-th validation run of ``fit``. An ``EarlyStopping`` on a score then needs
            ``strict=False``, a ``ModelCheckpoint`` an ``every_n_epochs`` that is a multiple (checked in ``setup``).
        max_samples: inputs measured per dataloader, in all processes together; ``None`` for all.
        chunk_size: most inputs (transformed copies included) in one forward pass; ``None``: 128 on CPU, 2048 on
            accelerators.
        input_key: how to take the input out of a batch: ``None`` (a tensor batch, the first element of a tuple or
            list, or the ``"input"``/``"x"``/``"image"`` entry of a dict), an index, a dict key, or a callable.
        dataloaders: the validation dataloaders to measure: indices, or a ``{name: index}`` map (``{"id": 0, "ood":
            1}``) whose names end the logged names; by default all, ``/dataloader_idx_<i>`` ending the names when
            there are several.
        normalize_by: a dataloader (name or index) whose scale normalises ``geed_normalized`` of every dataloader,
            so that in- and out-of-distribution values share one yardstick; ``None``: each set its own.
        measure_before_training: also measure once when training starts (the untrained baseline, step 0).
        log_per_element: also log one scalar per group element, e.g. ``invariance/output/geed/rot90``.
        log_figures: depth-profile and per-layer curve figures in TensorBoard every ``figure_every_n`` measurements
            and at the end of ``fit``; ``None`` does so when the logger is a ``TensorBoardLogger`` and matplotlib is
            installed.
        figure_every_n: see ``log_figures``.
        prefix: first part of every logged name.
        print_summary: print a table of first versus last scores when ``fit`` ends.
        lie_generator: the continuous transformation of the ``"lie_derivative"`` score: ``"rotation"``,
            ``"scaling"``, ``"translation_x"`` or ``"translation_y"``. Layers with an action are expected to move
            with the input (equivariant Lie derivative), the others to stay put.
        num_classes: also log ``geed``/``geed_normalized`` per class (``.../class_<c>``), reading labels from the
            batches with ``target_key``.
        target_key: how to take the labels out of a batch, like ``input_key``; ``None`` takes element 1 of a tuple or
            list, or the ``"target"``/``"y"``/``"label"``/``"labels"`` entry of a dict.
        border_mask: with an action, compare only the region each element leaves valid (interpolated rotations and
            scalings leave empty corners).
        log_histograms: a TensorBoard histogram of each layer's per-sample deviations (normalised when the
            normaliser is known), which shows the few large failures a mean can hide; ``None`` does so when the
            logger is a ``TensorBoardLogger``.
        non_finite: a layer whose features hold NaN/inf for some inputs (a diverging run): ``"nan"`` logs its scores
            as NaN, ``"skip"`` measures its finite inputs, both with one warning per layer; ``"error"`` raises.
        max_overhead: the most time measuring may take, as a fraction of the training time (``0.1``: 10%); before
            each measurement the callback checks that the time spent measuring so far plus the last measurement's
            cost stays within it, and otherwise leaves that validation run unmeasured (the inputs stay the same, the
            points get sparser). The end-of-fit summary reports the cost. ``None``: measure as scheduled.

    Raises:
        MisconfigurationException: for an argument out of range; in ``setup``, for a layer name the model does not
            have, figures without a ``TensorBoardLogger`` or matplotlib, or a monitoring callback that would miss
            the scores; before training, for a group or action that does not fit the inputs or a layer.

    Logged metrics:
        ``<prefix>/<layer>/<score>`` for each layer and score (``/<dataloader>`` appended when several dataloaders
        are measured), and ``<prefix>/<layer>/<score>/<element>`` with ``log_per_element=True``.

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
        reference: str | None = None,
        action: RepresentationAction | Mapping[str, RepresentationAction | None] | None = None,
        every_n_epochs: int = 1,
        max_samples: int | None = 512,
        chunk_size: int | None = None,
        input_key: str | int | Callable[[Any], Tensor] | None = None,
        dataloaders: int | Sequence[int] | Mapping[str, int] | None = None,
        normalize_by: str | int | None = None,
        measure_before_training: bool = False,
        log_per_element: bool = False,
        log_figures: bool | None = None,
        figure_every_n: int = 10,
        prefix: str = "invariance",
        print_summary: bool = True,
        lie_generator: str | None = None,
        num_classes: int | None = None,
        target_key: str | int | Callable[[Any], Tensor] | None = None,
        border_mask: bool = False,
        log_histograms: bool | None = None,
        non_finite: str = "nan",
        max_overhead: float | None = None,
    ) -> None:
        check_group(group)
        self.group = group
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        self.scores = tuple([scores] if isinstance(scores, str) else scores)
        check_options("scores", self.scores, SCORES)
        check_options("distance", (distance,), DISTANCES)
        if reference is not None:
            check_options("reference", (reference,), REFERENCES)
        check_options("non_finite", (non_finite,), NON_FINITE)
        if not self.layers or not self.scores:
            raise MisconfigurationException("`layers` and `scores` must each name at least one item.")
        if "consistency" in self.scores and OUTPUT not in self.layers:
            raise MisconfigurationException('The "consistency" score is of the model output: add "output" to `layers`.')
        self.actions = check_layer_actions(action, self.layers, group, reference)
        check_positive("every_n_epochs", every_n_epochs)
        check_max_overhead(max_overhead)
        if chunk_size is not None:
            check_positive("chunk_size", chunk_size)
        check_positive("figure_every_n", figure_every_n)
        if max_samples is not None:
            check_positive("max_samples", max_samples)
        self.dataloaders, self.dataloader_names = check_dataloaders(dataloaders)
        if not isinstance(prefix, str) or not prefix:
            raise MisconfigurationException(f"`prefix` must be a non-empty string, got {prefix!r}.")
        equivariant = [a for a in self.actions.values() if a is not None]
        check_measure_options(self.scores, max_samples, lie_generator, num_classes, border_mask, equivariant)
        self.distance, self.reference, self.action = distance, reference or "centroid", action
        self.every_n_epochs, self.max_samples, self.chunk_size = every_n_epochs, max_samples, chunk_size
        self.normalize_by, self.non_finite = normalize_by, non_finite
        self.measure_before_training, self.log_per_element = measure_before_training, log_per_element
        self.log_figures, self.figure_every_n = log_figures, figure_every_n
        self.prefix, self.print_summary = prefix, print_summary
        self.lie_generator, self.num_classes, self.border_mask = lie_generator, num_classes, border_mask
        self.log_histograms = log_histograms

        self._history: list[dict[str, Any]] = []
        self._handoff = SpawnHandoff()
        self._fit_validation_runs = 0
        self._at_fit_start = (0, 0)  # measurements and validation runs so far when the current fit started
        self._baseline_done = False
        self._measuring_now = False
        self._settings = MeasureSettings(
            group,
            self.layers,
            self.actions,
            self.scores,
            distance,
            self.reference,
            num_classes,
            border_mask,
            non_finite,
            max_samples,
            chunk_size,
            lie_generator,
            make_input_getter(input_key),
            make_target_getter(target_key) if num_classes is not None else None,
        )
        self._measurer: Measurer  # built in `setup`, per run
        self._layout_written = False
        self._figures_enabled = self._histograms_enabled = False
        self._figures_step: int | None = None
        self._warned: set[str] = set()  # layers and names already warned about
        self.max_overhead = max_overhead
        self._budget = Budget(max_overhead)
        self._naming = Naming(prefix, self.dataloader_names)

    # ----------------------------------------------------------------- what it measured
    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per measurement: ``{"stage", "epoch", "step", "values": {name: value}, "keys": ...}``.

        Under ``strategy="ddp_spawn"`` the processes' history comes back to this object after ``fit``.
        """
        returned = self._handoff.read()
        if returned is not None:
            self._history = returned
        return self._history

    @history.setter
    def history(self, records: list[dict[str, Any]]) -> None:
        self._history = list(records)

    def history_rows(self) -> list[dict[str, Any]]:
        """The history as a tidy table: one dict per value with stage, epoch, step, dataloader, layer, score."""
        return tidy_rows(self.history)

    def to_csv(self, path: str | Path) -> Path:
        """Write :meth:`history_rows` to a CSV file (e.g. to aggregate seeds with pandas); the path written."""
        return write_csv(self.history, path)

    def summary_table(self) -> str:
        """First versus last logged value of every score during ``fit``, as a printable table."""
        headline = {(layer, key) for layer in self.layers for score in self.scores for key in logged_keys(score)}
        return summary_table(self.history, f"InvarianceMonitor ({self.group!r}): first vs last measurement", headline)

    # ----------------------------------------------------------------- checkpoints
    def _config(self) -> dict[str, str]:
        """Everything that changes what the scores mean; a checkpoint's history continues only under the same."""
        return {
            "group": repr(self.group),
            "layers": repr(self.layers),
            "scores": repr(self.scores),
            "distance": self.distance,
            "reference": self.reference,
            "actions": repr({layer: repr(a) for layer, a in self.actions.items() if a is not None}),
            "max_samples": repr(self.max_samples),
            "dataloaders": repr((self.dataloaders, self.dataloader_names)),
            "normalize_by": repr(self.normalize_by),
            "num_classes": repr(self.num_classes),
            "border_mask": repr(self.border_mask),
            "lie_generator": repr(self.lie_generator),
        }

    @property
    @override
    def state_key(self) -> str:
        digest = hashlib.sha1(json.dumps(self._config(), sort_keys=True).encode()).hexdigest()[:12]
        return self._generate_state_key(prefix=self.prefix, config=digest)

    @override
    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        same_prefix = f"{type(self).__qualname__}{{'prefix': {self.prefix!r}, "
        for key, state in checkpoint.get("callbacks", {}).items():
            if not key.startswith(same_prefix) or key == self.state_key:
                continue
            old = state.get("config", {}) if isinstance(state, dict) else {}
            changed = [f"{k}: {old.get(k, '?')} -> {v}" for k, v in self._config().items() if old.get(k) != v]
            rank_zero_warn(
                f"InvarianceMonitor(prefix={self.prefix!r}): the checkpoint's history was measured with other settings "
                f"({'; '.join(changed)}). It is not continued: this run starts a new history, and its curves share "
                "the old run's names in the loggers. Use another `prefix` to keep them apart."
            )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [dict(record, values=dict(record["values"])) for record in self.history],
            "fit_validation_runs": self._fit_validation_runs,
            "baseline_done": self._baseline_done,
            "config": self._config(),
            "budget": self._budget.state_dict(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._fit_validation_runs = int(state_dict.get("fit_validation_runs", 0))
        self._baseline_done = bool(state_dict.get("baseline_done", False))
        self._budget.load_state_dict(state_dict.get("budget", {}))

    # ----------------------------------------------------------------- hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        try:
            resolve_layers(pl_module, self.layers)
        except ValueError as error:
            raise MisconfigurationException(f"InvarianceMonitor: {error}") from error
        check_monitoring_callbacks(trainer, self.prefix, self.every_n_epochs, self.max_overhead is not None)
        tensorboard = any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers)
        if self.log_figures and not (tensorboard and has_matplotlib()):
            missing = "a TensorBoardLogger" if not tensorboard else "matplotlib (pip install matplotlib)"
            raise MisconfigurationException(f"InvarianceMonitor(log_figures=True) needs {missing}.")
        self._figures_enabled = tensorboard and has_matplotlib() if self.log_figures is None else self.log_figures
        if self.log_histograms and not tensorboard:
            raise MisconfigurationException("InvarianceMonitor(log_histograms=True) needs a TensorBoardLogger.")
        self._histograms_enabled = tensorboard if self.log_histograms is None else self.log_histograms
        self._measurer = Measurer(self._settings, pl_module, trainer.world_size, self._histograms_enabled)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._validation_data_ready(trainer):
            if self.measure_before_training:
                rank_zero_warn("InvarianceMonitor(measure_before_training=True): there is no validation data.")
            return
        self._measurer.check_one_batch(trainer, self._selected_indices(trainer), pl_module.device)
        if self.measure_before_training and not self._baseline_done:
            with self._budget.timed():
                self._measurer.measure_loaders(trainer, self._selected_indices(trainer), pl_module.device)
            self._finish(trainer, "baseline")
            self._baseline_done = True

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._budget.epoch_started()

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._budget.epoch_ended()

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._measuring_now = self._should_measure(trainer)
        if self._measuring_now:
            with self._budget.timed():
                self._measurer.prepare(self._selected_indices(trainer), pl_module.device)

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
        if self._measuring_now and dataloader_idx in self._selected_indices(trainer):
            with self._budget.timed():
                self._measurer.take(trainer, batch, batch_idx, dataloader_idx)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit":
            self._fit_validation_runs += 1
        if not self._measuring_now:
            return
        self._measuring_now = False
        with self._budget.timed():
            self._measurer.finish(trainer, self._selected_indices(trainer))
        validating = trainer.state.fn == "validate"
        values = self._finish(trainer, "validate" if validating else "fit")
        # callback_metrics for EarlyStopping/ModelCheckpoint; during fit the loggers already have the values at the
        # current step, `validate` logs (and returns) them with the rest of its metrics
        for name, value in values.items():
            pl_module.log(name, value, on_epoch=True, logger=validating, sync_dist=True, add_dataloader_idx=False)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._at_fit_start = (len(self.history), self._fit_validation_runs)  # after a checkpoint's state is loaded

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._figures_enabled and self._figures_step != trainer.global_step and self.history:
            self._write_figures(trainer)
        if self.print_summary and self.history:
            rank_zero_info(f"{self.summary_table()}\nInvarianceMonitor: {self._budget.summary()}")
        history_length, validation_runs = self._at_fit_start
        if len(self.history) == history_length:
            reason = self._why_nothing(self._fit_validation_runs - validation_runs)
            rank_zero_warn(f"InvarianceMonitor measured nothing during this fit: {reason}.")

    def _why_nothing(self, validation_runs: int) -> str:
        """Why a fit with ``validation_runs`` validation runs left the history as it was."""
        if not validation_runs:
            return (
                "validation never ran (no validation data or `validation_step`, `limit_val_batches=0`, or training "
                "stopped before the first validation), and the monitor measures at the end of validation"
            )
        skipped = f"every_n_epochs={self.every_n_epochs}"
        if self.max_overhead is not None:
            skipped += f" and max_overhead={self.max_overhead:g}"
        return f"none of the {validation_runs} validation runs of this fit was measured ({skipped})"

    # ----------------------------------------------------------------- when and what
    def _should_measure(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if trainer.state.fn == "validate":
            return True
        if trainer.state.fn != "fit" or (self._fit_validation_runs + 1) % self.every_n_epochs:
            return False
        if self.max_overhead is None:
            return True
        return bool(trainer.strategy.broadcast(self._budget.affordable(), src=0))  # every process decides alike

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

    def _validation_data_ready(self, trainer: pl.Trainer) -> bool:
        """Set the validation data up outside validation (a no-op after the sanity check); whether there is any.

        None where the fit runs no validation (no ``val_dataloader`` or ``validation_step``, ``limit_val_batches=0``):
        Lightning skips it, and asking for the data would raise.
        """
        if not trainer.enable_validation:
            return False
        trainer.fit_loop.epoch_loop.val_loop.setup_data()
        return bool(trainer.num_val_batches) and trainer.val_dataloaders is not None

    # ----------------------------------------------------------------- results
    def _finish(self, trainer: pl.Trainer, stage: str) -> dict[str, float]:
        """Compute, log at the current step, record and draw one measurement; the logged values."""
        with self._budget.timed():
            values = self._log_and_record(trainer, stage)
        self.history[-1]["seconds"] = self._budget.measurement_done()
        if self._handoff.in_copy and trainer.is_global_zero:
            self._handoff.write(self.history)
        return values

    def _log_and_record(self, trainer: pl.Trainer, stage: str) -> dict[str, float]:
        measurement = self._compute(trainer)
        values, step = measurement.values, trainer.global_step
        for logger in trainer.loggers if stage != "validate" else ():
            logger.log_metrics(values, step=step)
            logger.save()
        self.history.append(
            {"stage": stage, "epoch": trainer.current_epoch, "step": step, "values": values, "keys": measurement.keys}
        )
        writers = tensorboard_writers(trainer.loggers) if trainer.is_global_zero else []
        if writers and not self._layout_written:
            self._write_layout(trainer, writers)
        if writers and self._histograms_enabled:
            write_histograms(writers, self.prefix, measurement.deviations, step)
        measurements = sum(record["stage"] != "validate" for record in self.history)
        if self._figures_enabled and stage != "validate" and (measurements - 1) % self.figure_every_n == 0:
            self._write_figures(trainer)
        return values

    def _compute(self, trainer: pl.Trainer) -> Measurement:
        indices = self._selected_indices(trainer)
        computed = self._measurer.compute(indices)
        reference = normalizing_index(self.normalize_by, self.dataloader_names, indices)
        element_names = self.group.names if self.log_per_element else None
        measurement = read_scores(
            computed, indices, self._measurer.layer_order, self.scores, self._naming, reference, element_names
        )
        for layer, (index, count) in measurement.non_finite.items():
            if layer not in self._warned:
                what = "logs its scores as NaN" if self.non_finite == "nan" else "measures the other inputs"
                rank_zero_warn(
                    f"InvarianceMonitor: layer {layer!r} produced NaN or infinite values for {count} measured "
                    f"input(s) of dataloader {index}; non_finite={self.non_finite!r} {what} (shown once per layer)."
                )
        for layer, index in measurement.same_representation.items():
            if f"same representation: {layer}" not in self._warned:
                rank_zero_warn(
                    f"InvarianceMonitor: layer {layer!r}, dataloader {index}: {SAME_REPRESENTATION} (shown "
                    "once per layer).",
                    category=RuntimeWarning,
                )
                self._warned.add(f"same representation: {layer}")
        for name in measurement.nan_names:
            if name not in self._warned:
                reason = "too few measured inputs"
                if "/consistency_kappa" in name:
                    reason = "every input got the same predicted label, so its consistency is chance, not invariance"
                elif measurement.keys[name][1] in measurement.same_representation:
                    continue  # said above, once for the layer
                rank_zero_warn(f"InvarianceMonitor: {name} is NaN ({reason}).", category=RuntimeWarning)
        self._warned |= set(measurement.non_finite) | set(measurement.nan_names)
        return measurement

    def _write_layout(self, trainer: pl.Trainer, writers: Sequence[Any]) -> None:
        indices = self._selected_indices(trainer)
        labels = [self._naming.label(index, indices) for index in indices]
        setup = self._config() | {
            "inputs per dataloader": "all" if self.max_samples is None else str(self.max_samples),
            "every_n_epochs": str(self.every_n_epochs),
        }
        write_layout(writers, self._naming, self.scores, self._measurer.layer_order, labels, setup)
        self._layout_written = True

    def _write_figures(self, trainer: pl.Trainer) -> None:
        writers = tensorboard_writers(trainer.loggers) if trainer.is_global_zero else []
        if writers:
            rows = [row for row in self.history_rows() if row["stage"] != "validate"]
            layers = self._measurer.layer_order
            write_figures(writers, self.prefix, rows, self.scores, layers, trainer.global_step)
        self._figures_step = trainer.global_step
