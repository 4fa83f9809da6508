"""Where the host may branch on a tensor's value: one policy for the measuring hot path.

Reading a value on the host (``bool(t)``, ``float(t)``, ``.item()``, boolean indexing) makes it wait until the
device has computed it. On the CPU that costs nothing, and branching saves work (a fallback computed only when it is
needed). On an accelerator it stalls the queue of kernels, so the hot path computes the fallback for every row and
selects on the device instead; both give the same values.

The same split sets how much one operation of the hot path covers (:func:`block_values`): on the CPU, cache-sized
blocks of samples (large fresh temporaries cost more in page faults than in arithmetic); on accelerators, blocks as
large as keep the operations few (each is a kernel launch the host issues, which for a small layer costs more than
its arithmetic) and the temporaries a fraction of a large layer: 2^24 values, 64 MiB of float32, which a GPU takes
several times longer to read than the host takes to launch the kernel. (With 2^26, and whole-orbit float64 copies, the
probe's peak memory was 2.1x the forward passes' for a small CNN on 32x32 inputs at 2048 inputs a pass; it is 1.06x
now: ``benchmarks/accelerator_memory.py``.)

Copying a CPU tensor to an accelerator makes the host wait too (a copy from pageable memory synchronises the stream),
so the constants that groups and actions apply in every chunk (permutation tables, affine and rotation matrices)
are copied to a device once and reused: :func:`constant_on`.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

__all__ = [
    "HOST_BRANCH_DEVICES",
    "block_values",
    "branches_on_host",
    "constant_on",
    "sample_blocks",
    "samples_per_block",
]

#: Device types on which the hot path may read tensor values on the host to branch.
HOST_BRANCH_DEVICES = frozenset({"cpu"})
#: The most values one operation of the hot path covers: on those devices, and on the others.
HOST_BLOCK_VALUES, ACCELERATOR_BLOCK_VALUES = 1 << 20, 1 << 24


def branches_on_host(device: torch.device) -> bool:
    """Whether code running on ``device`` may branch on a tensor's value (a host sync) rather than select on it."""
    return device.type in HOST_BRANCH_DEVICES


def block_values(device: torch.device) -> int:
    """How many values one operation of the hot path covers at most on ``device`` (larger inputs go in blocks)."""
    return HOST_BLOCK_VALUES if branches_on_host(device) else ACCELERATOR_BLOCK_VALUES


def samples_per_block(orbit: Tensor, share: int = 1) -> int:
    """How many samples of ``orbit`` ``(|G|, N, ...)`` one block of the hot path holds on its device.

    All of them when the orbit has at most ``block_values(device) // share`` values, else as many whole orbits as fit
    (at least one): per-sample work done block by block keeps its temporaries within a block. ``share`` > 1 for work
    that holds several float64 copies of a block at once.
    """
    limit = block_values(orbit.device) // share
    if orbit.numel() <= limit:
        return max(1, orbit.shape[1])
    return max(1, limit // max(1, orbit[:, :1].numel()))


def sample_blocks(orbit: Tensor, share: int = 1) -> list[slice]:
    """The blocks of :func:`samples_per_block` as slices of the sample axis, in order (one, empty, for no samples)."""
    step = samples_per_block(orbit, share)
    return [slice(start, start + step) for start in range(0, max(1, orbit.shape[1]), step)]


#: Copies made by :func:`constant_on`, by the ``id`` of the constant they copy (dropped with it).
_COPIES: dict[int, dict[tuple[torch.device, torch.dtype], Tensor]] = {}


def constant_on(constant: Tensor, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    """``constant`` on ``device`` (in ``dtype``), copied there once and reused while ``constant`` lives.

    For tensors that never change after they are made (a group's tables and matrices): index the returned tensor
    rather than caching a row, since each indexing makes a new tensor.
    """
    dtype = dtype or constant.dtype
    if constant.device == device and constant.dtype == dtype:
        return constant
    copies = _COPIES.get(id(constant))
    if copies is None:
        copies = _COPIES[id(constant)] = {}
        weakref.finalize(constant, _COPIES.pop, id(constant), None)
    key = (device, dtype)
    if key not in copies:
        copies[key] = constant.to(device, dtype)
    return copies[key]
