"""Where the host may branch on a tensor's value: one policy for the measuring hot path.

Reading a value on the host (``bool(t)``, ``float(t)``, ``.item()``, boolean indexing) makes it wait until the
device has computed it. On the CPU that costs nothing, and branching saves work (a fallback computed only when it is
needed). On an accelerator it stalls the queue of kernels, so the hot path computes the fallback for every row and
selects on the device instead; both give the same values.
"""

from __future__ import annotations

import torch

__all__ = ["HOST_BRANCH_DEVICES", "branches_on_host"]

#: Device types on which the hot path may read tensor values on the host to branch.
HOST_BRANCH_DEVICES = frozenset({"cpu"})


def branches_on_host(device: torch.device) -> bool:
    """Whether code running on ``device`` may branch on a tensor's value (a host sync) rather than select on it."""
    return device.type in HOST_BRANCH_DEVICES
