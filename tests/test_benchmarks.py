"""The benchmark scripts still run (tiny sizes, no timing asserted: these machines are noisy)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("probe_overhead.py", "probe / floor"),
        ("vs_loop.py", "speed-up"),
        ("scaling.py", "time / linear"),
        ("callback_overhead.py", "added / training epoch"),
        ("measures_overhead.py", "measure / floor"),
        ("early_layers.py", "early / with output"),
        ("device_check.py", "syncs while updating"),
        ("kernel_counts.py", "Operations per update"),
        ("graph_overhead.py", "orbits built whole"),
    ],
)
def test_benchmark_script_runs(script, expected):
    if script == "callback_overhead.py":
        pytest.importorskip("sklearn")
    if script == "graph_overhead.py":
        pytest.importorskip("torch_geometric")
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARKS.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout
