"""Classifiers by name. Every model takes [0, 1] images and returns logits."""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from .cnn import DigitsNet, Normalize, SmallCNN
from .preact_resnet import PreActResNet18

__all__ = ["ARCHS", "DigitsNet", "Normalize", "PreActResNet18", "SmallCNN", "build_model"]

ARCHS = {"small-cnn": SmallCNN, "digits-net": DigitsNet, "preact-resnet18": PreActResNet18}


def build_model(arch: str, **kwargs) -> nn.Module:
    """``build_model("small-cnn", in_channels=1, num_classes=10, image_size=28, mean=..., std=...)``."""
    try:
        cls = ARCHS[arch]
    except KeyError:
        raise UserError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}") from None
    return cls(**kwargs)


def model_kwargs(info) -> dict:
    """Constructor arguments for a data set's ``DatasetInfo`` (stored in checkpoints)."""
    c, h, _ = info.shape
    return {"in_channels": c, "num_classes": info.num_classes, "image_size": h, "mean": list(info.mean), "std": list(info.std)}
