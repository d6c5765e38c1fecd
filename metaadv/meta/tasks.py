"""N-way K-shot tasks drawn from in-memory tensors (Vinyals et al. 2016; Finn et al. 2017).

A :class:`ClassPool` holds the images of one side of a class split (meta-train, meta-validation
or meta-test). A task picks ``ways`` of its classes in a random order (so the labels 0..N-1 are
permuted per task), then ``shots`` support and ``queries`` query images of each class, without
replacement. Everything is tensor indexing: no per-image Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError

__all__ = ["ClassPool", "Task"]


@dataclass(frozen=True)
class Task:
    """One few-shot task. ``xs (N*K, C, H, W)``, ``ys (N*K,)``, ``xq (N*Q, C, H, W)``, ``yq (N*Q,)``.

    ``classes`` (N,) are the pool's original class ids behind labels 0..N-1 and ``rotations``
    (N,) the quarter turns applied (Omniglot); both only for bookkeeping and tests.
    """

    xs: torch.Tensor
    ys: torch.Tensor
    xq: torch.Tensor
    yq: torch.Tensor
    classes: torch.Tensor
    rotations: torch.Tensor

    def to(self, device: torch.device) -> "Task":
        return Task(*(t.to(device) for t in (self.xs, self.ys, self.xq, self.yq)), self.classes, self.rotations)


class ClassPool:
    """The images of a set of classes, indexed per class for fast task sampling.

    Args:
        x: images ``(M, C, H, W)`` in [0, 1]; y: their original class ids ``(M,)``.
        rotations: also offer each class turned by 90, 180 and 270 degrees as three extra
            classes (the usual Omniglot augmentation, Santoro et al. 2016).
        name: the split's name, for error messages.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, rotations: bool = False, name: str = "pool"):
        if len(x) != len(y) or len(y) == 0:
            raise ValueError(f"{name}: need as many labels as images and at least one, got {len(x)} and {len(y)}")
        self.x, self.name, self.rotations = x, name, rotations
        self.labels, inverse = torch.unique(y, return_inverse=True)  # sorted original class ids
        self.counts = torch.bincount(inverse, minlength=len(self.labels))
        # table[c, j] = index of the j-th image of class c; rows padded with -1 past counts[c].
        order = torch.argsort(inverse, stable=True)
        starts = torch.cumsum(self.counts, 0) - self.counts
        column = torch.arange(len(y)) - starts[inverse[order]]
        self.table = torch.full((len(self.labels), int(self.counts.max())), -1, dtype=torch.long)
        self.table[inverse[order], column] = order

    @property
    def base_classes(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return self.base_classes * (4 if self.rotations else 1)

    @property
    def min_images(self) -> int:
        return int(self.counts.min())

    def check(self, ways: int, shots: int, queries: int) -> None:
        """Raise a :class:`UserError` if ``ways``-way ``shots``+``queries`` tasks cannot be drawn."""
        if ways > self.num_classes:
            raise UserError(f"ways={ways} is more than the {self.num_classes} classes of the {self.name} split; "
                            f"use --ways {self.num_classes} or fewer")
        if shots + queries > self.min_images:
            raise UserError(f"shots + queries = {shots + queries} is more than the {self.min_images} images of the "
                            f"smallest class in the {self.name} split; lower --shots or --queries")

    def sample(self, ways: int, shots: int, queries: int, generator: torch.Generator) -> Task:
        """One task on the CPU; labels follow the random order in which its classes were drawn."""
        self.check(ways, shots, queries)
        chosen = torch.randperm(self.num_classes, generator=generator)[:ways]
        base, turns = chosen % self.base_classes, chosen // self.base_classes
        # Per class, a random order of its own images: sort random keys, padding sorted last.
        keys = torch.rand(ways, self.table.shape[1], generator=generator)
        keys[self.table[base] < 0] = 2.0
        pick = keys.argsort(dim=1)[:, : shots + queries]
        images = self.x[self.table[base].gather(1, pick)]  # (ways, shots + queries, C, H, W)
        for k in range(1, 4) if self.rotations else ():
            turned = turns == k
            if turned.any():
                images[turned] = torch.rot90(images[turned], k, dims=(-2, -1))
        labels = torch.arange(ways).view(-1, 1)
        shape = images.shape[2:]
        return Task(
            xs=images[:, :shots].reshape(-1, *shape), ys=labels.expand(ways, shots).reshape(-1),
            xq=images[:, shots:].reshape(-1, *shape), yq=labels.expand(ways, queries).reshape(-1),
            classes=self.labels[base], rotations=turns,
        )

    def sample_many(self, n: int, ways: int, shots: int, queries: int, seed: int) -> list[Task]:
        """``n`` tasks from one seeded generator: the same seed gives the same tasks."""
        g = torch.Generator().manual_seed(seed)
        return [self.sample(ways, shots, queries, g) for _ in range(n)]
