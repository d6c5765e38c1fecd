"""What the study engine (:mod:`metaadv.study`) needs of Ray, kept in the Ray Tune adapter.

The engine declares arms, derives schedules and judges models; everything that touches Ray goes
through these few functions: whether a Tune experiment can be restored, a checkpoint fetched from
a URI, functions run as Ray tasks (so a cluster shares the evaluations), a callback that tells the
engine when a trial finished, and ending the Ray session the engine started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import ray
from ray import tune

__all__ = ["TrialFinished", "TRIAL_LISTENERS", "can_restore", "fetch_checkpoint", "run_as_tasks", "shutdown"]

# Listeners by key: Tune pickles callbacks (a resumed Tuner brings back a copy), so the callback
# finds the live listener through this table instead of holding it.
TRIAL_LISTENERS: dict[str, Callable[[str, int, int], None]] = {}


class TrialFinished(tune.Callback):
    """Calls ``TRIAL_LISTENERS[key](label, finished, of)`` when a trial completes or fails."""

    def __init__(self, key: str, label: str):
        self.key, self.label = key, label

    def on_trial_complete(self, iteration, trials, trial, **info):
        listener = TRIAL_LISTENERS.get(self.key)
        if listener is not None:
            finished = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1
            listener(self.label, min(finished, len(trials)), len(trials))

    on_trial_error = on_trial_complete


def can_restore(path: str) -> bool:
    return tune.Tuner.can_restore(path)


def fetch_checkpoint(uri: str, target: Path) -> None:
    """Copy the Tune checkpoint at ``uri`` (``s3://...``, ``gs://...``) into the folder ``target``."""
    tune.Checkpoint(uri).to_directory(str(target))


def run_as_tasks(fn: Callable, calls: dict) -> Iterator[tuple[object, object]]:
    """``fn(*args)`` for each ``key: args`` of ``calls`` as one-CPU Ray tasks; yields ``(key, result)``
    in the order they finish."""
    task = ray.remote(num_cpus=1)(fn)
    pending = {task.remote(*args): key for key, args in calls.items()}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        yield pending.pop(ready[0]), ray.get(ready[0])


def shutdown() -> None:
    ray.shutdown()
