"""Callback overhead: a validation epoch of the digits example with and without InvarianceMonitor at its defaults.

Trains the digits example's small CNN for a few epochs twice (same seed), once with ``InvarianceMonitor(C4)`` at its
defaults and once without, and times every validation epoch (from ``on_validation_start`` to
``on_validation_end``, so the callback's measurement is inside) and every training epoch. Prints the median
validation epoch with over without the callback, and what the callback adds as a fraction of a training epoch.

    python benchmarks/callback_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as pl

from _common import table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from lightning_invariance import InvarianceMonitor
from lightning_invariance.groups import CyclicRotation

from _digits import DigitsClassifier, loaders, small_cnn


class EpochTimer(pl.Callback):
    """Wall time of each validation run (sanity check excluded) and each training epoch."""

    def __init__(self) -> None:
        self.validation: list[float] = []
        self.training: list[float] = []
        self._start = 0.0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validation.append(time.perf_counter() - self._start)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # validation runs inside the training epoch, before this hook: take it out
        self.training.append(time.perf_counter() - self._train_start - (self.validation[-1] if self.validation else 0))


def timed_fit(with_monitor: bool, epochs: int, max_overhead: float | None = None) -> tuple[EpochTimer, list]:
    """Train with an epoch timer (and the monitor); the timer and the monitor's callbacks list."""
    pl.seed_everything(0, verbose=False)
    timer = EpochTimer()
    callbacks: list[pl.Callback] = [timer]
    if with_monitor:
        callbacks.append(InvarianceMonitor(CyclicRotation(4), print_summary=False, max_overhead=max_overhead))
    train_loader, val_loader = loaders()
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, callbacks=callbacks,
        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
    )  # fmt: skip
    trainer.fit(DigitsClassifier(small_cnn()), train_loader, val_loader)
    return timer, callbacks[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    epochs = 2 if args.quick else args.epochs
    timed_fit(False, 1)  # warm-up
    (without, _), (with_monitor, _) = timed_fit(False, epochs), timed_fit(True, epochs)
    val_without, val_with = statistics.median(without.validation), statistics.median(with_monitor.validation)
    train_epoch = statistics.median(without.training)
    print(
        f"Digits example (449 validation digits, batch 256), InvarianceMonitor(CyclicRotation(4)) at its defaults; "
        f"medians over {epochs} epochs"
    )
    print(table(
        ["validation epoch ms", "with monitor ms", "ratio", "training epoch ms", "added / training epoch"],
        [[val_without * 1e3, val_with * 1e3, val_with / val_without, train_epoch * 1e3,
          (val_with - val_without) / train_epoch]],
    ))  # fmt: skip
    rows = []
    for budget in (0.05, 0.1, 0.25):
        _, (monitor,) = timed_fit(True, 2 * epochs, max_overhead=budget)
        spent = monitor._budget  # the callback's own timers: measuring time against training time
        measured = sum(record["stage"] == "fit" for record in monitor.history)
        rows.append([budget, spent.measure_seconds / spent.train_seconds, measured, 2 * epochs])
    print(f"\nWith max_overhead, over {2 * epochs} epochs: the measured share of training time stays within the budget")
    print(table(["max_overhead", "measuring / training", "epochs measured", "epochs"], rows))


if __name__ == "__main__":
    main()
