"""The Ray Tune adapter: trainable, schedulers and searchers, named experiments, resume.

The only place in metaadv that imports Ray. The declarative parts (:mod:`.space`,
:mod:`.experiment`, :mod:`.kinds`) import without it; the Ray-facing names below load Ray on
first use, so ``metaadv --help`` and ``metaadv tune --list`` stay fast.
"""

from __future__ import annotations

import importlib

from .experiment import Experiment, Size
from .kinds import KINDS, RunKind, get_kind
from .space import Grid, LogRange, Range

__all__ = ["Experiment", "Size", "Grid", "Range", "LogRange", "KINDS", "RunKind", "get_kind",
           "make_trainable", "RunOptions", "run_experiment", "build_scheduler", "build_searcher", "param_space"]

_LAZY = {"make_trainable": "trainable", "RunOptions": "runner", "run_experiment": "runner",
         "build_scheduler": "schedulers", "build_searcher": "schedulers", "param_space": "schedulers"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
