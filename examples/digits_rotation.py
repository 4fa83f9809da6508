"""Does rotation augmentation make a CNN rotation-invariant? Train on handwritten digits with and without it.

The README's main command. Trains the same small CNN twice on scikit-learn's bundled digits (offline), once plain
and once with random 90-degree rotations, with ``InvarianceMonitor`` measuring the C4 G-EED of an inner layer and
of the output every epoch (and once before training), logged to TensorBoard.

    python examples/digits_rotation.py [--epochs 40] [--logdir runs]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_invariance import InvarianceMonitor
from lightning_invariance.callbacks import curves_figure, depth_profile_figure
from lightning_invariance.groups import CyclicRotation

from _digits import DigitsClassifier, loaders, small_cnn

INNER = "net.features.relu2"
LAYERS = [INNER, "net.embedding", "output"]


def train(augment: bool, epochs: int, logdir: Path, seed: int = 0, quiet: bool = False) -> dict[str, float]:
    """Train one model; return its last measured scores, validation accuracy and the TensorBoard directory."""
    pl.seed_everything(seed, workers=True, verbose=False)
    train_loader, val_loader = loaders(seed)
    model = DigitsClassifier(small_cnn(), augment=augment)
    name = "augmented" if augment else "plain"
    if not quiet:
        print(f"\n=== Training the {name} model ({'random 90-degree rotations' if augment else 'no augmentation'}) ===")
    monitor = InvarianceMonitor(
        CyclicRotation(4),
        layers=LAYERS,
        scores=("geed", "geed_normalized", "consistency"),
        measure_before_training=True,
        max_samples=None,  # the whole validation set (449 digits) every epoch
        print_summary=not quiet,
    )
    logger = TensorBoardLogger(logdir, name="digits_rotation", version=name, default_hp_metric=False)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[monitor],
        deterministic=True,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=not quiet,
        log_every_n_steps=5,
    )
    trainer.fit(model, train_loader, val_loader)
    monitor.to_csv(Path(logger.log_dir) / "invariance.csv")
    last = monitor.history[-1]["values"]
    return {
        "output_geed": last["invariance/output/geed"],
        "output_geed_normalized": last["invariance/output/geed_normalized"],
        "inner_geed_normalized": last[f"invariance/{INNER}/geed_normalized"],
        "embedding_geed_normalized": last["invariance/net.embedding/geed_normalized"],
        "consistency": last["invariance/output/consistency"],
        "val_acc": float(trainer.callback_metrics["val_acc"]),
        "log_dir": logger.log_dir,
        "rows": [row | {"dataloader": name} for row in monitor.history_rows()],  # the run names the panel
    }


def save_figures(rows: list[dict], out_dir: Path) -> list[Path]:
    """Plain and augmented side by side: each layer's normalised G-EED during training, and through the network."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, draw in (("curves", curves_figure), ("depth_profile", depth_profile_figure)):
        figure = draw(rows, "geed_normalized", LAYERS, ["plain", "augmented"])
        paths.append(out_dir / f"{kind}.png")
        figure.savefig(paths[-1], dpi=100)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--logdir", type=Path, default=Path("runs"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    results = {augment: train(augment, args.epochs, args.logdir, args.seed) for augment in (False, True)}
    print(f"\nC4 rotation invariance after {args.epochs} epochs on the digits ({time.perf_counter() - started:.0f} s)")
    header = (
        f"{'run':<10} {'val acc':>8} {'output G-EED':>13} {'normalised: output':>19} {'embedding':>10} "
        f"{'relu2':>8} {'consistency':>12}"
    )
    print(header)
    for augment, r in results.items():
        print(
            f"{'augmented' if augment else 'plain':<10} {r['val_acc']:>8.3f} {r['output_geed']:>13.4f} "
            f"{r['output_geed_normalized']:>19.4f} {r['embedding_geed_normalized']:>10.4f} "
            f"{r['inner_geed_normalized']:>8.4f} {r['consistency']:>12.3f}"
        )
    figures = save_figures(results[False]["rows"] + results[True]["rows"], args.logdir / "digits_rotation" / "figures")
    print("\n(normalised G-EED: 0 = invariant, 1 = rotating moves the representation as far as swapping the digit;")
    print(" consistency: fraction of (digit, rotation) pairs whose predicted label matches the upright prediction)")
    print(f"\nFigures: {', '.join(str(path.resolve()) for path in figures)}")
    print(f"Every value: {(Path(results[False]['log_dir']) / 'invariance.csv').resolve()} (and the augmented run's)")
    print(f"TensorBoard logs: {Path(results[False]['log_dir']).parent.resolve()}")
    print(f"View the curves:  tensorboard --logdir {args.logdir.resolve()}")
    print("(CUSTOM SCALARS: one chart per score, every layer; SCALARS: invariance/<layer>/<score> per run;")
    print(" IMAGES: invariance_figures/curves and depth_profile; HISTOGRAMS: each input's normalised deviation)")


if __name__ == "__main__":
    main()
