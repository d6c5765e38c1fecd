"""The per-example attack strategy network of LAS-AT (Jia et al., CVPR 2022, arXiv:2203.06616).

It reads each image and gives one categorical distribution per attack dimension (eps, steps,
step size), factorised like :class:`~metaadv.models.policy.PolicyNet`, so the sampling and
REINFORCE helpers of :mod:`metaadv.models.policy` apply per example unchanged.

The authors' strategy net is a ResNet-18; ours is two strided convolutions and a pool (a few
thousand weights), sized for the ~10^3 updates a small data set's run allows.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .cnn import Normalize

__all__ = ["StrategyNet"]


class StrategyNet(nn.Module):
    """``x (B, C, H, W)`` in [0, 1] -> a list of logits ``(B, n_k)``, one per attack dimension.

    The output layers start at zero: the first strategy (and a frozen one, forever) is exactly
    uniform over every grid whatever the image, and the KL to it has a closed form.
    """

    def __init__(self, in_channels: int, choices: Sequence[int], hidden: int = 16,
                 mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,)):
        super().__init__()
        self.choices, self.hidden = tuple(int(n) for n in choices), int(hidden)
        self.body = nn.Sequential(
            Normalize(tuple(mean), tuple(std)),
            nn.Conv2d(in_channels, hidden, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in self.choices)
        for head in self.heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.body(x)
        return [head(h) for head in self.heads]
