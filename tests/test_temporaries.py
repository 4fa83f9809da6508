"""On accelerators a metric update's temporaries stay within a block of samples, however large the layer.

A GPU measures at 2048 inputs a pass, where one layer's orbit can hold 2^26 values or more; a temporary as large as
the orbit (its difference to the centroid, a float64 copy) then adds the layer's size again to the forward pass's
peak memory, or several times it. The updates run on "meta" tensors (no memory is used), and a dispatch mode records
the largest tensor any operation makes.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_invariance import InvarianceDeviation, _sync
from lightning_invariance.groups import CyclicRotation, SpatialAction
from lightning_invariance.metrics import (
    EquivarianceDeviation,
    LinearEquivariance,
    LinearMapFit,
    NormalizedVariance,
)

VIEWS = {"alias", "as_strided", "detach", "expand", "permute", "reshape", "select", "slice", "squeeze", "t"}
VIEWS |= {"transpose", "unbind", "unflatten", "unfold", "unsqueeze", "view", "_unsafe_view", "_reshape_alias", "split"}


class LargestTemporary(TorchDispatchMode):
    """The bytes of the largest tensor an operation made (views of existing memory left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes, self.operation = 0, ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and name not in VIEWS:
                size = tensor.numel() * tensor.element_size()
                if size > self.bytes:
                    self.bytes, self.operation = size, f"{name} {tuple(tensor.shape)} {tensor.dtype}"
        return out


@pytest.mark.parametrize(
    "build",
    [
        lambda: InvarianceDeviation(4, normalize=True),
        lambda: EquivarianceDeviation(SpatialAction(CyclicRotation(4)), normalize=True),
        NormalizedVariance,
        lambda: LinearMapFit(4),
        lambda: LinearEquivariance(torch.zeros(4, 129, 128), normalize=True),
    ],
    ids=["geed", "equivariance", "variance", "fitted maps (fit)", "fitted maps (held out)"],
)
def test_an_update_keeps_its_temporaries_within_a_block_on_accelerators(meta_device, build) -> None:
    orbit = torch.empty(4, 512, 32, 32, 32, device="meta")  # 2^26 values: 256 MiB of float32
    metric = build().to("meta")
    metric.update(orbit)  # the first update fills the normaliser's boundary rows
    with LargestTemporary() as largest:
        metric.update(orbit)
    block = _sync.block_values(orbit.device)
    assert block <= orbit.numel() // 4, "a large layer is measured in several blocks"
    # a float32 block at most (the difference to the centroid; float64 work goes in smaller blocks): a quarter of
    # the orbit here, where the difference and a float64 copy of it were as large as the orbit, and twice that
    assert largest.bytes <= 4 * block, largest.operation


def test_blocks_of_samples_give_the_numbers_of_one_pass(monkeypatch) -> None:
    """Blocked (as a large layer is on an accelerator) and in one pass: the same G-EED (normaliser included),
    variance and fitted maps."""
    orbit = torch.randn(4, 150, 3, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    builds = {
        "geed": lambda: InvarianceDeviation(4, normalize=True),
        "variance": NormalizedVariance,
        "maps": lambda: LinearMapFit(4, max_features=8),
    }

    def scores() -> dict[str, torch.Tensor]:
        results = {}
        for name, build in builds.items():
            metric = build()
            metric.update(orbit)
            results[name] = metric.compute() if name != "maps" else metric.compute_summary()["maps"]
        return results

    whole = scores()
    # the accelerators' path: orbits in blocks of 5 samples (30 blocks), the normaliser's rows in pieces of its
    # window (64, 64, 22)
    monkeypatch.setattr(_sync, "HOST_BRANCH_DEVICES", frozenset())
    monkeypatch.setattr(_sync, "ACCELERATOR_BLOCK_VALUES", 4 * 5 * 3 * 6 * 6)
    assert _sync.samples_per_block(orbit) == 5
    blocked = scores()
    for name, value in whole.items():
        torch.testing.assert_close(blocked[name], value, rtol=1e-12, atol=1e-12, msg=name)
