"""Shared by the examples: scikit-learn's bundled handwritten digits as Lightning data, and a small CNN classifier.

``load_digits`` ships with scikit-learn (1797 real 8x8 images), so nothing is downloaded.
"""

from __future__ import annotations

from collections import OrderedDict

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset


def digits_datasets(seed: int = 0, val_fraction: float = 0.25) -> tuple[TensorDataset, TensorDataset]:
    """Train and validation splits of the digits, pixels scaled to [0, 1], shape (N, 1, 8, 8)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - the examples extra installs it
        raise SystemExit('The examples need scikit-learn: pip install -e ".[examples]"') from error
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    num_val = int(len(labels) * val_fraction)
    val, train = order[:num_val], order[num_val:]
    return TensorDataset(images[train], labels[train]), TensorDataset(images[val], labels[val])


def small_cnn(num_classes: int = 10, width: int = 16) -> nn.Module:
    """A plain CNN (about 14k parameters); its named modules are the layers the examples measure."""
    features = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, width, 3, padding=1),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(width, 2 * width, 3, padding=1),
            relu2=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            conv3=nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            relu3=nn.ReLU(),
        )
    )
    return nn.Sequential(
        OrderedDict(
            features=features,
            embedding=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            classifier=nn.Linear(2 * width, num_classes),
        )
    )


def random_rot90(images: Tensor) -> Tensor:
    """Rotate each image by an independent random multiple of 90 degrees (training augmentation)."""
    turns = torch.randint(0, 4, (images.shape[0],), device=images.device)
    out = images.clone()
    for k in range(1, 4):
        chosen = turns == k
        out[chosen] = torch.rot90(images[chosen], k, dims=(-2, -1))
    return out


class DigitsClassifier(pl.LightningModule):
    """Wraps any network for the digits; ``augment`` rotates training images by random multiples of 90 degrees."""

    def __init__(self, net: nn.Module, augment: bool = False, lr: float = 3e-3) -> None:
        super().__init__()
        self.net, self.augment, self.lr = net, augment, lr

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        if self.augment:
            images = random_rot90(images)
        loss = nn.functional.cross_entropy(self(images), labels)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        images, labels = batch
        logits = self(images)
        self.log("val_loss", nn.functional.cross_entropy(logits, labels))
        self.log("val_acc", (logits.argmax(-1) == labels).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def loaders(seed: int = 0, batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    """Train (shuffled, seeded) and validation loaders of the digits."""
    train, val = digits_datasets(seed)
    generator = torch.Generator().manual_seed(seed)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
        DataLoader(val, batch_size=256),
    )
