"""Full float32 matrix products inside the measuring code, whatever precision the caller set, and the caller's back.

PyTorch has two ways to let float32 matrix products run in reduced precision (TF32, or bf16 passes on CPUs with
AVX-512 BF16 or AMX): the legacy ``torch.set_float32_matmul_precision`` and, from 2.9, per-backend settings
(``torch.backends.cuda.matmul.fp32_precision``, ``torch.backends.mkldnn.matmul.fp32_precision``, and the generic
``torch.backends.fp32_precision`` they inherit from when set to ``"none"``), which PyTorch recommends. Once the
per-backend settings lower a precision the legacy getter raises instead of answering, so the state is read per
backend where it must be.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["full_float32_matmul"]


def _per_backend_settings() -> list[Any]:
    """The per-backend settings of float32 matrix products' precision (none before PyTorch 2.9)."""
    settings = [torch.backends.cuda.matmul, getattr(torch.backends.mkldnn, "matmul", None)]
    return [setting for setting in settings if setting is not None and hasattr(setting, "fp32_precision")]


def _legacy_precision() -> str | None:
    """``torch.get_float32_matmul_precision()``, or None where per-backend settings make it refuse to answer."""
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:  # "you have used mix of the legacy and new APIs"
        return None


def _to_restore(setting: Any) -> str:
    """What to set ``setting`` back to, leaving it at ``"none"`` (inherit) meanwhile.

    ``"none"`` where the precision it shows is the one it would inherit (it then keeps following its parent), else
    that precision.
    """
    shown = setting.fp32_precision
    setting.fp32_precision = "none"
    return "none" if setting.fp32_precision == shown else shown


@contextlib.contextmanager
def full_float32_matmul() -> Iterator[None]:
    """Run float32 matrix products in full float32 inside, and leave every precision setting as it was found.

    Where the legacy setting answers ``"highest"``, no backend lowers a product's precision (PyTorch refuses to
    answer otherwise) and nothing is changed: the common case costs one read. Otherwise each backend's setting is set
    to full precision, which lets the legacy one be read, then the legacy one too (so that the two agree, as PyTorch
    checks before some products); all are restored on the way out, also on error.
    """
    if _legacy_precision() == "highest":
        yield
        return
    settings = _per_backend_settings()
    restore = [(setting, _to_restore(setting)) for setting in settings]
    for setting in settings:
        setting.fp32_precision = "ieee"
    legacy = torch.get_float32_matmul_precision()  # answers now: no backend lowers a product's precision
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(legacy)
        for setting, precision in restore:
            setting.fp32_precision = precision
