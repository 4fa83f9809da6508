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
