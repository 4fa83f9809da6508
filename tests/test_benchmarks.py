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
        ("full_size.py", "loop / probe, layers"),
        ("accelerator_memory.py", "probe / floor"),
        ("page_faults.py", "page faults / probe pass"),
        ("device_profile.py", "us per operation"),
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


def test_gpu_session_script_keeps_to_its_budget(tmp_path):
    """Every step writes its file, a spent budget skips the rest, and a missing nvidia-smi stops nothing."""
    environment = {"PATH": "/usr/bin:/bin", "OUT": str(tmp_path), "BUDGET": "0", "PYTHON": sys.executable}
    result = subprocess.run(
        ["sh", str(BENCHMARKS / "gpu_session.sh")], capture_output=True, text=True, timeout=120,
        cwd=BENCHMARKS.parent, env=environment,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    steps = sorted(path.stem for path in tmp_path.iterdir())
    assert len(steps) == 8, steps  # the device tool brings back at most 8 files
    assert all("skipped" in (tmp_path / f"{step}.txt").read_text() for step in steps)
    assert "all steps done" in result.stdout


def test_peak_memory_reports_a_child_that_died_instead_of_waiting_forever(tmp_path):
    """A measuring process killed by the out-of-memory killer (here: one that exits) is an error, not a hang."""
    script = tmp_path / "dies.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(BENCHMARKS)!r})\n"
        "from _common import peak_memory_mib\n"
        "def dies():\n"
        "    os._exit(3)\n"
        "if __name__ == '__main__':\n"
        "    peak_memory_mib(dies)\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "ended with exit code 3 before reporting" in result.stderr
