"""Kvinge et al.'s three questions about learned invariance, answered on handwritten digits with every measure.

(a) Does training with augmentation make a model invariant?  Plain vs random-90-degree-rotation training.
(b) Does a pre-trained model keep the invariance it learned?  Fine-tuning on digits 0-4 from a network pre-trained
    (with rotation augmentation) on another task, digits 5-9, vs training from scratch; neither fine-tuning run
    sees rotated images.
(c) Does invariance learned on the training distribution transfer off it?  Models trained on digits 0-4 with
    rotation augmentation (and, for contrast, without), measured on held-out digits 0-4 (in distribution) and on
    digits 5-9 (out of distribution, never seen), both normalised by the in-distribution scale.

Every model is trained with several seeds (``--seeds``, 3 by default: initialisation, data order and augmentation
change with the seed) and measured, for an inner layer and the output, with: the normalised G-EED under C4 rotations
(Kvinge et al. 2022), prediction consistency, the normalised variance (Quiroga et al. 2023), the fitted linear
equivariance and the invariance of the same pooled features (Lenc & Vedaldi 2015) and the Lie derivative along
continuous rotation (Gruver et al. 2023). Tables give mean ± standard deviation over the seeds, figures error bars;
both are saved next to the TensorBoard logs, with every measured value in ``history.csv`` (one row per run, seed,
layer and score). Offline (scikit-learn's bundled digits); 18 trainings of 30 epochs at the defaults, about 3
minutes on 2 CPU cores.

    python examples/paper_questions.py [--epochs 30] [--seeds 3] [--logdir runs]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_invariance import InvarianceMonitor
from lightning_invariance.callbacks import HISTORY_COLUMNS as COLUMNS
from lightning_invariance.groups import CyclicRotation

from _digits import DigitsClassifier, digits_datasets, small_cnn

INNER = "net.features.relu2"
LAYERS = {INNER: "relu2", "output": "output"}
#: (score name, column title) of every measure, in table order.
MEASURES = [
    ("geed_normalized", "G-EED (norm.)"),
    ("consistency", "consistency"),
    ("normalized_variance", "norm. variance"),
    ("linear_equivariance", "fitted linear"),
    ("linear_invariance", "pooled invariance"),
    ("lie_derivative", "Lie derivative"),
]
LOW, HIGH = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)


def classes(dataset: TensorDataset, keep: tuple[int, ...]) -> TensorDataset:
    """The samples of the digits in ``keep``, relabelled 0..len(keep)-1."""
    images, labels = dataset.tensors
    chosen = torch.isin(labels, torch.tensor(keep))
    return TensorDataset(images[chosen], labels[chosen] - min(keep))


def train(
    name: str,
    seed: int,
    train_set: TensorDataset,
    val_sets: dict[str, TensorDataset],
    augment: bool,
    epochs: int,
    logdir: Path,
    num_classes: int,
    pretrained: torch.nn.Module | None = None,
) -> tuple[DigitsClassifier, dict[str, dict[str, float]], list[dict]]:
    """Train one model with the monitor; return it, its last scores per validation set, and its tidy history.

    The accuracy is reported on the first validation set only: the others hold digits of another task. With several
    validation sets, every set's normalised G-EED is divided by the first set's scale (``normalize_by``), so that
    in- and out-of-distribution values share one yardstick.
    """
    pl.seed_everything(seed, workers=True, verbose=False)
    net = small_cnn(num_classes=num_classes)
    if pretrained is not None:  # the feature extractor of the pre-trained network; a fresh classifier
        net.features.load_state_dict(pretrained.features.state_dict())
    model = DigitsClassifier(net, augment=augment)
    names = list(val_sets)
    monitor = InvarianceMonitor(
        CyclicRotation(4),
        layers=list(LAYERS),
        scores=tuple(score for score, _ in MEASURES),
        lie_generator="rotation",
        max_samples=256,
        every_n_epochs=max(1, epochs // 3),
        dataloaders={name: index for index, name in enumerate(names)},
        normalize_by=names[0],
        print_summary=False,
    )
    generator = torch.Generator().manual_seed(seed)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(logdir, name="paper_questions", version=f"{name}_seed{seed}", default_hp_metric=False),
        callbacks=[monitor],
        deterministic=True,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    val_loaders = [DataLoader(val, batch_size=256) for val in val_sets.values()]
    trainer.fit(model, DataLoader(train_set, batch_size=64, shuffle=True, generator=generator), val_loaders)
    last = monitor.history[-1]["values"]
    results = {}
    for index, val_name in enumerate(names):
        suffix = f"/{val_name}"  # named dataloaders end the logged names
        scores = {
            f"{short}/{score}": last[f"invariance/{layer}/{score}{suffix}"]
            for layer, short in LAYERS.items()
            for score, _ in MEASURES
            if f"invariance/{layer}/{score}{suffix}" in last
        }
        if index == 0:
            images, labels = val_sets[val_name].tensors
            with torch.no_grad():
                model.eval()
                scores["accuracy"] = float((model(images).argmax(-1) == labels).float().mean())
        results[val_name] = scores
    rows = [row | {"run": name, "seed": seed} for row in monitor.history_rows()]
    return model, results, rows


def mean_std(runs: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation over seeds of every score (std 0 with one seed)."""
    keys = [key for key in runs[0] if all(key in run for run in runs)]
    return {
        key: (
            statistics.fmean(run[key] for run in runs),
            statistics.stdev(run[key] for run in runs) if len(runs) > 1 else 0.0,
        )
        for key in keys
    }


