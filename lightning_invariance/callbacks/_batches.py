"""The validation inputs InvarianceMonitor measures: read as the validation loop reads them, and cached.

Outside a validation run (the untrained baseline, the shape check before training) batches are read from
``trainer.val_dataloaders`` and go through what the loop applies before ``validation_step``: the precision plugin's
conversion (``bf16-true`` casts inputs to bfloat16), the ``on_before_batch_transfer`` hook, the move to the device
and ``on_after_batch_transfer``. So the model sees the inputs validation gives it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor

from lightning_invariance.batches import Batch, batch_size, detached_copy, slice_batch

__all__ = ["InputCache", "dataset_size", "validation_batches"]


def validation_batches(trainer: pl.Trainer, index: int) -> Iterator[tuple[int, Any]]:
    """``(batch_idx, batch)`` of validation dataloader ``index``, as ``validation_step`` would get them.

    Bounded by ``limit_val_batches``. The caller sets the data up (``val_loop.setup_data()``) and forks the RNG:
    iterating a shuffling loader draws from it.
    """
    loaders = trainer.val_dataloaders
    loader = loaders[index] if isinstance(loaders, (list, tuple)) else loaders
    limit = trainer.num_val_batches[index]
    for batch_idx, batch in enumerate(loader):
        if batch_idx >= limit:
            return
        yield batch_idx, _as_validation_sees(trainer, batch, index)


def _as_validation_sees(trainer: pl.Trainer, batch: Any, index: int) -> Any:
    batch = trainer.precision_plugin.convert_input(batch)
    datamodule = trainer.datamodule
    hooks = datamodule if datamodule is not None and is_overridden("on_before_batch_transfer", datamodule) else None
    batch = (hooks or trainer.lightning_module).on_before_batch_transfer(batch, index)
    return trainer.strategy.batch_to_device(batch, dataloader_idx=index)


def dataset_size(trainer: pl.Trainer, index: int) -> int | None:
    """The size of validation dataloader ``index``'s dataset (to drop a distributed sampler's padding), if known."""
    loaders = trainer.val_dataloaders if trainer.state.fn == "fit" or trainer.validating else None
    if loaders is None:
        return None
    loader = loaders[index] if isinstance(loaders, (list, tuple)) else loaders if index == 0 else None
    try:
        return len(loader.dataset)  # type: ignore[union-attr, arg-type]
    except (AttributeError, TypeError):
        return None


class InputCache:
    """The first ``size`` inputs (and labels) of each dataloader, copied once and re-used by every measurement."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.batches: dict[int, list[tuple[Batch, Tensor | None]]] = {}
        self.closed: set[int] = set()

    def count(self, index: int) -> int:
        return sum(batch_size(inputs) for inputs, _ in self.batches.get(index, []))

    def full(self, index: int) -> bool:
        return self.count(index) >= self.size

    def add(self, inputs: Batch, labels: Tensor | None, index: int) -> None:
        """Copy what fits of one batch (normal tensors, usable outside validation's inference mode)."""
        room = self.size - self.count(index)
        if room <= 0:
            return
        with torch.inference_mode(False):
            copied = (detached_copy(slice_batch(inputs, 0, room)), None if labels is None else labels[:room].clone())
        self.batches.setdefault(index, []).append(copied)

    def close(self, index: int) -> list[tuple[Batch, Tensor | None]]:
        """Stop filling dataloader ``index``'s cache; its batches so far."""
        self.closed.add(index)
        return self.batches.get(index, [])
