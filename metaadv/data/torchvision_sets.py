"""Real torchvision loaders for users with a data folder (or internet and ``--download``).

Each returns ``(train_x, train_y, test_x, test_y)`` with images ``(N, C, H, W)`` in [0, 1].
torchvision reads its own on-disk formats: MNIST's IDX files under ``<root>/MNIST/raw``,
Fashion-MNIST's under ``<root>/FashionMNIST/raw``, CIFAR-10's pickled batches under
``<root>/cifar-10-batches-py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

__all__ = ["load_torchvision"]

_FOLDERS = {"mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw", "cifar10": "cifar-10-batches-py"}


def _dataset_class(name: str):
    from torchvision import datasets

    return {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[name]


def _to_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    data = ds.data
    if isinstance(data, torch.Tensor):  # MNIST family: (N, H, W) uint8
        x = data.unsqueeze(1).float().div_(255.0)
    else:  # CIFAR-10: (N, H, W, C) uint8 numpy
        x = torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2).float().div_(255.0)
    y = torch.as_tensor(ds.targets, dtype=torch.long)
    return x.contiguous(), y


def load_torchvision(name: str, data_dir: str | Path | None, download: bool):
    if data_dir is None:
        raise UserError(f"dataset {name!r} needs --data-dir DIR (a folder holding {_FOLDERS[name]}/, or add --download)")
    root = Path(data_dir).expanduser()
    if not download and not root.is_dir():
        raise UserError(f"data folder {str(root)!r} does not exist; pass an existing --data-dir or add --download")
    cls = _dataset_class(name)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    # torchvision's "Dataset not found or corrupted" is a RuntimeError; a malformed MNIST IDX file
    # (no checksum is verified) fails its header asserts or dtype/shape checks instead.
    except (RuntimeError, AssertionError, ValueError, TypeError, KeyError) as exc:
        raise UserError(
            f"{name} not found or corrupted under {str(root / _FOLDERS[name])!r}; "
            f"put the files there or add --download ({str(exc) or type(exc).__name__})"
        ) from None
    return (*_to_tensors(train), *_to_tensors(test))
