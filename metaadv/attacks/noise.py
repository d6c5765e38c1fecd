"""Per-example random draws of an attack, for a batch that may be one worker's slice of a larger one.

Attacks draw their random start (and VAT its random direction) per example from a
``torch.Generator``. A data-parallel worker attacks only its slice of a global batch; drawing
noise of its slice's shape would give it other numbers than one process drawing for the whole
batch. Inside ``batch_slice(offset, size, total)``, :func:`draw` instead draws the whole batch's
noise from the same generator state and keeps the worker's rows ``[offset, offset + size)``:
N workers then attack exactly the examples one process attacks (``metaadv/distributed``), at
the price of generating ``total / size`` times the noise (microseconds next to a forward pass).

Outside the context, and for a tensor whose batch dimension is not the slice's (an attack on a
sub-batch), :func:`draw` is the plain draw.

``batch_rows(rows, total)`` is the same for any rows of a batch, not only a contiguous slice: the
few-shot meta-test attacks only the queries still unbroken, and draws each query's start as its
row of the whole query batch's draw, so every model meets the same start on the same query.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

__all__ = ["batch_rows", "batch_slice", "draw"]


@dataclass(frozen=True)
class _Slice:
    offset: int
    size: int
    total: int
    rows: torch.Tensor | None = None  # arbitrary rows of the batch, instead of [offset, offset + size)


_CURRENT: contextvars.ContextVar[_Slice | None] = contextvars.ContextVar("metaadv_batch_slice", default=None)


@contextlib.contextmanager
def batch_slice(offset: int, size: int, total: int) -> Iterator[None]:
    """Within this block, batches of ``size`` examples are rows ``[offset, offset + size)`` of a
    batch of ``total``: their random draws are that batch's rows."""
    if not (0 <= offset and 0 < size and offset + size <= total):
        raise ValueError(f"a slice [{offset}, {offset + size}) does not lie in a batch of {total}")
    token = _CURRENT.set(_Slice(offset, size, total))
    try:
        yield
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def batch_rows(rows: torch.Tensor, total: int) -> Iterator[None]:
    """Within this block, batches of ``len(rows)`` examples are rows ``rows`` of a batch of ``total``:
    their random draws are that batch's draws at those rows."""
    rows = torch.as_tensor(rows, dtype=torch.long).flatten()
    if len(rows) == 0 or int(rows.min()) < 0 or int(rows.max()) >= total:
        raise ValueError(f"rows must be a non-empty set of indices of a batch of {total}")
    token = _CURRENT.set(_Slice(0, len(rows), total, rows))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def draw(sampler: Callable[..., torch.Tensor], shape: tuple[int, ...], generator: torch.Generator | None,
         device: torch.device, dtype: torch.dtype, *, copies: int = 1) -> torch.Tensor:
    """``sampler(shape, generator=..., device=..., dtype=...)`` (``torch.rand`` or ``torch.randn``),
    or, for a slice of a larger batch, the slice's rows of the larger batch's draw.

    ``copies``: the batch is that many stacked repeats of the slice (``x.repeat(copies, ...)``, as the
    recursive generator's diversity term makes): each repeat gets its rows of the larger batch's repeat.
    """
    s = _CURRENT.get()
    if s is None or (s.size == s.total and s.rows is None) or shape[0] != copies * s.size:
        return sampler(shape, generator=generator, device=device, dtype=dtype)
    full = sampler((copies * s.total, *shape[1:]), generator=generator, device=device, dtype=dtype)
    if s.rows is not None:
        rows = s.rows.to(full.device)
        return torch.cat([full[c * s.total + rows] for c in range(copies)])
    if copies == 1:
        return full[s.offset : s.offset + s.size]
    return torch.cat([full[c * s.total + s.offset : c * s.total + s.offset + s.size] for c in range(copies)])
