"""Run kinds: how a trial config becomes a run object, and how a checkpoint goes back into it.

The Tune trainable drives any object with ``step() -> row``, ``done``, ``round`` and
``state_dict()``; a :class:`RunKind` says how to build one from the trial config and how to put a
checkpoint back. Today there is ``"train"`` (:class:`~metaadv.training.run.TrainingRun`); the
meta-learning runner joins with one line in :data:`KINDS` (a ``"module:attribute"`` string, so it
is imported only in the trials that use it, on whichever node they run).

Ray-free on purpose: the restore rule below is the one thing PBT gets wrong most often, and it is
tested here without starting Ray.
"""

from __future__ import annotations

import functools
import importlib

from ..config import TrainConfig
from ..data import load_splits
from ..errors import UserError
from ..training.controllers import build_controller
from ..training.run import TrainingRun
from .run_kind import RunKind

__all__ = ["KINDS", "RunKind", "get_kind", "build_train_run", "restore_train_run"]


@functools.lru_cache(maxsize=4)
def _splits(dataset: str, data_dir: str, download: bool):
    # One copy per worker process: with reuse_actors, the next trial on this actor skips the load.
    return load_splits(dataset, data_dir or None, download)


def build_train_run(values: dict, **placement) -> TrainingRun:
    """A TrainingRun from a trial config: TrainConfig keys plus an optional ``val_eps``;
    ``placement`` (``device``, ``parallel``) goes to :class:`TrainingRun`.

    The searched ``eps`` is the *training* radius, scheduled by the controller; validation (and
    so the metric every scheduler compares) stays at ``val_eps``, the experiment's threat model.
    """
    values = dict(values)
    val_eps = values.pop("val_eps", None)
    train_cfg = TrainConfig.from_dict(values)
    run_cfg = train_cfg if val_eps is None else train_cfg.replace(eps=float(val_eps))
    splits = _splits(run_cfg.dataset, run_cfg.data_dir, run_cfg.download)
    return TrainingRun(run_cfg, splits=splits, controller=build_controller(train_cfg), **placement)


def restore_train_run(run: TrainingRun, state: dict) -> None:
    """Weights, optimizer, batch stream and rows come from the checkpoint; hyperparameters do not.

    The run was built from the trial's config, which PBT may just have mutated, so the controller
    is *not* restored (it would bring back the donor's hyperparameters). The round counter is the
    number of restored rows, so training continues from the checkpoint's round.
    """
    run.load_state_dict(state, restore_controller=False)


KINDS: dict[str, RunKind | str] = {
    "train": RunKind(build_train_run, restore_train_run, placed=True),
    "meta": "metaadv.tune.meta_kind:KIND",  # imported only in trials that use it
}


def get_kind(name: str, extra: dict[str, RunKind] | None = None) -> RunKind:
    """The kind ``name`` from ``extra`` (kinds shipped inside a trainable) or :data:`KINDS`."""
    entry = (extra or {}).get(name) or KINDS.get(name)
    if entry is None:
        known = sorted({*KINDS, *(extra or {})})
        raise UserError(f"unknown run kind {name!r}; choose one of {', '.join(known)}")
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
    return entry