def table(title: str, rows: dict[str, dict[str, tuple[float, float]]], seeds: int) -> str:
    """A Markdown table: one row per model/condition, accuracy and every measure for both layers, mean ± std."""
    columns = ["accuracy"] + [f"{short}/{score}" for short in LAYERS.values() for score, _ in MEASURES]
    columns = [c for c in columns if any(c in row for row in rows.values())]
    titles = {f"{short}/{score}": f"{short} {label}" for short in LAYERS.values() for score, label in MEASURES}
    lines = [f"### {title} (mean ± std over {seeds} seeds)", ""]
    lines += ["| run | " + " | ".join(titles.get(c, c) for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        cells = [f"{row[c][0]:.3f} ± {row[c][1]:.3f}" if c in row else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(title: str, rows: dict[str, dict[str, tuple[float, float]]], path: Path) -> None:
    """Grouped bars with error bars (std over seeds): each measure per layer, one bar per run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5 * len(LAYERS), 4.2), layout="constrained")
    axes = fig.subplots(1, len(LAYERS), sharey=True)
    width = 0.8 / len(rows)
    for axis, short in zip(axes, LAYERS.values(), strict=True):
        measures = [(score, label) for score, label in MEASURES if any(f"{short}/{score}" in r for r in rows.values())]
        for i, (name, row) in enumerate(rows.items()):
            means = [row.get(f"{short}/{score}", (float("nan"), 0.0))[0] for score, _ in measures]
            stds = [row.get(f"{short}/{score}", (0.0, 0.0))[1] for score, _ in measures]
            positions = [j + i * width for j in range(len(measures))]
            axis.bar(positions, means, width, yerr=stds, capsize=3, label=name)
        axis.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(measures))])
        axis.set_xticklabels([label for _, label in measures], rotation=30, ha="right", fontsize=9)
        axis.set_title(f"layer: {short}")
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("score (0 = invariant; consistency: 1)")
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"{title} (bars: mean, whiskers: std over seeds)")
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--logdir", type=Path, default=Path("runs"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out_dir = args.logdir / "paper_questions"
    out_dir.mkdir(parents=True, exist_ok=True)
    train_all, val_all = digits_datasets(seed=0)
    low_train, low_val, high_val = classes(train_all, LOW), classes(val_all, LOW), classes(val_all, HIGH)
    runs: dict[str, list[dict[str, float]]] = {}
    history: list[dict] = []

    def run(label: str, name: str, seed: int, *args_, **kwargs) -> dict[str, dict[str, float]]:
        model, results, rows = train(name, seed, *args_, epochs=args.epochs, logdir=args.logdir, **kwargs)
        history.extend(rows)
        for val_name, scores in results.items():
            runs.setdefault(f"{label} | {val_name}", []).append(scores)
        print(f"  {name} seed {seed}: accuracy {next(iter(results.values()))['accuracy']:.3f}")
        return model

    for seed in range(args.seeds):
        print(f"seed {seed}")
        run("(a) no augmentation", "a_plain", seed, train_all, {"all": val_all}, False, num_classes=10)
        run("(a) rotation augmentation", "a_augmented", seed, train_all, {"all": val_all}, True, num_classes=10)
        high = classes(train_all, HIGH)
        pretrained = run("pre-training", "b_pretraining_5-9", seed, high, {"5-9": high_val}, True, num_classes=5)
        # measured on held-out digits 0-4 (the task) and 5-9 (never seen): (b) reads the first, (c) both
        transfer = {"id": low_val, "ood": high_val}
        run("(b) from scratch", "b_scratch", seed, low_train, transfer, False, num_classes=5)
        kwargs = {"num_classes": 5, "pretrained": pretrained.net}
        run("(b) pre-trained", "b_pretrained", seed, low_train, transfer, False, **kwargs)
        run("(c) augmented", "c_augmented", seed, low_train, transfer, True, num_classes=5)

    summary = {label: mean_std(scores) for label, scores in runs.items()}

    def rows(names: dict[str, str]) -> dict[str, dict[str, tuple[float, float]]]:
        return {name: summary[label] for name, label in names.items()}

    in_dist, out_dist = "digits 0-4 (in distribution)", "digits 5-9 (out of distribution)"
    questions = [
        (
            "a",
            "(a) Augmentation vs none",
            rows(
                {
                    "no augmentation": "(a) no augmentation | all",
                    "rotation augmentation": "(a) rotation augmentation | all",
                }
            ),
        ),
        (
            "b",
            "(b) Pre-trained vs scratch (measured on digits 0-4)",
            rows(
                {
                    "from scratch": "(b) from scratch | id",
                    "pre-trained": "(b) pre-trained | id",
                }
            ),
        ),
        (
            "c",
            "(c) Learned invariance in and out of distribution",
            rows(
                {
                    f"augmented, {in_dist}": "(c) augmented | id",
                    f"augmented, {out_dist}": "(c) augmented | ood",
                    f"no augmentation, {in_dist}": "(b) from scratch | id",
                    f"no augmentation, {out_dist}": "(b) from scratch | ood",
                }
            ),
        ),
    ]
    report = [f"# Kvinge et al.'s questions on the digits ({args.epochs} epochs per model, {args.seeds} seeds)", ""]
    for key, title, rows in questions:
        text = table(title, rows, args.seeds)  # blank accuracy: the digits 5-9 are another task for these models
        print("\n" + text)
        report += [text, ""]
        figure(title, rows, out_dir / f"question_{key}.png")
    (out_dir / "tables.md").write_text("\n".join(report))
    with (out_dir / "history.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["run", "seed", *COLUMNS])
        writer.writeheader()
        writer.writerows(history)
    print(f"\nTables: {(out_dir / 'tables.md').resolve()}; every value: {(out_dir / 'history.csv').resolve()}")
    print(f"Figures: {', '.join(str((out_dir / f'question_{key}.png').resolve()) for key, _, _ in questions)}")
    print(f"TensorBoard: tensorboard --logdir {args.logdir.resolve()}   ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
