"""Measuring on the CPU lets glibc's malloc keep freed memory, so each chunk's temporaries do not fault pages in again.

Each case runs in a fresh interpreter: malloc's thresholds are process state, and the test suite's own tensors
have raised them long before this file runs.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="about glibc's malloc on Linux"
)

REUSE_FAULTS = """
import resource, sys
import torch
from torch import nn
from lightning_invariance import Probe
from lightning_invariance.groups import CyclicRotation

if sys.argv[1] == "after a measurement":
    Probe(nn.Flatten(), CyclicRotation(4)).orbit_features(torch.zeros(2, 1, 4, 4))
faults = []
for chunk in range(6):  # each chunk holds three 8 MiB temporaries at once (captured layers, a difference block)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(2 << 20) for _ in range(3)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[1:]))  # after the first chunk: the fewest (small allocations around a freed block vary)
"""


def _reuse_faults(case: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", REUSE_FAULTS, case], capture_output=True, text=True, timeout=120, check=True
    )
    return int(done.stdout.split()[-1])


def test_a_cpu_measurement_keeps_freed_temporaries_for_reuse():
    # Whether a fresh process gives its heap back at all varies from run to run (its memory layout): about one in
    # three here faulted nothing, and shows no difference. Look for one that does, then measure after a measurement.
    fresh = []
    while len(fresh) < 4 and (not fresh or fresh[-1] < 500):  # about 4000 pages of 4 KiB when it gives back
        fresh.append(_reuse_faults("fresh"))
    if fresh[-1] < 500:  # huge pages or fixed malloc thresholds would not show it either
        pytest.skip(f"fresh processes faulted only {fresh} pages per chunk of three 8 MiB temporaries here")
    after = [_reuse_faults("after a measurement") for _ in range(3)]  # each would fault ~4000 pages in 2 of 3
    assert max(after) < 100, after
