"""Taking the input tensor out of a batch, the way users' dataloaders shape them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from lightning_invariance.batches import check_batch, is_graph_batch

__all__ = ["InputGetter", "make_input_getter", "make_target_getter"]

InputGetter = Callable[[Any], Tensor]


def make_input_getter(input_key: str | int | Callable[[Any], Tensor] | None = None) -> InputGetter:
    """Build ``batch -> input tensor``.

    ``None``: the batch itself if it is a tensor or a torch_geometric ``Batch``, its first element if a tuple/list,
    its ``"input"``, ``"x"`` or ``"image"`` entry if a dict. An ``int`` indexes a tuple/list, a ``str`` names a dict
    key, a callable is used as is (it may return a dict of tensors, the fields a ``FieldGroup`` acts on).
    Each getter raises ``TypeError``/``KeyError`` naming what it found when the batch does not fit.
    """
    if callable(input_key):
        return _CheckedCallable(input_key, "the `input_key` callable")
    if input_key is not None and not isinstance(input_key, (str, int)):
        raise TypeError(
            f"Expected `input_key` to be None, an int, a str or a callable, got {type(input_key).__name__}."
        )
    return _InputGetter(input_key)


class _InputGetter:
    """``batch -> input tensor`` for an index, a dict key or the defaults.

    A class rather than a closure, so that a callback holding it pickles (``ddp_spawn`` sends callbacks to its
    processes).
    """

    def __init__(self, input_key: str | int | None) -> None:
        self.input_key = input_key

    def __call__(self, batch: Any) -> Tensor:
        input_key = self.input_key
        if input_key is None:
            if isinstance(batch, Tensor) or is_graph_batch(batch):  # a torch_geometric Batch: the graphs themselves
                return batch
            if isinstance(batch, (tuple, list)) and batch:
                return _require_tensor(batch[0], "element 0 of the batch")
            if isinstance(batch, Mapping):
                for key in ("input", "x", "image"):
                    if key in batch:
                        return _require_tensor(batch[key], f"batch[{key!r}]")
                raise KeyError(
                    f"The batch is a dict with keys {sorted(map(str, batch))} and none of 'input', 'x', "
                    "'image': pass `input_key` naming the input's key, or a callable."
                )
            raise TypeError(
                f"Cannot find the input in a batch of type {type(batch).__name__}: pass `input_key` (an "
                "index, a dict key, or a callable batch -> tensor)."
            )
        if isinstance(input_key, str):
            if not isinstance(batch, Mapping) or input_key not in batch:
                found = sorted(map(str, batch)) if isinstance(batch, Mapping) else type(batch).__name__
                raise KeyError(f"input_key={input_key!r} is not in the batch (found {found}).")
            return _require_tensor(batch[input_key], f"batch[{input_key!r}]")
        if not isinstance(batch, (tuple, list)) or not -len(batch) <= input_key < len(batch):
            found = f"a {type(batch).__name__}"
            if isinstance(batch, (tuple, list)):
                found += f" of length {len(batch)}"
            raise TypeError(f"input_key={input_key} needs a tuple/list batch with that index; got {found}.")
        return _require_tensor(batch[input_key], f"element {input_key} of the batch")


def make_target_getter(target_key: str | int | Callable[[Any], Tensor] | None = None) -> InputGetter:
    """Build ``batch -> labels``, like :func:`make_input_getter`.

    ``None`` takes element 1 of a tuple/list or the ``"target"``, ``"y"``, ``"label"`` or ``"labels"`` entry of a
    dict.
    """
    if callable(target_key):
        return _CheckedCallable(target_key, "the `target_key` callable", fields=False)
    if target_key is not None:
        return make_input_getter(target_key)
    return _default_target


def _default_target(batch: Any) -> Tensor:
    if is_graph_batch(batch) and isinstance(getattr(batch, "y", None), Tensor):
        return batch.y
    if isinstance(batch, (tuple, list)) and len(batch) > 1:
        return _require_tensor(batch[1], "element 1 of the batch (the labels)")
    if isinstance(batch, Mapping):
        for key in ("target", "y", "label", "labels"):
            if key in batch:
                return _require_tensor(batch[key], f"batch[{key!r}]")
    found = sorted(map(str, batch)) if isinstance(batch, Mapping) else type(batch).__name__
    raise KeyError(
        f"Cannot find the labels in the batch ({found}): pass `target_key` (an index, a dict key, or a callable "
        "batch -> labels)."
    )


def _require_tensor(value: Any, where: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(
            f"Expected {where} to be the input tensor, but it is a {type(value).__name__}; pass "
            "`input_key` (an index, a dict key, or a callable batch -> tensor)."
        )
    return value


class _CheckedCallable:
    """A user's ``batch -> input`` callable whose result is checked (picklable if the callable is).

    Inputs may be a tensor or a dict of tensors (fields, for a ``FieldGroup``); labels must be a tensor.
    """

    def __init__(self, fn: Callable[[Any], Any], where: str, fields: bool = True) -> None:
        self.fn, self.where, self.fields = fn, where, fields

    def __call__(self, batch: Any) -> Any:
        value = self.fn(batch)
        if self.fields and (isinstance(value, Mapping) or is_graph_batch(value)):
            check_batch(value, f"the value returned by {self.where}")
            return value
        return _require_tensor(value, f"the value returned by {self.where}")
