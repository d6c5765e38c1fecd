"""The :class:`RunKind` record: how a trial config becomes a run object, and how a checkpoint goes
back into it (see :mod:`metaadv.tune.kinds`, which names the kinds).

Its own module so that a kind loaded by name from :data:`metaadv.tune.kinds.KINDS` (such as
:mod:`metaadv.tune.meta_kind`) builds its record without importing the registry that names it.
Ray-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..training.trainer import DivergedError

__all__ = ["RunKind"]


@dataclass(frozen=True)
class RunKind:
    build: Callable[..., object]  # trial config (without "kind") -> run object
    restore: Callable[[object, dict], None]  # (run, checkpoint payload) -> None; the trial config wins
    diverged: tuple[type[BaseException], ...] = (DivergedError,)  # errors that end the trial as "diverged"
    # True when ``build(values, device=..., parallel=...)`` places the run: on the device the
    # trial's resources give it, as one of several data-parallel workers (metaadv/distributed).
    placed: bool = False
