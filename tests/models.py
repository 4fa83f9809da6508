"""Small models with known invariance, shared by the tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SmallCNN(nn.Module):
    """A plain CNN on (N, 1, H, W) images: not invariant to anything in particular."""

    def __init__(self, num_classes: int = 10, width: int = 8, batch_norm: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width) if batch_norm else nn.Identity(),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(8 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


class C4Averaged(nn.Module):
    """Averages a model's logits over the four rot90 copies of the input: exactly C4-invariant."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([self.model(torch.rot90(x, k, dims=(-2, -1))) for k in range(4)]).mean(0)


def synthetic_images(n: int, seed: int, size: int = 8) -> torch.utils.data.TensorDataset:
    """Random images with labels that depend on them (so training does something)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, size, size, generator=generator)
    labels = (images[:, 0, : size // 2].mean((1, 2)) > 0).long() + 2 * (images[:, 0, :, : size // 2].mean((1, 2)) > 0)
    return torch.utils.data.TensorDataset(images, labels)


class DictDataset(torch.utils.data.Dataset):
    """Yields {"pixels": image, "label": y}: a batch the default input getter cannot read without `input_key`."""

    def __init__(self, base: torch.utils.data.Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        image, label = self.base[index]
        return {"pixels": image, "label": label}


def _lightning():
    import lightning.pytorch as pl

    return pl


class ImageClassifier(_lightning().LightningModule):
    """SmallCNN with BatchNorm and dropout on synthetic 8x8 images; optionally several validation sets."""

    def __init__(
        self,
        num_val_loaders: int = 1,
        dict_batches: bool = False,
        n_val: int = 48,
        batch_size: int = 16,
        shuffle_val: bool = False,
    ) -> None:
        super().__init__()
        self.net = SmallCNN(num_classes=4, batch_norm=True)
        self.dropout = nn.Dropout(0.3)
        self.num_val_loaders, self.dict_batches = num_val_loaders, dict_batches
        self.n_val, self.batch_size, self.shuffle_val = n_val, batch_size, shuffle_val

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.dropout(x))

    def _split(self, batch):
        return (batch["pixels"], batch["label"]) if self.dict_batches else batch

    def training_step(self, batch, batch_idx):
        x, y = self._split(batch)
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = self._split(batch)
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def _loader(self, dataset, shuffle: bool) -> torch.utils.data.DataLoader:
        if self.dict_batches:
            dataset = DictDataset(dataset)
        return torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle)

    def train_dataloader(self):
        return self._loader(synthetic_images(64, seed=1), shuffle=True)

    def val_dataloader(self):
        loaders = [
            self._loader(synthetic_images(self.n_val, seed=10 + i), self.shuffle_val)
            for i in range(self.num_val_loaders)
        ]
        return loaders if self.num_val_loaders > 1 else loaders[0]


def quiet_trainer(tmp_path, callbacks, max_epochs: int = 1, logger=False, **kwargs):
    """A one-device CPU ``Trainer`` rooted in ``tmp_path`` that prints nothing and saves no checkpoint unless told."""
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("devices", 1)
    return _lightning().Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )
