"""The README's quick start runs as printed."""

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs_as_is(tmp_path):
    pytest.importorskip("sklearn")
    text = README.read_text()
    block = re.search(r"<!-- quickstart: .*? -->\n```python\n(.*?)```", text, re.S)
    assert block, "the quick start block is marked in the README"
    script = tmp_path / "quickstart.py"
    script.write_text(block.group(1))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "net.0" in result.stdout
    with (tmp_path / "runs" / "invariance.csv").open() as file:
        rows = list(csv.DictReader(file))
    layers = {row["layer"] for row in rows}
    assert layers == {"net.1", "net.3", "net.5", "output"}
    assert {row["stage"] for row in rows} == {"baseline", "fit"}
    pytest.importorskip("matplotlib")
    after = re.search(r"<!-- after-quickstart: .*? -->\n```python\n(.*?)```", text, re.S)
    assert after, "the block that reads the quick start's CSV is marked in the README"
    (tmp_path / "after.py").write_text(after.group(1))
    result = subprocess.run([sys.executable, "after.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'output'" in result.stdout and (tmp_path / "runs" / "curves.png").stat().st_size > 10_000
