"""Argument checks of InvarianceMonitor: in the constructor, and in ``setup`` against the Trainer."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lightning_invariance._checks import is_positive_int
from lightning_invariance.callbacks._scores import LINEAR_SCORES
from lightning_invariance.functional.lie import GENERATORS
from lightning_invariance.groups.actions import RepresentationAction
from lightning_invariance.groups.base import Group

__all__ = [
    "check_dataloaders",
    "check_group",
    "check_layer_actions",
    "check_max_overhead",
    "check_measure_options",
    "check_monitoring_callbacks",
    "check_options",
    "check_positive",
]


def check_group(group: Any) -> None:
    """Require a Group instance, and say what to do with the usual mistakes (a class, a plain transform)."""
    if isinstance(group, Group):
        return
    if isinstance(group, type) and issubclass(group, Group):
        raise MisconfigurationException(
            f"`group` must be a Group instance, but got the class {group.__name__}: call it, e.g. "
            f"{group.__name__}(4) for CyclicRotation."
        )
    if callable(group):
        raise MisconfigurationException(
            f"`group` must be a lightning_invariance Group, but got the callable {type(group).__name__}: wrap a "
            "transform (e.g. a random augmentation) as AugmentationFamily(transform, num_elements=8, seed=0)."
        )
    raise MisconfigurationException(f"`group` must be a lightning_invariance Group, got {type(group).__name__}.")


def check_layer_actions(
    action: RepresentationAction | Mapping[str, RepresentationAction | None] | None,
    layers: Sequence[str],
    group: Group,
    reference: str | None,
) -> dict[str, RepresentationAction | None]:
    """Each layer's action (``None``: invariance), from one action for every layer or a ``{layer: action}`` map."""
    if isinstance(action, Mapping):
        unknown = [name for name in action if name not in layers]
        if unknown:
            raise MisconfigurationException(
                f"`action` names layer(s) {unknown} that are not in `layers` {list(layers)}."
            )
        actions = {layer: action.get(layer) for layer in layers}
    else:
        if action is not None and reference is not None:
            raise MisconfigurationException(
                f"`reference={reference!r}` applies to invariance only; with an `action` every layer is compared with "
                "the action on the untransformed representation. Drop `reference`, or pass `action` as a "
                "{layer: action} map so that the other layers measure invariance."
            )
        actions = dict.fromkeys(layers, action)
    for layer, layer_action in actions.items():
        if layer_action is None:
            continue
        if not isinstance(layer_action, RepresentationAction):
            raise MisconfigurationException(
                f"The action of layer {layer!r} must be a RepresentationAction, got {type(layer_action).__name__}."
            )
        try:
            layer_action.check_group(group)
        except ValueError as error:
            raise MisconfigurationException(f"The action of layer {layer!r} does not fit the group: {error}") from error
    return actions


def check_max_overhead(value: Any) -> None:
    """``None`` or a positive, finite fraction of the training time."""
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
        raise MisconfigurationException(
            f"`max_overhead` must be None or a positive number (a fraction of training time, e.g. 0.1), got {value!r}."
        )


def check_dataloaders(dataloaders: Any) -> tuple[list[int] | None, dict[int, str]]:
    """The measured dataloader indices (``None``: all) and their names, from indices or a ``{name: index}`` map."""
    names: dict[int, str] = {}
    if isinstance(dataloaders, Mapping):
        if any(not isinstance(name, str) or not name or "/" in name for name in dataloaders):
            raise MisconfigurationException(
                f"`dataloaders` names must be non-empty strings without '/', got {list(dataloaders)}."
            )
        names = {index: name for name, index in dataloaders.items()}
        if len(names) != len(dataloaders):
            raise MisconfigurationException(f"`dataloaders` gives one dataloader two names: {dict(dataloaders)}.")
        dataloaders = list(dataloaders.values())
    elif isinstance(dataloaders, int):
        dataloaders = [dataloaders]
    if dataloaders is not None and (
        not dataloaders or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in dataloaders)
    ):
        raise MisconfigurationException(
            f"`dataloaders` must be None, non-negative indices or a {{name: index}} map, got {dataloaders!r}."
        )
    return (None if dataloaders is None else sorted(set(dataloaders))), names


