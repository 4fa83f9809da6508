"""The one positive-int check every module uses (metrics and groups raise ``ValueError``, the callback its own)."""

from __future__ import annotations

from typing import Any

__all__ = ["check_optional_positive", "check_positive", "is_positive_int"]


def is_positive_int(value: Any) -> bool:
    """An ``int`` (not a ``bool``) of at least 1."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_positive(name: str, value: Any, owner: str | None = None) -> None:
    """Accept a positive int; raise the torchmetrics-style ``ValueError`` naming the argument (and its class)."""
    if not is_positive_int(value):
        where = f"`{name}`" + (f" of {owner}" if owner else "")
        raise ValueError(f"Expected argument {where} to be a positive int, but got {value!r}.")


def check_optional_positive(name: str, value: Any, owner: str | None = None) -> None:
    """Accept ``None`` or a positive int; raise the torchmetrics-style ``ValueError`` otherwise."""
    if value is not None and not is_positive_int(value):
        where = f"`{name}`" + (f" of {owner}" if owner else "")
        raise ValueError(f"Expected argument {where} to be None or a positive int, but got {value!r}.")
