"""An e2cnn C4-equivariant network next to a plain CNN: the callback shows which one is equivariant, layer by layer.

Both train on scikit-learn's digits (offline). Two ``InvarianceMonitor`` callbacks watch each model: one measures the
C4 invariance of the output, the other the equivariance of the inner feature maps under the action they should
have: the regular representation (rotate the map, cycle each field's 4 group channels) for e2cnn's regular fields,
and the plain rotation of the map for the CNN. The equivariant model stays at ~0 on every curve from the first
epoch to the last; the plain CNN does not.

    python examples/equivariant_e2cnn.py [--epochs 15] [--logdir runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from lightning_invariance import InvarianceMonitor
from lightning_invariance.groups import CyclicRotation, RegularAction, SpatialAction

from _digits import DigitsClassifier, loaders, small_cnn

C4 = CyclicRotation(4)


class C4SteerableCNN(nn.Module):
    """Three e2cnn convolution blocks of regular C4 fields, group pooling, global average pooling, a linear head."""

    def __init__(self, fields: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        try:
            from e2cnn import gspaces
            from e2cnn import nn as enn
        except ImportError as error:  # pragma: no cover - the test extra installs it
            raise SystemExit("This example needs e2cnn: pip install e2cnn") from error
        gspace = gspaces.Rot2dOnR2(4)
        self.in_type = enn.FieldType(gspace, [gspace.trivial_repr])
        regular = enn.FieldType(gspace, fields * [gspace.regular_repr])
        self.block1 = enn.SequentialModule(enn.R2Conv(self.in_type, regular, 3, padding=1), enn.ReLU(regular))
        self.block2 = enn.SequentialModule(
            enn.R2Conv(regular, regular, 3, padding=1), enn.ReLU(regular), enn.PointwiseMaxPool(regular, 2)
        )
        self.block3 = enn.SequentialModule(enn.R2Conv(regular, regular, 3, padding=1), enn.ReLU(regular))
        self.group_pool = enn.GroupPooling(regular)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(fields, num_classes))
        self._geometric = enn.GeometricTensor

    def forward(self, x: Tensor) -> Tensor:
        features = self.block3(self.block2(self.block1(self._geometric(x, self.in_type))))
        return self.head(self.group_pool(features).tensor)


def monitors(inner_layers: list[str], action: RegularAction | SpatialAction) -> list[InvarianceMonitor]:
    """Output invariance, and the inner layers' equivariance under ``action``."""
    return [
        InvarianceMonitor(C4, scores=("geed", "geed_normalized", "consistency"), max_samples=256, print_summary=False),
        InvarianceMonitor(
            C4, layers=inner_layers, action=action, max_samples=256, prefix="equivariance", print_summary=False
        ),
    ]


def train(name: str, net: nn.Module, inner: list[str], action, epochs: int, logdir: Path, quiet: bool = False):
    """Train one model with its two monitors; return the last logged scores and the monitors."""
    pl.seed_everything(0, workers=True, verbose=False)
    train_loader, val_loader = loaders(seed=0)
    callbacks = monitors(inner, action)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(logdir, name="equivariant_e2cnn", version=name, default_hp_metric=False),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=not quiet,
        log_every_n_steps=5,
    )
    trainer.fit(DigitsClassifier(net), train_loader, val_loader)
    values = {**callbacks[0].history[-1]["values"], **callbacks[1].history[-1]["values"]}
    values["val_acc"] = float(trainer.callback_metrics["val_acc"])
    first = {**callbacks[0].history[0]["values"], **callbacks[1].history[0]["values"]}
    return values, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--logdir", type=Path, default=Path("runs"))
    args = parser.parse_args()
    torch.manual_seed(0)
    steerable = C4SteerableCNN()
    plain = small_cnn()
    runs = {
        "e2cnn": train(
            "e2cnn", steerable, ["net.block1", "net.block2", "net.block3"], RegularAction(C4), args.epochs, args.logdir
        ),
        "plain": train(
            "plain",
            plain,
            ["net.features.relu1", "net.features.pool", "net.features.relu3"],
            SpatialAction(C4),
            args.epochs,
            args.logdir,
        ),
    }
    params = {
        "e2cnn": sum(p.numel() for p in steerable.parameters()),
        "plain": sum(p.numel() for p in plain.parameters()),
    }
    print(f"\nC4 equivariance after {args.epochs} epochs (normalised G-EED: 0 = exact; epoch 0 -> last epoch)")
    for name, (last, first) in runs.items():
        action = "regular action" if name == "e2cnn" else "rotated feature map"
        print(f"\n{name} ({params[name]} parameters, val acc {last['val_acc']:.3f}); inner layers under the {action}:")
        for key in last:
            if key.endswith("geed_normalized") or key.endswith("consistency"):
                print(f"  {key:<48} {first[key]:>10.2e} -> {last[key]:.2e}")
    print(f"\nView the curves: tensorboard --logdir {args.logdir.resolve()}")


if __name__ == "__main__":
    main()
