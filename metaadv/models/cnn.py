"""Small classifiers for 28x28 and 8x8 digits. Each takes [0, 1] images and returns logits."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Normalize", "SmallCNN", "DigitsNet"]


class Normalize(nn.Module):
    """Per-channel standardisation inside the model, so eps stays in [0, 1] pixel units."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    """conv32-conv64-fc128 (the seed's network for 28x28 digits): (B, C, 28, 28) -> (B, classes)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 mean: tuple[float, ...] = (0.5,), std: tuple[float, ...] = (0.5,)):
        super().__init__()
        flat = 64 * (image_size // 4) ** 2
        # Max-pooling before ReLU is the same function (ReLU is monotone, so they commute) with
        # ReLU and its backward on a quarter of the values. channels_last weights make the CPU
        # convolutions and pooling run in NHWC: with both, a forward+backward on CPU takes about
        # half the time (benchmarks/bench_core.py), and attacks are mostly forward+backward.
        self.net = nn.Sequential(
            Normalize(mean, std),
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
            nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, num_classes),
        )
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DigitsNet(nn.Module):
    """A small net for sklearn's 8x8 digits: (B, 1, 8, 8) -> (B, classes)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 8,
                 mean: tuple[float, ...] = (0.5,), std: tuple[float, ...] = (0.5,)):
        super().__init__()
        flat = 32 * (image_size // 2) ** 2
        self.net = nn.Sequential(
            Normalize(mean, std),
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(flat, 64), nn.ReLU(), nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