def check_monitoring_callbacks(trainer: pl.Trainer, prefix: str, every_n_epochs: int, budgeted: bool = False) -> None:
    """Refuse, before training, an EarlyStopping/ModelCheckpoint that would look for a score on an unmeasured epoch.

    With ``every_n_epochs > 1`` the scores exist only on measured validation runs. ``EarlyStopping(strict=False)``
    skips the other runs; ``ModelCheckpoint`` must save only on measured epochs (``every_n_epochs`` a multiple of
    the callback's, validation every epoch). Under ``max_overhead`` (``budgeted``) which runs are measured is decided
    during training, so no checkpoint schedule can follow it.
    """
    if every_n_epochs == 1 and not budgeted:
        return
    why = "a time budget (`max_overhead`)" if budgeted else f"every {every_n_epochs} validation runs"
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        monitor = getattr(callback, "monitor", None)
        if not isinstance(monitor, str) or not monitor.startswith(f"{prefix}/"):
            continue
        if isinstance(callback, EarlyStopping) and callback.strict:
            raise MisconfigurationException(
                f"EarlyStopping(monitor={monitor!r}) would stop at the first validation without that score: "
                f"InvarianceMonitor measures by {why}. Pass EarlyStopping(..., strict=False) so that it skips the "
                "unmeasured ones."
            )
        if isinstance(callback, ModelCheckpoint) and budgeted:
            raise MisconfigurationException(
                f"ModelCheckpoint(monitor={monitor!r}) cannot save on measured epochs only: under `max_overhead` the "
                "callback decides during training which validation runs to measure. Monitor another metric, or use "
                "`every_n_epochs` instead of `max_overhead`."
            )
        if isinstance(callback, ModelCheckpoint):
            _check_checkpoint_epochs(trainer, callback, monitor, every_n_epochs)


def _check_checkpoint_epochs(
    trainer: pl.Trainer, checkpoint: ModelCheckpoint, monitor: str, every_n_epochs: int
) -> None:
    validation_every = trainer.check_val_every_n_epoch
    saves_every = checkpoint._every_n_epochs  # no public accessor; the constructor argument it holds
    by_steps = checkpoint._every_n_train_steps or checkpoint._train_time_interval is not None
    if validation_every is None or trainer.val_check_interval != 1.0:
        return  # validation on a step schedule: epochs do not map to measurements; Lightning reports a missing key
    measured = every_n_epochs * validation_every
    if not by_steps and saves_every < 1:
        return  # never saves on epochs
    if by_steps or math.lcm(saves_every, validation_every) % measured:
        raise MisconfigurationException(
            f"ModelCheckpoint(monitor={monitor!r}) would save on epochs where InvarianceMonitor(every_n_epochs="
            f"{every_n_epochs}) measures nothing. Pass ModelCheckpoint(..., every_n_epochs={measured}) (or a multiple)."
        )


def check_measure_options(
    scores: Sequence[str],
    max_samples: int | None,
    lie_generator: str | None,
    num_classes: int | None,
    border_mask: bool,
    actions: Sequence[RepresentationAction],
) -> None:
    if any(score in LINEAR_SCORES for score in scores) and max_samples is None:
        raise MisconfigurationException(
            "The linear_* scores fit maps on half of the cached inputs and test them on the other half: set "
            "`max_samples` (e.g. 512), not None."
        )
    if ("lie_derivative" in scores) != (lie_generator is not None):
        raise MisconfigurationException(
            f'The "lie_derivative" score and `lie_generator` (one of {GENERATORS}) go together; got scores='
            f"{tuple(scores)} and lie_generator={lie_generator!r}."
        )
    if lie_generator is not None:
        check_options("lie_generator", (lie_generator,), GENERATORS)
    if num_classes is not None:
        check_positive("num_classes", num_classes)
    if border_mask and not any(not action.trivial for action in actions):
        raise MisconfigurationException("`border_mask=True` needs a spatial `action` (equivariance of feature maps).")


def check_options(name: str, values: Sequence[str], allowed: Sequence[str]) -> None:
    bad = [value for value in values if value not in allowed]
    if bad:
        raise MisconfigurationException(f"`{name}` accepts {tuple(allowed)}, but got {bad[0]!r}.")


def check_positive(name: str, value: Any) -> None:
    """The shared positive-int check, raised as Lightning's ``MisconfigurationException``."""
    if not is_positive_int(value):
        raise MisconfigurationException(f"`{name}` must be a positive int, got {value!r}.")
