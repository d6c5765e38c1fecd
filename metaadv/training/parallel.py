"""Data parallelism as the round loops see it: which rows of a batch this process trains on, and
how its numbers join those of the other processes.

The plain loops run :data:`SINGLE_PROCESS`: the whole batch, nothing to join, nothing wrapped.
The Ray Train adapter (:mod:`metaadv.distributed`) passes a ``torch.distributed``
implementation with the same methods, so the loop's code is the same either way and a row
written by N workers means what a single process's row means: each worker takes its contiguous
slice of every global batch (:func:`split`), scales its per-example mean loss by its share
(``Shard.weight``) so that averaging the gradients over workers gives the global batch's mean,
and the row's sums (loss, correct, examples, cost) are all-reduced.

Neither Ray nor ``torch.distributed`` is imported here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Protocol

import torch
from torch import nn

from ..attacks.noise import batch_slice

__all__ = ["SINGLE_PROCESS", "DataParallel", "Shard", "SingleProcess", "split"]


@dataclass(frozen=True)
class Shard:
    """This process's part of a global batch of ``total`` examples."""

    indices: torch.Tensor  # rows to train on (one placeholder row when the slice is empty)
    offset: int  # position of the slice in the global batch
    count: int  # real examples in the slice: what metrics and costs count (0 for a placeholder)
    total: int
    weight: float  # count * world / total: the loss factor that makes averaged gradients the global mean

    def noise(self):
        """Attack noise drawn as the global batch's rows (metaadv/attacks/noise.py)."""
        if self.count == 0 or self.count == self.total:
            return contextlib.nullcontext()
        return batch_slice(self.offset, self.count, self.total)


def split(indices: torch.Tensor, world_size: int, rank: int) -> Shard:
    """Rank ``rank``'s contiguous slice of a global batch; sizes differ by at most one.

    A batch smaller than the world (the last one of an epoch can be) leaves some ranks without
    examples; they train on one placeholder row with weight 0, so that every rank still runs the
    same forward and backward passes and gradient all-reduce.
    """
    total = len(indices)
    base, extra = divmod(total, world_size)
    count = base + (1 if rank < extra else 0)
    offset = rank * base + min(rank, extra)
    if count == 0:
        return Shard(indices[:1], offset=total, count=0, total=total, weight=0.0)
    return Shard(indices[offset : offset + count], offset, count, total, count * world_size / total)


class DataParallel(Protocol):
    world_size: int
    rank: int

    def shard(self, indices: torch.Tensor) -> Shard:
        """This process's slice of a global batch's indices."""

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` as the training loss sees it: its backward averages gradients over processes (DDP)."""

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over processes (a new tensor; the same on every process)."""

    def max(self, value: float) -> float:
        """The largest ``value`` over processes."""

    def average_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Replace each ``.grad`` by its mean over processes (what DDP does, for modules it does not wrap)."""

    def sum_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Replace each ``.grad`` by its sum over processes (a meta-batch's tasks spread over them)."""


class SingleProcess:
    """One process holds every batch whole."""

    world_size = 1
    rank = 0

    def shard(self, indices: torch.Tensor) -> Shard:
        return Shard(indices, 0, len(indices), len(indices), 1.0)

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def max(self, value: float) -> float:
        return value

    def average_gradients(self, params: Iterable[torch.Tensor]) -> None:
        pass

    def sum_gradients(self, params: Iterable[torch.Tensor]) -> None:
        pass


SINGLE_PROCESS = SingleProcess()
