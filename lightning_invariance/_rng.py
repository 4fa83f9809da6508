"""One fork of every global random number generator: torch (CPU and CUDA), Python's ``random`` and NumPy's."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch

__all__ = ["cuda_indices", "fork_rng"]


@contextlib.contextmanager
def fork_rng(devices: Sequence[int] = (), seed: int | None = None) -> Iterator[None]:
    """Run the block with private copies of torch's, Python's and NumPy's global RNG states.

    Whatever the block draws (a model that calls ``random.random()`` or ``numpy.random.rand()`` in ``forward``, an
    augmentation), the caller's streams continue afterwards as if it had not run, also when it raises. ``devices``
    are the CUDA device indices whose generators are forked as well; ``seed`` seeds all of them inside the block.
    """
    python_state = random.getstate()
    numpy_random = _numpy_random()
    numpy_state = None if numpy_random is None else numpy_random.get_state()
    try:
        with torch.random.fork_rng(devices=list(devices)):
            if seed is not None:
                torch.manual_seed(seed)
                random.seed(seed)
                if numpy_random is not None:
                    numpy_random.seed(seed % 2**32)
            yield
    finally:
        random.setstate(python_state)
        if numpy_random is not None:
            numpy_random.set_state(numpy_state)


def cuda_indices(device: torch.device) -> list[int]:
    """The CUDA generator indices to fork for work on ``device`` (none off CUDA)."""
    return [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []


def _numpy_random() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy ships with torch's usual installs
        return None
    return numpy.random
