"""Fixtures shared by the tests of the accelerators' path (host syncs, temporaries), run on the CPU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from lightning_invariance import _sync
from lightning_invariance import probe as probe_module


@pytest.fixture
def accelerator_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the code as it runs on an accelerator (no host branches), each chunk's features handed over on their own.

    The probe gathers small layers over chunks and updates their metrics once per block; these models' layers are
    all small, so without turning that off every count would be of one update, however many chunks.
    """
    monkeypatch.setattr(_sync, "HOST_BRANCH_DEVICES", frozenset())
    monkeypatch.setattr(probe_module, "GATHER_VALUES", 1)


@pytest.fixture
def meta_device(accelerator_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The accelerators' path on "meta" tensors: any read of a value fails there, and so does a CPU tensor mixed in.

    Under deterministic algorithms (``Trainer(deterministic=True)``), which "meta" checks as CUDA would: an operation
    without a deterministic CUDA kernel fails.
    """
    autocast = torch.autocast  # "meta" has no autocast; measuring only ever turns it off

    def no_autocast_on_meta(kind: str, **kwargs):
        return contextlib.nullcontext() if kind == "meta" else autocast(kind, **kwargs)

    monkeypatch.setattr(torch, "autocast", no_autocast_on_meta)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
