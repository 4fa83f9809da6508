"""InvarianceMonitor and its groups configured from LightningCLI: a YAML config and command-line flags."""

import pytest

pytest.importorskip("jsonargparse")

from lightning.pytorch.cli import LightningCLI

from lightning_invariance import InvarianceMonitor
from lightning_invariance.groups import CyclicRotation, Dihedral, SpatialAction

from models import ImageClassifier

CONFIG = """
trainer:
  max_epochs: 1
  accelerator: cpu
  devices: 1
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args:
      save_dir: {save_dir}
      name: cli
      version: 0
  callbacks:
    - class_path: lightning_invariance.InvarianceMonitor
      init_args:
        group:
          class_path: lightning_invariance.groups.Dihedral
          init_args:
            n: 4
        layers: [net.features.2, output]
        scores: [geed, geed_normalized, normalized_variance, linear_equivariance, lie_derivative]
        lie_generator: rotation
        num_classes: 4
        max_samples: 16
        prefix: d4
    - class_path: lightning_invariance.InvarianceMonitor
      init_args:
        group:
          class_path: lightning_invariance.groups.CyclicRotation
        layers: [net.features.2]
        action:
          class_path: lightning_invariance.groups.SpatialAction
          init_args:
            group:
              class_path: lightning_invariance.groups.CyclicRotation
        max_samples: 16
        prefix: equivariance
"""


def test_yaml_config_with_nested_group_and_csv_logger(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(save_dir=tmp_path))
    cli = LightningCLI(ImageClassifier, run=False, args=["--config", str(config)])
    monitor, equivariance = [c for c in cli.trainer.callbacks if isinstance(c, InvarianceMonitor)]
    assert isinstance(monitor.group, Dihedral) and len(monitor.group) == 8
    assert isinstance(equivariance.action, SpatialAction) and isinstance(equivariance.action.group, CyclicRotation)
    assert monitor.layers == ["net.features.2", "output"] and monitor.max_samples == 16
    cli.trainer.fit(cli.model)
    header = (tmp_path / "cli" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in (
        "d4/output/geed",
        "d4/output/geed_normalized",
        "d4/net.features.2/geed",
        "d4/output/normalized_variance",
        "d4/output/linear_equivariance",
        "d4/net.features.2/lie_derivative",
        "d4/output/geed/class_3",
        "equivariance/net.features.2/geed",
    ):
        assert name in header


def test_command_line_callback_flags(tmp_path):
    cli = LightningCLI(
        ImageClassifier,
        run=False,
        args=[
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=1",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks+=lightning_invariance.InvarianceMonitor",
            "--trainer.callbacks.group=lightning_invariance.groups.CyclicRotation",
            "--trainer.callbacks.group.n=4",
            "--trainer.callbacks.scores=[geed,consistency]",
            "--trainer.callbacks.max_samples=16",
        ],
    )
    (monitor,) = [c for c in cli.trainer.callbacks if isinstance(c, InvarianceMonitor)]
    assert isinstance(monitor.group, CyclicRotation) and monitor.scores == ("geed", "consistency")
    cli.trainer.fit(cli.model)
    assert {"invariance/output/geed", "invariance/output/consistency"} <= set(cli.trainer.callback_metrics)
