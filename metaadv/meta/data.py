"""Class splits for few-shot learning: meta-train, meta-validation and meta-test pools.

- ``mnist5k`` and ``digits``: digits 0-5 are the meta-train classes, 6-9 the meta-test classes
  (all their images, from every split of :func:`metaadv.data.load_splits`). Ten classes are too
  few for a class-disjoint meta-validation set that still leaves >= 3-way tasks on both other
  sides, so meta-validation uses held-out *images* (a seeded, class-balanced 10%) of the
  meta-train classes: it tracks learning, and it never touches a meta-test class.
- ``mnist5k-rot``: the mnist5k digits at four rotations, each its own class, minus the rotations
  that coincide with another class (:mod:`.rotated_digits` lists the 28 that remain): 18
  meta-train classes from digits 0-5, 10 meta-test classes from digits 6-9. Meta-validation
  holds out 10% of the meta-train digits' *images* before they are turned, so no image is on
  both sides in any rotation.
- ``omniglot``: the split of Vinyals et al. 2016 (:func:`.omniglot.vinyals_side`): 1,028
  meta-train, 172 meta-validation and 423 meta-test characters, by alphabet, across
  torchvision's background and evaluation folders. Every character also appears turned by
  90/180/270 degrees as three more classes (Santoro et al. 2016), on its own side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..data import balanced_split, dataset_info, load_splits
from ..errors import UserError
from .omniglot import VINYALS_TEST_ALPHABETS, VINYALS_VAL_ALPHABETS, load_omniglot_named, vinyals_side
from .rotated_digits import ROT_SPLIT, kept_classes, rotated_classes
from .tasks import ClassPool

__all__ = ["CLASS_SPLITS", "MetaData", "load_meta_data"]

# Digits on each side (mnist5k-rot: digits, whose kept rotations are the classes).
CLASS_SPLITS = {"mnist5k": ((0, 1, 2, 3, 4, 5), (6, 7, 8, 9)), "digits": ((0, 1, 2, 3, 4, 5), (6, 7, 8, 9)),
                "mnist5k-rot": ROT_SPLIT}
META_VAL_FRACTION = 0.1
DEFAULT_ARCH = {"mnist5k": "small-cnn", "digits": "digits-net", "omniglot": "small-cnn", "mnist5k-rot": "small-cnn"}


@dataclass
class MetaData:
    """The pools of one data set, and what a model for it needs to know."""

    name: str
    shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pools: dict[str, ClassPool] = field(default_factory=dict)

    @property
    def default_arch(self) -> str:
        return DEFAULT_ARCH[self.name]

    def model_kwargs(self, ways: int) -> dict:
        c, h, _ = self.shape
        return {"in_channels": c, "num_classes": ways, "image_size": h, "mean": list(self.mean), "std": list(self.std)}


def _digit_data(name: str, data_dir, download: bool) -> MetaData:
    s = load_splits(name, data_dir, download)
    x = torch.cat([s.train_x, s.val_x, s.test_x])
    y = torch.cat([s.train_y, s.val_y, s.test_y])
    train_classes, _ = CLASS_SPLITS[name]
    seen = torch.isin(y, torch.tensor(train_classes))
    x_seen, y_seen = x[seen], y[seen]
    fit, val = balanced_split(y_seen, META_VAL_FRACTION)
    pools = {
        "train": ClassPool(x_seen[fit], y_seen[fit], name=f"{name} meta-train"),
        "val": ClassPool(x_seen[val], y_seen[val], name=f"{name} meta-validation"),
        "test": ClassPool(x[~seen], y[~seen], name=f"{name} meta-test"),
    }
    return MetaData(name, s.info.shape, s.info.mean, s.info.std, pools)


def _rotated_digit_data(data_dir, download: bool) -> MetaData:
    s = load_splits("mnist5k", data_dir, download)
    x = torch.cat([s.train_x, s.val_x, s.test_x])
    y = torch.cat([s.train_y, s.val_y, s.test_y])
    train_digits, test_digits = ROT_SPLIT
    seen = torch.isin(y, torch.tensor(train_digits))
    x_seen, y_seen = x[seen], y[seen]
    fit, val = balanced_split(y_seen, META_VAL_FRACTION)  # by image, before turning
    train_classes, test_classes = kept_classes(train_digits), kept_classes(test_digits)
    pools = {
        "train": ClassPool(*rotated_classes(x_seen[fit], y_seen[fit], train_classes), name="mnist5k-rot meta-train"),
        "val": ClassPool(*rotated_classes(x_seen[val], y_seen[val], train_classes), name="mnist5k-rot meta-validation"),
        "test": ClassPool(*rotated_classes(x[~seen], y[~seen], test_classes), name="mnist5k-rot meta-test"),
    }
    return MetaData("mnist5k-rot", s.info.shape, s.info.mean, s.info.std, pools)


def _omniglot_data(data_dir, download: bool, splits: tuple[str, ...]) -> MetaData:
    # Vinyals et al.'s split spans both folders: training characters come from each, validation
    # ones from the background folder only, test ones from the evaluation folder only.
    folders = {True: ("train", "val"), False: ("train", "test")}  # background? -> the sides it feeds
    xs, ys, sides, offset = [], [], [], 0
    for background, feeds in folders.items():
        if not set(feeds) & set(splits):
            continue
        x, y, names = load_omniglot_named(data_dir, background=background, download=download)
        side = [vinyals_side(n) for n in names]
        xs.append(x)
        ys.append(y + offset)
        sides += side
        offset += len(names)
    x, y, sides = torch.cat(xs), torch.cat(ys), np.array(sides)
    pools, mean, std = {}, (0.0,), (1.0,)
    for split in splits:
        keep = torch.from_numpy(sides[y.numpy()] == split)
        if not keep.any():
            raise UserError(f"no Omniglot characters of the Vinyals {split} split under {str(data_dir)!r}; "
                            f"is the folder complete? ({split} alphabets: {_vinyals_alphabets(split)})")
        pools[split] = ClassPool(x[keep], y[keep], rotations=True, name=f"omniglot meta-{split} (Vinyals split)")
        if split == "train":  # normalisation constants of the meta-train images, stored with the model
            mean, std = (round(x[keep].mean().item(), 4),), (round(x[keep].std().item(), 4),)
    return MetaData("omniglot", (1, 28, 28), mean, std, pools)


def _vinyals_alphabets(split: str) -> str:
    if split == "val":
        return ", ".join(VINYALS_VAL_ALPHABETS)
    if split == "test":
        return ", ".join(VINYALS_TEST_ALPHABETS) + ", Gurmukhi characters 42-45"
    return "every other alphabet"


def load_meta_data(name: str, data_dir=None, download: bool = False,
                   splits: tuple[str, ...] = ("train", "val", "test")) -> MetaData:
    """Pools of ``name`` on the CPU. Omniglot reads only the subsets ``splits`` need."""
    if name == "omniglot":
        return _omniglot_data(data_dir, download, splits)
    if name == "mnist5k-rot":
        data = _rotated_digit_data(data_dir, download)
    else:
        dataset_info(name)  # unknown names fail with the registry's message
        data = _digit_data(name, data_dir, download)
    data.pools = {k: v for k, v in data.pools.items() if k in splits}
    return data
