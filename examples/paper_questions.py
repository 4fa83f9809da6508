"""Kvinge et al.'s three questions about learned invariance, answered on handwritten digits with every measure.

(a) Does training with augmentation make a model invariant?  Plain vs random-90-degree-rotation training.
(b) Does a pre-trained model keep the invariance it learned?  Fine-tuning on digits 0-4 from a network pre-trained
    (with rotation augmentation) on another task, digits 5-9, vs training from scratch; neither fine-tuning run
    sees rotated images.
(c) Is invariance learned on the training distribution kept off it?  The models of (b), measured on held-out
    digits 0-4 (in distribution) and on digits 5-9 (out of distribution).

Every model is measured, for an inner layer and the output, with: the normalised G-EED under C4 rotations
(Kvinge et al. 2022), prediction consistency, the normalised variance (Quiroga et al. 2023), the fitted linear
equivariance and the invariance of the same pooled features (Lenc & Vedaldi 2015) and the Lie derivative along
continuous rotation (Gruver et al. 2023). Tables are printed and saved as Markdown, and one matplotlib figure per
question is saved, next to the TensorBoard logs. Offline (scikit-learn's bundled digits), a minute or two on a CPU.

    python examples/paper_questions.py [--epochs 40] [--logdir runs]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_invariance import InvarianceMonitor
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
    train_set: TensorDataset,
    val_sets: list[TensorDataset],
    augment: bool,
    epochs: int,
    logdir: Path,
    num_classes: int,
    pretrained: torch.nn.Module | None = None,
) -> tuple[DigitsClassifier, list[dict[str, float]]]:
    """Train one model with the monitor; return it and its last scores per validation set.

    The accuracy is reported on the first validation set only: the others hold digits of another task.
    """
    pl.seed_everything(0, workers=True, verbose=False)
    net = small_cnn(num_classes=num_classes)
    if pretrained is not None:  # the feature extractor of the pre-trained network; a fresh classifier
        net.features.load_state_dict(pretrained.features.state_dict())
    model = DigitsClassifier(net, augment=augment)
    monitor = InvarianceMonitor(
        CyclicRotation(4),
        layers=list(LAYERS),
        scores=tuple(score for score, _ in MEASURES),
        lie_generator="rotation",
        max_samples=256,
        every_n_epochs=max(1, epochs // 4),
        print_summary=False,
    )
    generator = torch.Generator().manual_seed(0)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(logdir, name="paper_questions", version=name, default_hp_metric=False),
        callbacks=[monitor],
        deterministic=True,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    val_loaders = [DataLoader(val, batch_size=256) for val in val_sets]
    trainer.fit(model, DataLoader(train_set, batch_size=64, shuffle=True, generator=generator), val_loaders)
    last = monitor.history[-1]["values"]
    results = []
    for index in range(len(val_sets)):
        suffix = f"/dataloader_idx_{index}" if len(val_sets) > 1 else ""
        scores = {
            f"{short}/{score}": last[f"invariance/{layer}/{score}{suffix}"]
            for layer, short in LAYERS.items()
            for score, _ in MEASURES
            if f"invariance/{layer}/{score}{suffix}" in last
        }
        if index == 0:
            images, labels = val_sets[index].tensors
            with torch.no_grad():
                model.eval()
                scores["accuracy"] = float((model(images).argmax(-1) == labels).float().mean())
        results.append(scores)
    print(f"  trained {name}: validation accuracy {results[0]['accuracy']:.3f}")
    return model, results


def table(title: str, rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per model/condition, accuracy and every measure for both layers."""
    columns = ["accuracy"] + [f"{short}/{score}" for short in LAYERS.values() for score, _ in MEASURES]
    columns = [c for c in columns if any(c in row for row in rows.values())]
    titles = {f"{short}/{score}": f"{short} {label}" for short in LAYERS.values() for score, label in MEASURES}
    lines = [f"### {title}", "", "| run | " + " | ".join(titles.get(c, c) for c in columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.3f}" if c in row else "" for c in columns) + " |")
    return "\n".join(lines)


def figure(title: str, rows: dict[str, dict[str, float]], path: Path) -> None:
    """Grouped bars: each measure (lower = more invariant, except consistency) per layer, one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LAYERS), figsize=(6 * len(LAYERS), 3.8), sharey=True)
    width = 0.8 / len(rows)
    for axis, short in zip(axes, LAYERS.values(), strict=True):
        measures = [(score, label) for score, label in MEASURES if any(f"{short}/{score}" in r for r in rows.values())]
        for i, (name, row) in enumerate(rows.items()):
            values = [row.get(f"{short}/{score}", float("nan")) for score, _ in measures]
            axis.bar([j + i * width for j in range(len(measures))], values, width, label=name)
        axis.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(measures))])
        axis.set_xticklabels([label for _, label in measures], rotation=30, ha="right", fontsize=8)
        axis.set_title(f"layer: {short}")
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("score (0 = invariant; consistency: 1)")
    axes[-1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--logdir", type=Path, default=Path("runs"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out_dir = args.logdir / "paper_questions"
    out_dir.mkdir(parents=True, exist_ok=True)
    train_all, val_all = digits_datasets(seed=0)
    print("(a) augmentation vs none, all ten digits")
    _, (plain,) = train("a_plain", train_all, [val_all], False, args.epochs, args.logdir, 10)
    _, (augmented,) = train("a_augmented", train_all, [val_all], True, args.epochs, args.logdir, 10)
    question_a = {"no augmentation": plain, "rotation augmentation": augmented}

    print("(b) pre-trained on digits 5-9 (with rotations) vs scratch, fine-tuned on 0-4 without rotations")
    low_train, low_val, high_val = classes(train_all, LOW), classes(val_all, LOW), classes(val_all, HIGH)
    pretrained, _ = train("b_pretraining_5-9", classes(train_all, HIGH), [high_val], True, args.epochs, args.logdir, 5)
    val_sets = [low_val, high_val]
    _, scratch = train("b_scratch", low_train, val_sets, False, args.epochs, args.logdir, 5)
    _, finetuned = train("b_pretrained", low_train, val_sets, False, args.epochs, args.logdir, 5, pretrained.net)
    question_b = {"from scratch": scratch[0], "pre-trained": finetuned[0]}
    question_c = {
        "scratch, digits 0-4 (in distribution)": scratch[0],
        "scratch, digits 5-9 (out of distribution)": scratch[1],
        "pre-trained, digits 0-4 (in distribution)": finetuned[0],
        "pre-trained, digits 5-9 (out of distribution)": finetuned[1],
    }

    questions = [
        ("a", "(a) Augmentation vs none", question_a),
        ("b", "(b) Pre-trained vs scratch (measured on digits 0-4)", question_b),
        ("c", "(c) In distribution vs out of distribution", question_c),
    ]
    report = [f"# Kvinge et al.'s questions on the digits ({args.epochs} epochs per model)", ""]
    for key, title, rows in questions:
        text = table(title, rows)  # blank accuracy: the digits 5-9 are another task for these models
        print("\n" + text)
        report += [text, ""]
        figure(title, rows, out_dir / f"question_{key}.png")
    (out_dir / "tables.md").write_text("\n".join(report))
    print(f"\nTables: {(out_dir / 'tables.md').resolve()}")
    print(f"Figures: {', '.join(str((out_dir / f'question_{key}.png').resolve()) for key, _, _ in questions)}")
    print(f"TensorBoard: tensorboard --logdir {args.logdir.resolve()}   ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
