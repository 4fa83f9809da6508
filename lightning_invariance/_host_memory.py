"""Letting glibc's malloc keep freed memory for reuse while the CPU measures.

glibc serves a request above its mmap threshold with fresh pages from the system, and gives the top of its heap back
to the system once more than twice that threshold lies free there. The threshold starts at 128 KiB and rises to
the size of any mmap-served block that is freed, up to 32 MiB. A process whose largest temporaries are a few MiB
(a small CNN on small images) keeps low thresholds, and the probe's temporaries (the captured layers of a chunk,
a block's difference to the centroid) then grow the heap by some MiB and, in about two processes of three here (it
varies with where the heap lies), give it back at every other chunk: each page faulted in again, zeroed by the
kernel. A probe pass of 4 layers of the small CNN of ``benchmarks/probe_overhead.py`` took 140k-193k such page
faults and cost 2.4-2.5x its forward passes under C4 and D4 (medians of 3 processes); with the thresholds settled,
1.4k-2k faults and 2.2x and 1.7x (``benchmarks/page_faults.py``).

:func:`settle_host_allocator` frees one 31 MiB block, once per process, so that the thresholds are where a
process that ever freed such a tensor (a batch of 256 images of 3x96x96, say) has them anyway: blocks of up to
31 MiB come from the heap and up to 62 MiB of its free top is kept. It changes no value, only where freed memory
waits; elsewhere than glibc, or where ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` fix the thresholds,
it changes nothing.
"""

from __future__ import annotations

import platform

import torch

__all__ = ["settle_host_allocator"]

#: A block just under glibc's largest dynamic mmap threshold (32 MiB on 64-bit systems): freeing it sets the threshold.
SETTLING_BLOCK_BYTES = 31 << 20
_settled = False


def settle_host_allocator() -> None:
    """Raise glibc's dynamic malloc thresholds as freeing a 31 MiB tensor does (once per process; no page touched)."""
    global _settled
    if _settled:
        return
    _settled = True
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        block = torch.empty(SETTLING_BLOCK_BYTES, dtype=torch.uint8)  # served by mmap, untouched
        del block  # unmapped: the thresholds rise to its size
