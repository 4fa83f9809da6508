"""On accelerators an update issues as many operations for 1024 samples as for 256: none per small block of samples.

Each operation is a kernel launch on a GPU, and issuing one costs the host microseconds: a metric that loops over
small blocks of samples (the CPU's cache-sized blocks, the normaliser's blocks of ``window`` rows) issues hundreds per
chunk, and a small layer's measurement then costs many times its forward pass. (Only orbits beyond a block of
``_sync.ACCELERATOR_BLOCK_VALUES`` values go in several, each long enough on a GPU to hide its launches:
``test_temporaries.py``.) The counter sees the operations on the
CPU (through a ``TorchDispatchMode``), with the accelerators' path taken by emptying ``HOST_BRANCH_DEVICES``;
``benchmarks/kernel_counts.py`` prints the counts.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_invariance import InvarianceDeviation, _sync
from lightning_invariance.functional import normalizer
from lightning_invariance.groups import CyclicRotation, SpatialAction
from lightning_invariance.metrics import EquivarianceDeviation, LinearMapFit, NormalizedVariance

VIEWS = {"alias", "as_strided", "detach", "expand", "permute", "reshape", "select", "slice", "squeeze", "t"}
VIEWS |= {"transpose", "unbind", "unflatten", "unfold", "unsqueeze", "view", "_unsafe_view", "_reshape_alias"}
VIEWS |= {"split"}


class OperationCounter(TorchDispatchMode):
    """Counts the ATen operations that compute or copy (views left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func.overloadpacket.__name__ not in VIEWS
        return func(*args, **(kwargs or {}))


def _operations(build, num_samples: int) -> int:
    """Operations in the third update of ``(4, num_samples, 8, 8, 8)`` features (the first two fill the state)."""
    features = torch.randn(4, num_samples, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    metric = build()
    metric.update(features)
    metric.update(features)
    with OperationCounter() as counter:
        metric.update(features)
    return counter.count


@pytest.mark.parametrize(
    "build",
    [
        lambda: InvarianceDeviation(4, normalize=True),
        lambda: InvarianceDeviation(4, distance="cosine", reference="identity"),
        lambda: EquivarianceDeviation(SpatialAction(CyclicRotation(4)), normalize=True),
        lambda: NormalizedVariance(),
        lambda: LinearMapFit(4),
    ],
    ids=["geed", "cosine", "equivariance", "variance", "fitted maps"],
)
def test_an_update_issues_as_many_operations_for_more_samples(monkeypatch, build) -> None:
    monkeypatch.setattr(_sync, "HOST_BRANCH_DEVICES", frozenset())
    assert _sync.ACCELERATOR_BLOCK_VALUES >= 4 * 1024 * 512  # each orbit is one block on accelerators
    assert normalizer.PAIRING_ROWS >= 1024  # and each is paired in one piece
    assert _operations(build, 1024) == _operations(build, 256)
