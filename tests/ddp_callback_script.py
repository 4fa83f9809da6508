"""Run by test_callback_ddp.py: validate with InvarianceMonitor under DDP (2 CPU processes) and save the results.

Lightning's "ddp" strategy starts rank 1 by re-running this script, so it must be a standalone script.
"""

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).parent))
from lightning_invariance import InvarianceMonitor
from lightning_invariance.groups import CyclicRotation

from models import ImageClassifier


def main(out_dir: str, devices: int) -> None:
    torch.manual_seed(0)
    model = ImageClassifier(n_val=48)
    monitor = InvarianceMonitor(
        CyclicRotation(4), layers=["net.features.2", "output"], scores=("geed", "max", "consistency"), max_samples=None
    )
    # every measure on the first 40 of the 48 validation inputs in all: under DDP the processes' caches are gathered
    # and shared out again in one-process order, so inputs 0..19 fit the linear maps in both runs
    measures = InvarianceMonitor(
        CyclicRotation(4),
        layers=["net.features.2", "output"],
        scores=(
            "geed",
            "geed_normalized",
            "normalized_variance",
            "sample_variance",
            "dead_units",
            "linear_equivariance",
            "linear_invariance",
            "lie_derivative",
        ),
        max_samples=40,
        lie_generator="rotation",
        num_classes=4,
        prefix="measures",
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        callbacks=[monitor, measures],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out_dir,
    )
    (results,) = trainer.validate(model, verbose=False)
    if trainer.is_global_zero:
        Path(out_dir, f"results_{devices}.json").write_text(json.dumps(results))
    if torch.distributed.is_initialized():  # gloo aborts at interpreter exit if its group is still alive
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
