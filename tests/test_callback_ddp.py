"""InvarianceMonitor under Trainer(strategy="ddp", accelerator="cpu", devices=2) logs the single-process values."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

SCRIPT = Path(__file__).with_name("ddp_callback_script.py")


def _run(tmp_path, devices: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE"))}
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), str(devices)], check=True, env=env, timeout=300)
    return json.loads((tmp_path / f"results_{devices}.json").read_text())


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_ddp_two_processes_log_the_single_process_values(tmp_path):
    single = _run(tmp_path, 1)
    ddp = _run(tmp_path, 2)
    names = [name for name in single if name.startswith("invariance/")]
    assert len(names) == 7  # consistency comes with its chance level and kappa
    for name in names:
        assert ddp[name] == pytest.approx(single[name], rel=1e-6, abs=1e-7, nan_ok=True), name
    measures = [name for name in single if name.startswith("measures/")]
    assert len(measures) == 2 * (8 + 8)  # 8 scores and 4 per-class values of 2 scores, for two layers
    for name in measures:  # normalised and fitted-map scores included: the same 40 inputs, in the same order
        assert ddp[name] == pytest.approx(single[name], rel=1e-5, abs=1e-6), name
